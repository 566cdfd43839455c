"""Check discovered cases before any training: the data-path checklist of the datasets spec.

Per case: every file readable; 3-D; the four sequences share the label's shape and affine
(tolerance :data:`AFFINE_TOL`); no NaN/Inf voxel; no all-zero sequence (the brain crop needs
nonzero voxels); label values within the dataset's set (an unknown value is an error, never
remapped). An empty label map is valid. A bad case is reported and left
out; the others go on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from joblib import Parallel, delayed

from mmbench.datasets.base import Case, DataRootError, DatasetSpec, DataValidationError, Problem
from mmbench.datasets.discovery import discover, expected_layout, resolve_root
from mmbench.datasets.registry import get_dataset

AFFINE_TOL = 1e-3
"""Largest absolute difference allowed between the affines of one case's files."""


@dataclass
class CaseReport:
    """What inspecting one case found: its problems and, when readable, its label statistics.

    Attributes:
        label_counts: label value → voxel count (from the label map; empty if unreadable).
        shape: spatial shape of the label map, or ``None``.
        spacing: voxel size in mm from the label header, or ``None``.
    """

    case: Case
    problems: list[Problem] = field(default_factory=list)
    label_counts: dict[int, int] = field(default_factory=dict)
    shape: tuple[int, ...] | None = None
    spacing: tuple[float, ...] | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


def _load(path: Path) -> nib.spatialimages.SpatialImage:
    img = nib.load(str(path))
    if not hasattr(img, "affine") or img.affine is None:
        raise ValueError("no affine in header")
    return img


def inspect_case(spec: DatasetSpec, case: Case) -> CaseReport:
    """Run every check on one case; each file is read once."""
    report = CaseReport(case)

    def fail(path: Path, what: str) -> None:
        report.problems.append(Problem(case.id, str(path), what))

    try:
        label = _load(case.label)
    except FileNotFoundError:
        fail(case.label, "missing file")
        label = None
    except Exception as exc:  # nibabel raises many types for corrupt files
        fail(case.label, f"unreadable: {type(exc).__name__}: {exc}")
        label = None
    if label is not None and len(label.shape) != 3:
        fail(case.label, f"not 3-D: shape {tuple(label.shape)}")
        label = None
    if label is not None:
        report.shape = tuple(int(s) for s in label.shape)
        report.spacing = tuple(float(z) for z in label.header.get_zooms()[:3])

    for modality, path in case.images.items():
        try:
            img = _load(path)
        except FileNotFoundError:
            fail(path, "missing file")
            continue
        except Exception as exc:
            fail(path, f"unreadable: {type(exc).__name__}: {exc}")
            continue
        if len(img.shape) != 3:
            fail(path, f"{modality} not 3-D: shape {tuple(img.shape)}")
            continue
        if label is not None:
            if tuple(img.shape) != tuple(label.shape):
                fail(
                    path,
                    f"{modality} shape {tuple(img.shape)} differs from label shape "
                    f"{tuple(label.shape)}",
                )
                continue
            diff = float(np.max(np.abs(img.affine - label.affine)))
            if diff > AFFINE_TOL:
                fail(path, f"{modality} affine differs from label affine (max |diff| {diff:.4g})")
        try:
            data = np.asanyarray(img.dataobj)
        except Exception as exc:
            fail(path, f"unreadable data: {type(exc).__name__}: {exc}")
            continue
        if np.issubdtype(data.dtype, np.floating):
            n_nan = int(np.isnan(data).sum())
            n_inf = int(np.isinf(data).sum())
            if n_nan:
                fail(path, f"{modality} has {n_nan} NaN voxels")
            if n_inf:
                fail(path, f"{modality} has {n_inf} Inf voxels")
        if not np.any(data):
            # Brain cropping and normalisation rely on nonzero brain voxels.
            fail(path, f"{modality} is all zero")

    if label is not None:
        try:
            data = np.asanyarray(label.dataobj)
        except Exception as exc:
            fail(case.label, f"unreadable data: {type(exc).__name__}: {exc}")
            return report
        _check_label(spec, case, data, report)
    return report


