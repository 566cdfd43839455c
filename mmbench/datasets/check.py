"""The report behind ``mmbench data check``: what is usable in a dataset folder and what is not."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from mmbench.datasets.discovery import discover, resolve_root
from mmbench.datasets.registry import get_dataset
from mmbench.datasets.validation import inspect_cases, raise_for_problems


def _fmt_tuple(values: tuple, digits: int | None = None) -> str:
    if digits is None:
        return "x".join(str(v) for v in values)
    return "x".join(f"{v:.{digits}g}" for v in values)


def check_dataset(
    name: str, data_root: str | Path | None = None, strict: bool = False, n_jobs: int = 1
) -> dict:
    """Discover and validate dataset ``name`` and summarise it.

    Returns:
        A JSON-ready dict with keys ``dataset``, ``root``, ``valid`` (case ids), ``invalid``
        (``{case, file, problem}`` dicts), ``label_histogram`` (label value → voxel count over valid
        cases), ``empty_regions`` (region → number of valid cases where it is empty), ``shapes``
        (``"240x240x155"`` → count) and ``spacings`` (``"1x1x1"`` → count), both over valid cases;
        ``hint``: when nothing was found, why (the dataset whose layout the folder matches
        instead, or the layout expected), else "".

    Raises:
        DataRootError: the folder does not exist (an empty folder gives an empty report).
        DataValidationError: with ``strict=True`` and any problem.
    """
    spec = get_dataset(name)
    root = resolve_root(spec, data_root)
    cases, problems = discover(spec, root)
    reports = inspect_cases(spec, cases, n_jobs=n_jobs)
    problems = [*problems, *(p for r in reports for p in r.problems)]
    if strict and problems:
        raise_for_problems(problems)
    good = [r for r in reports if r.ok]

    histogram: Counter[int] = Counter({v: 0 for v in spec.label_values})
    empty = {region: 0 for region in spec.regions}
    shapes: Counter[str] = Counter()
    spacings: Counter[str] = Counter()
    for r in good:
        histogram.update(r.label_counts)
        for region, values in spec.regions.items():
            if not any(r.label_counts.get(v, 0) for v in values):
                empty[region] += 1
        shapes[_fmt_tuple(r.shape)] += 1
        spacings[_fmt_tuple(r.spacing, digits=4)] += 1
    hint = ""
    if not cases and not problems:
        hint = layout_hint(spec.name, root)
    return {
        "dataset": spec.name,
        "root": str(root),
        "hint": hint,
        "valid": [r.case.id for r in good],
        "invalid": [p.as_dict() for p in problems],
        "label_histogram": {int(k): int(v) for k, v in sorted(histogram.items())},
        "empty_regions": empty,
        "shapes": dict(shapes.most_common()),
        "spacings": dict(spacings.most_common()),
    }


def layout_hint(name: str, root: Path) -> str:
    """Why a folder holds no case of dataset ``name``: the datasets whose layout it matches
    instead, or the layout that was expected."""
    from mmbench.datasets.discovery import expected_layout
    from mmbench.datasets.registry import list_datasets

    others = []
    for other in list_datasets():
        if other == name:
            continue
        found, _ = discover(get_dataset(other), root)
        if found:
            others.append(f"{other} ({len(found)} cases)")
    if others:
        return (
            f"no {name} case under {root}, but the files there match the layout of "
            f"{', '.join(others)}: use --dataset {others[0].split()[0]}"
        )
    return f"no {name} case under {root}; expected layout: {expected_layout(get_dataset(name))}"


def format_check_report(report: dict) -> str:
    """Human-readable text of a :func:`check_dataset` report."""
    n_valid = len(report["valid"])
    invalid_cases = sorted({p["case"] for p in report["invalid"]})
    lines = [
        f"dataset: {report['dataset']}",
        f"root:    {report['root']}",
        f"valid cases:   {n_valid}",
        f"invalid cases: {len(invalid_cases)}",
    ]
    if report.get("hint"):
        lines.append(f"hint: {report['hint']}")
    if report["invalid"]:
        lines.append("problems:")
        lines += [f"  {p['case']}: {p['file']}: {p['problem']}" for p in report["invalid"]]
    total = sum(report["label_histogram"].values()) or 1
    lines.append("label histogram (voxels over valid cases):")
    lines += [
        f"  {label}: {count} ({100 * count / total:.3f}%)"
        for label, count in report["label_histogram"].items()
    ]
    lines.append("cases with an empty region:")
    lines += [f"  {region}: {n}/{n_valid}" for region, n in report["empty_regions"].items()]
    lines.append("shapes:")
    lines += [f"  {shape}: {n}" for shape, n in report["shapes"].items()]
    lines.append("spacings (mm):")
    lines += [f"  {spacing}: {n}" for spacing, n in report["spacings"].items()]
    return "\n".join(lines)
