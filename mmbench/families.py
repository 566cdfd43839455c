"""The families of missing-modality strategies, in table order.

The six families of the AdaMM paper ("No Modality Left Behind", arXiv 2509.15017), plus
``reference`` for the lower and upper bounds (zero-filling, one network per subset).
"""

from __future__ import annotations

FAMILIES: tuple[str, ...] = (
    "data-generation",
    "feature-generation",
    "sample-retrieval",
    "robustness-enhancement",
    "multi-task",
    "knowledge-distillation",
    "reference",
)
"""Family names as registered with :func:`mmbench.methods.register`, in table order."""

FAMILY_REPRESENTATIVES: dict[str, str] = {
    "data-generation": "mmgan",
    "feature-generation": "shaspec",
    "sample-retrieval": "retrieval-knn",
    "robustness-enhancement": "mmformer",
    "multi-task": "uhved",
    "knowledge-distillation": "adamm",
    "reference": "zerofill",
}
"""The member that stands for each family when no validation score chooses one (fixed before
any result was seen: the family's most compared published method, or its only one)."""


def representative(family: str) -> str | None:
    """The registered representative of ``family`` (see :data:`FAMILY_REPRESENTATIVES`)."""
    return FAMILY_REPRESENTATIVES.get(family)
