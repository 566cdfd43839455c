"""Datasets: registry, discovery, validation, splits and MONAI transforms.

Typical use::

    index = load_dataset("brats2024", data_root)          # discover + validate
    split = make_split(index.cases, index.spec, seed=0)   # grouped by patient
    pre = build_preprocess(index.spec)                    # load, orient, crop, normalise
"""

from mmbench.datasets.base import (
    COMPARTMENTS,
    REGIONS,
    Case,
    DataRootError,
    DatasetSpec,
    DataValidationError,
    Problem,
)
from mmbench.datasets.check import check_dataset, format_check_report
from mmbench.datasets.discovery import DATA_ENV, discover, resolve_root
from mmbench.datasets.registry import get_dataset, list_datasets
from mmbench.datasets.splits import Split, load_split, make_split
from mmbench.datasets.validation import DatasetIndex, load_dataset, validate
from mmbench.subsets import zero_absent

# The transforms import torch and MONAI (seconds); load them only when first used so that
# `mmbench data check` and listings stay quick.
_LAZY_TRANSFORMS = (
    "build_preprocess",
    "build_train_augment",
    "make_cached_dataset",
    "native_affine",
    "native_shape",
    "native_spacing",
    "restore_to_native",
)


def __getattr__(name: str):
    if name in _LAZY_TRANSFORMS:
        from mmbench.datasets import transforms

        return getattr(transforms, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "COMPARTMENTS",
    "DATA_ENV",
    "REGIONS",
    "Case",
    "DataRootError",
    "DataValidationError",
    "DatasetIndex",
    "DatasetSpec",
    "Problem",
    "Split",
    "build_preprocess",
    "build_train_augment",
    "check_dataset",
    "discover",
    "format_check_report",
    "get_dataset",
    "list_datasets",
    "load_dataset",
    "load_split",
    "make_cached_dataset",
    "make_split",
    "native_affine",
    "native_shape",
    "native_spacing",
    "resolve_root",
    "restore_to_native",
    "validate",
    "zero_absent",
]
