"""``mmbench evaluate``: score predictions made outside mmbench with mmbench's metrics.

Naming convention of the prediction folder (flat; sub-folders are searched too)::

    <pred_dir>/<case id>__<subset>.nii.gz      (or .nii)

- ``<case id>`` is the dataset's case id (``BraTS-GLI-00005-101``, ``Brats18_CBICA_AAB_1``, ...);
- ``<subset>`` is the 4-bit code in T1, T1ce, T2, FLAIR order (``0101`` = T1ce+FLAIR), which is
  what ``mmbench run`` writes to ``predictions/``; a subset name (``T1ce+FLAIR``) is accepted too;
- the file is an integer label map on the case's native grid (same shape as its ``seg`` file),
  in the BraTS 2024 convention 0 background, 1 NETC, 2 ED, 3 ET (``label_convention="brats2024"``)
  or the BraTS 2018 one with 4 = ET (``"brats2018"``). Other values are an error.

The reference and the voxel spacing come from the dataset's own label file (found through the
dataset registry and discovery), so the rows are the same as the evaluator's: every region and
metric, ``ref_voxels``, and the policy columns. They are written as a run folder
(``metrics.csv`` + ``run.json``) that ``mmbench report`` reads like any other run.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from mmbench.atomic import write_csv_rows_atomic
from mmbench.benchmark.rundir import RunDir
from mmbench.benchmark.schema import RESULT_COLUMNS, prediction_file_name
from mmbench.benchmark.scorer import ScoringSettings, load_reference, score_case
from mmbench.errors import ConfigError, PredictionError
from mmbench.metrics import METRICS, MetricPolicy
from mmbench.regions import LABEL_CONVENTIONS, REGIONS, region_masks
from mmbench.regions import label_from_regions as label_map_from_regions
from mmbench.subsets import as_subset

_NAME = re.compile(r"^(?P<case>.+)__(?P<subset>[^_/]+?)\.nii(\.gz)?$")
PREDICTION_LABELS: dict[str, tuple[int, ...]] = {
    "brats2024": (0, 1, 2, 3),
    "brats2018": (0, 1, 2, 4),
}


def parse_prediction_name(name: str) -> tuple[str, str] | None:
    """``(case id, canonical subset name)`` of a prediction file name, or ``None``."""
    m = _NAME.match(name)
    if m is None:
        return None
    try:
        return m["case"], as_subset(m["subset"]).name
    except ValueError:
        return None


def find_predictions(pred_dir: str | Path) -> dict[str, dict[str, Path]]:
    """Case id → subset name → prediction path, for every well-named file under ``pred_dir``."""
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise PredictionError(f"no prediction folder at {pred_dir}")
    out: dict[str, dict[str, Path]] = {}
    for path in sorted(pred_dir.rglob("*.nii*")):
        parsed = parse_prediction_name(path.name)
        if parsed is None:
            warnings.warn(f"ignoring {path}: not named <case>__<subset code>.nii.gz", stacklevel=2)
            continue
        case, subset = parsed
        if subset in out.setdefault(case, {}):
            raise PredictionError(f"two predictions for {case} {subset}: {path}")
        out[case][subset] = path
    return out


def _load(path: Path) -> tuple[np.ndarray, object]:
    import nibabel as nib

    img = nib.load(str(path))
    return np.asanyarray(img.dataobj), img


def evaluate_prediction_dir(
    pred_dir: str | Path,
    dataset: str,
    data_root: str | Path | None = None,
    policy: object | None = None,
    out: str | Path | None = None,
    method: str | None = None,
    family: str = "external",
    label_convention: str = "brats2024",
    regions: Sequence[str] = REGIONS,
    n_jobs: int = 1,
    results_root: str | Path = "results",
    split_from: str | Path | None = None,
) -> pd.DataFrame:
    """Score every prediction under ``pred_dir`` against the dataset's reference labels.

    Args:
        pred_dir: folder with ``<case>__<subset code>.nii.gz`` files (see module docstring).
        dataset: registered dataset name (``brats2018``, ``brats2024``, ``pretreat-mets``, ...).
        data_root: the dataset folder or its parent (default ``$MMBENCH_DATA/<dataset>``).
        policy: a :class:`~mmbench.metrics.MetricPolicy` or a mapping with
            ``empty_policy``/``hd95_mode``/``max_distance`` (default: penalty, pooled,
            373.1287 mm, as ``mmbench run``).
        out: run folder to write; default ``<results_root>/<dataset>/<method>/external``.
        method: method name in the tables (default: the prediction folder's name).
        family: family shown in the family view.
        label_convention: ``"brats2024"`` (3 = ET) or ``"brats2018"`` (4 = ET) for the files.
        regions: regions to score.
        n_jobs: joblib workers for the metrics of one case.
        results_root: parent of the default ``out``.
        split_from: a run folder (its ``split.json``) or a split file (JSON with a ``test``
            list): only that split's test cases are scored, so the result compares like with
            like with that run; predictions of other cases are left out with a warning.

    Returns:
        The tidy rows written to ``<out>/metrics.csv`` (``attrs["run_dir"]``: that folder).

    Raises:
        PredictionError: a file has the wrong shape or unknown label values, or no prediction
            matches a case of the dataset.
    """
    from mmbench.datasets import discover, get_dataset, resolve_root

    if label_convention not in PREDICTION_LABELS:
        raise ConfigError(
            f"label_convention must be one of {sorted(PREDICTION_LABELS)}; got {label_convention!r}"
        )
    if policy is None:
        policy = MetricPolicy()
    elif isinstance(policy, Mapping):
        policy = MetricPolicy.from_dict(policy)
    spec = get_dataset(dataset)
    root = resolve_root(spec, data_root)
    cases, _ = discover(spec, root)
    by_id = {c.id: c for c in cases}
    preds = find_predictions(pred_dir)
    unknown = sorted(set(preds) - set(by_id))
    if unknown:
        warnings.warn(
            f"{len(unknown)} prediction case(s) not in {spec.name} under {root}: "
            f"{', '.join(unknown[:5])}",
            stacklevel=2,
        )
    todo = [c for c in sorted(preds) if c in by_id]
    split_file = None
    if split_from is not None:
        split_file, test = read_test_split(split_from)
        outside = [c for c in todo if c not in test]
        if outside:
            warnings.warn(
                f"{len(outside)} predicted case(s) are not test cases of {split_file} and are "
                f"not scored: {', '.join(outside[:5])}",
                stacklevel=2,
            )
        missing = sorted(set(test) - set(todo))
        if missing:
            warnings.warn(
                f"{len(missing)} test case(s) of {split_file} have no prediction: "
                f"{', '.join(missing[:5])}; the report will compare on the common units only",
                stacklevel=2,
            )
        todo = [c for c in todo if c in test]
    if not todo:
        raise PredictionError(
            f"no prediction under {pred_dir} matches a {spec.name} case under {root}; "
            "expected names like <case id>__<subset code>.nii.gz"
        )
    method = method or Path(pred_dir).resolve().name
    allowed = np.asarray(PREDICTION_LABELS[label_convention])
    pred_regions = LABEL_CONVENTIONS[label_convention]
    settings = ScoringSettings(policy=policy, metrics=METRICS, n_jobs=n_jobs)  # type: ignore[arg-type]
    key = {"dataset": spec.name, "method": method, "seed": 0, "fold": 0}
    rows: list[dict] = []
    for case_id in todo:
        reference = load_reference(case_id, by_id[case_id].label, spec.regions, regions)
        predictions = {}
        for subset, path in sorted(preds[case_id].items()):
            pred, _ = _load(path)
            if pred.shape != reference.shape:
                raise PredictionError(
                    f"{path}: shape {pred.shape} differs from the reference {reference.shape} "
                    f"({by_id[case_id].label}); predictions must be on the native grid"
                )
            bad = np.setdiff1d(np.unique(pred), allowed)
            if bad.size:
                raise PredictionError(
                    f"{path}: label values {bad.tolist()} outside the {label_convention} "
                    f"convention {allowed.tolist()}"
                )
            predictions[subset] = region_masks(pred, pred_regions, regions)
        rows += score_case(reference, predictions, settings, key)
    run = RunDir(
        Path(out) if out is not None else Path(results_root) / spec.name / method / "external"
    )
    write_csv_rows_atomic(run.metrics_path, rows, RESULT_COLUMNS)
    run.write_info(
        {
            **key,
            "family": family,
            "paper": "",
            "params": None,
            "preset": "external",
            "status": "complete",
            "pred_dir": str(Path(pred_dir).resolve()),
            "data_root": str(root),
            "label_convention": label_convention,
            "policy": policy.as_dict(),  # type: ignore[attr-defined]
            "split_from": str(split_file) if split_file is not None else None,
        }
    )
    frame = run.results().frame()
    frame.attrs["run_dir"] = str(run.path)
    return frame


def read_test_split(split_from: str | Path) -> tuple[Path, set[str]]:
    """``(split file, test case ids)`` of a run folder (its ``split.json``) or a split file.

    Raises:
        PredictionError: no split file there, or one without a ``test`` list.
    """
    import json

    path = Path(split_from)
    if path.is_dir():
        path = path / "split.json"
    if not path.is_file():
        raise PredictionError(
            f"no split at {split_from}: give a run folder holding split.json or a split file"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise PredictionError(f"{path} is not a JSON split file: {exc}") from exc
    test = data.get("test") if isinstance(data, dict) else None
    if not isinstance(test, list) or not test:
        raise PredictionError(f"{path} has no 'test' list of case ids")
    return path, {str(c) for c in test}


__all__: Sequence[str] = (
    "PredictionError",
    "evaluate_prediction_dir",
    "find_predictions",
    "label_map_from_regions",
    "parse_prediction_name",
    "prediction_file_name",
    "read_test_split",
)
