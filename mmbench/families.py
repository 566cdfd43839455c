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
