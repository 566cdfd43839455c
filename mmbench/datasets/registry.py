"""Dataset registry: look a :class:`DatasetSpec` up by name."""

from __future__ import annotations

from mmbench.datasets import brats2018, brats2024, pretreat_mets, synthetic
from mmbench.datasets.base import DatasetSpec
from mmbench.errors import UnknownNameError

_REGISTRY: dict[str, DatasetSpec] = {
    module.SPEC.name: module.SPEC for module in (brats2018, brats2024, pretreat_mets, synthetic)
}


def list_datasets() -> list[str]:
    """Registered dataset names: ``["brats2018", "brats2024", "pretreat-mets", "synthetic"]``."""
    return list(_REGISTRY)


def get_dataset(name: str | DatasetSpec) -> DatasetSpec:
    """Return the spec registered under ``name`` (a spec passes through unchanged)."""
    if isinstance(name, DatasetSpec):
        return name
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownNameError(
            f"unknown dataset {name!r}; valid names: {', '.join(_REGISTRY)}"
        ) from None