def _check_label(spec: DatasetSpec, case: Case, data: np.ndarray, report: CaseReport) -> None:
    if np.issubdtype(data.dtype, np.floating):
        if not np.isfinite(data).all():
            report.problems.append(Problem(case.id, str(case.label), "label has NaN/Inf voxels"))
            return
        if not np.array_equal(data, np.round(data)):
            report.problems.append(
                Problem(case.id, str(case.label), "label has non-integer values")
            )
            return
    values, counts = np.unique(data, return_counts=True)
    report.label_counts = {int(v): int(c) for v, c in zip(values, counts)}
    unknown = sorted(set(report.label_counts) - set(spec.label_values))
    if unknown:
        report.problems.append(
            Problem(
                case.id,
                str(case.label),
                f"label values {unknown} not in {spec.name} set {list(spec.label_values)}",
            )
        )


def inspect_cases(spec: DatasetSpec, cases: Sequence[Case], n_jobs: int = 1) -> list[CaseReport]:
    """:func:`inspect_case` over many cases, optionally in parallel (joblib)."""
    if n_jobs == 1 or len(cases) < 2:
        return [inspect_case(spec, c) for c in cases]
    return list(Parallel(n_jobs=n_jobs)(delayed(inspect_case)(spec, c) for c in cases))


def raise_for_problems(problems: Sequence[Problem]) -> None:
    lines = "\n".join(f"  - {p}" for p in problems)
    raise DataValidationError(f"{len(problems)} data problem(s):\n{lines}")


def validate(
    spec: DatasetSpec | str, cases: Sequence[Case], strict: bool = False, n_jobs: int = 1
) -> tuple[list[Case], list[Problem]]:
    """Check ``cases``; return ``(valid_cases, problems)``.

    Raises:
        DataValidationError: with ``strict=True`` and at least one problem (all are listed).
    """
    spec = get_dataset(spec)
    reports = inspect_cases(spec, cases, n_jobs=n_jobs)
    valid = [r.case for r in reports if r.ok]
    problems = [p for r in reports for p in r.problems]
    if strict and problems:
        raise_for_problems(problems)
    return valid, problems


@dataclass
class DatasetIndex:
    """A discovered and validated dataset.

    Attributes:
        spec: the dataset's description.
        root: the folder it was read from.
        cases: valid cases, sorted by id.
        problems: everything discovery and validation rejected.
    """

    spec: DatasetSpec
    root: Path
    cases: list[Case]
    problems: list[Problem]

    @property
    def case_ids(self) -> list[str]:
        return [c.id for c in self.cases]

    def __getitem__(self, case_id: str) -> Case:
        for case in self.cases:
            if case.id == case_id:
                return case
        raise KeyError(case_id)

    def __len__(self) -> int:
        return len(self.cases)


def no_valid_case_error(
    spec: DatasetSpec, root: Path, problems: Sequence[Problem]
) -> DataRootError:
    """The one-paragraph error for a folder without any usable case."""
    detail = ""
    if problems:
        shown = "; ".join(str(p) for p in problems[:3])
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        detail = f" {len(problems)} problem(s) were found: {shown}{more}."
    return DataRootError(
        f"No valid {spec.name} case found in {root}.{detail} Expected layout: "
        f"{expected_layout(spec)}."
    )


def load_dataset(
    name: str | DatasetSpec,
    data_root: str | Path | None = None,
    strict: bool = False,
    n_jobs: int = 1,
) -> DatasetIndex:
    """Resolve the folder, discover and validate the cases of dataset ``name``.

    Raises:
        DataRootError: the folder is missing or holds no valid case.
        DataValidationError: with ``strict=True`` and any problem.
    """
    spec = get_dataset(name)
    root = resolve_root(spec, data_root)
    cases, problems = discover(spec, root)
    valid, bad = validate(spec, cases, strict=False, n_jobs=n_jobs)
    problems = [*problems, *bad]
    if strict and problems:
        raise_for_problems(problems)
    if not valid:
        raise no_valid_case_error(spec, root, problems)
    return DatasetIndex(spec=spec, root=root, cases=valid, problems=problems)
