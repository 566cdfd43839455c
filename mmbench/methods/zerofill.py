"""Zero-fill lower bound (family ``reference``)."""

from __future__ import annotations

from mmbench.methods.backbone_strategy import BackboneStrategy
from mmbench.methods.registry import register


@register(
    "zerofill",
    family="reference",
    paper="Lower bound used throughout the field (e.g. Havaei et al., HeMIS, MICCAI 2016)",
    tags=("baseline", "lower-bound"),
)
class ZeroFill(BackboneStrategy):
    """The shared backbone trained on complete inputs only and tested with absent channels zero.

    It never sees a missing modality in training, so it shows what ignoring the problem costs.
    """

    train_subsets = "full"
