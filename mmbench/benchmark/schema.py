"""The tidy results format shared by the evaluator, the results store and the reports.

One row per (dataset, method, seed, fold, case, subset, region, metric). Every row also carries
the metric conventions it was computed under, so that no table can silently mix them.

Run folder layout (``results/<dataset>/<method>/seed<S>-fold<F>/``):

- ``config.yaml``       resolved configuration of the run
- ``split.json``        ``{"train": [...], "val": [...], "test": [...]}`` case ids
- ``invalid_cases.json`` cases left out by validation: ``[{"case", "file", "problem"}, ...]``
- ``environment.json``  package versions, device, git commit
- ``run.json``          :data:`RUN_INFO_KEYS` (method, family, paper, params, status, ...)
- ``train_log.csv``     one row per logged training step
- ``checkpoints/``      ``last.pt`` and ``best.pt`` (load with ``weights_only=True``)
- ``metrics.csv``       rows with :data:`RESULT_COLUMNS`
- ``predictions/``      optional NIfTI predictions ``<case>__<subset code>.nii.gz``
"""

from __future__ import annotations

from mmbench.families import FAMILIES
from mmbench.regions import REGIONS
from mmbench.subsets import Subset, as_subset

RESULT_COLUMNS: tuple[str, ...] = (
    "dataset",
    "method",
    "seed",
    "fold",
    "case",
    "subset",  # canonical name, e.g. "T1ce+FLAIR"
    "region",  # WT, TC, ET (RC, ETpp when asked; a modality name for synthesis metrics)
    "metric",  # dice, hd95, iou, sensitivity, specificity, psnr, ssim, ...
    "value",  # float; NaN where the policy excludes the case
    "empty_policy",  # penalty | zero | asymmetric | nan
    "hd95_mode",  # pooled | directed-max
    "max_distance",  # mm, the HD95 value given to a one-empty pair under penalty/nan
)

RUN_INFO_KEYS: tuple[str, ...] = (
    "dataset",
    "method",
    "family",
    "paper",
    "params",  # parameters used at inference
    "seed",
    "fold",
    "preset",
    "status",  # "training" | "evaluating" | "complete"
)

METRICS_FILE = "metrics.csv"
RUN_INFO_FILE = "run.json"
SPLIT_FILE = "split.json"
CONFIG_FILE = "config.yaml"
TRAIN_LOG_FILE = "train_log.csv"
INVALID_FILE = "invalid_cases.json"
ENVIRONMENT_FILE = "environment.json"
PREDICTIONS_DIR = "predictions"
CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_LAST = "last.pt"
CHECKPOINT_BEST = "best.pt"

PREDICTION_SUFFIX = ".nii.gz"


def prediction_file_name(case: str, subset: Subset | str) -> str:
    """File name of a saved or outside prediction: ``<case>__<subset code>.nii.gz``."""
    return f"{case}__{as_subset(subset).code}{PREDICTION_SUFFIX}"


# The vocabulary lives in top-level modules; these names stay importable from here.
__all__ = [
    "FAMILIES",
    "REGIONS",
    "RESULT_COLUMNS",
    "RUN_INFO_KEYS",
    "prediction_file_name",
]
