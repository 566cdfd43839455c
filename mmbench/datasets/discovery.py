"""Find the data folder of a dataset and the cases inside it.

Discovery looks at file names only (no NIfTI is opened): files named
``<case><sep><suffix>.nii`` or ``.nii.gz`` are grouped by folder and case id, recursively below the
root, so archive folders, grade folders and flattened mirrors all work. Anything else (spreadsheets,
readmes, other datasets' cases) is ignored.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from pathlib import Path

from mmbench.datasets.base import Case, DataRootError, DatasetSpec, Problem
from mmbench.datasets.registry import get_dataset
from mmbench.subsets import MODALITIES

DATA_ENV = "MMBENCH_DATA"
"""Environment variable naming the parent folder with one sub-folder per dataset name."""

GRADES: tuple[str, ...] = ("HGG", "LGG")
_EXTENSIONS: tuple[str, ...] = (".nii.gz", ".nii")


def expected_layout(spec: DatasetSpec) -> str:
    """One line describing the folder layout ``spec`` expects."""
    suffixes = ",".join(spec.file_suffixes)
    grade = "[HGG|LGG/]" if spec.stratify_key == "grade" else "[any sub-folders/]"
    return (
        f"<root>/{grade}<case>/<case>{spec.separator}{{{suffixes}}}.nii.gz (or .nii), "
        f"case ids matching {spec.case_pattern!r}"
    )


def resolve_root(name: str | DatasetSpec, data_root: str | Path | None = None) -> Path:
    """Return the folder holding dataset ``name``.

    ``data_root`` may be the dataset folder itself or a parent with a sub-folder named after the
    dataset; without it, ``$MMBENCH_DATA/<name>`` is used.

    Raises:
        DataRootError: no such folder.
    """
    spec = get_dataset(name)
    looked: list[Path] = []
    if data_root is not None:
        base = Path(data_root).expanduser()
        candidates = [base / spec.name, base]
    elif os.environ.get(DATA_ENV):
        candidates = [Path(os.environ[DATA_ENV]).expanduser() / spec.name]
    else:
        candidates = []
    for candidate in candidates:
        looked.append(candidate)
        if candidate.is_dir():
            return candidate
    hint = (
        f"pass --data-root (the dataset folder or its parent) or set ${DATA_ENV} to a folder "
        f"with a '{spec.name}' sub-folder"
    )
    if looked:
        where = f"looked in {', '.join(str(p) for p in looked)}"
    else:
        where = f"no --data-root given and ${DATA_ENV} is not set"
    raise DataRootError(
        f"No data folder for dataset {spec.name!r}: {where}; {hint}. "
        f"Expected layout: {expected_layout(spec)}."
    )


def _file_regex(spec: DatasetSpec) -> re.Pattern[str]:
    suffixes = "|".join(re.escape(s) for s in sorted(spec.file_suffixes, key=len, reverse=True))
    sep = re.escape(spec.separator)
    return re.compile(rf"^(?P<id>.+?){sep}(?P<suffix>{suffixes})(?P<ext>\.nii\.gz|\.nii)$")


def _grade_of(folder: Path, root: Path) -> str | None:
    # The nearest HGG/LGG folder between the case and the root gives the grade.
    for parent in [folder, *folder.parents]:
        if parent == root or root not in parent.parents:
            break
        if parent.name.upper() in GRADES:
            return parent.name.upper()
    return None


def discover(spec: DatasetSpec | str, root: str | Path) -> tuple[list[Case], list[Problem]]:
    """List the cases below ``root``.

    Returns:
        ``(cases, problems)``: complete cases sorted by id, and one :class:`Problem` per missing
        file (naming the path it expected) or duplicated case id. Nothing is read from the files.
    """
    spec = get_dataset(spec)
    root = Path(root)
    pattern = _file_regex(spec)
    # (folder, case id) -> suffix -> path; .nii.gz wins over .nii when both exist.
    found: dict[tuple[Path, str], dict[str, Path]] = defaultdict(dict)
    case_dirs: set[Path] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        # Hidden folders hold temporary or VCS files (e.g. a phantom writer's ".tmp-*" folders).
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        folder = Path(dirpath)
        if spec.matches_case(folder.name):
            case_dirs.add(folder)
        for fname in sorted(filenames):
            m = pattern.match(fname)
            if m is None or not spec.matches_case(m["id"]):
                continue
            files = found[(folder, m["id"])]
            if m["suffix"] not in files or m["ext"] == ".nii.gz":
                files[m["suffix"]] = folder / fname
    # A case folder with none of its files still deserves a problem report.
    for folder in case_dirs:
        if not any(key[0] == folder for key in found):
            found[(folder, folder.name)] = {}

    cases: list[Case] = []
    problems: list[Problem] = []
    seen: dict[str, Path] = {}
    for (folder, case_id), files in sorted(found.items(), key=lambda kv: (kv[0][1], str(kv[0][0]))):
        if case_id in seen:
            problems.append(
                Problem(case_id, str(folder), f"duplicate case id (also in {seen[case_id]})")
            )
            continue
        seen[case_id] = folder
        missing = [s for s in spec.file_suffixes if s not in files]
        for suffix in missing:
            expected = folder / f"{case_id}{spec.separator}{suffix}{_EXTENSIONS[0]}"
            problems.append(Problem(case_id, str(expected), "missing file"))
        if missing:
            continue
        images = {m: files[spec.modality_suffixes[m]] for m in MODALITIES}
        grade = _grade_of(folder, root) if spec.stratify_key == "grade" else None
        cases.append(
            Case(
                id=case_id,
                images=images,
                label=files[spec.label_suffix],
                group=spec.group_of(case_id),
                grade=grade,
            )
        )
    return cases, problems
