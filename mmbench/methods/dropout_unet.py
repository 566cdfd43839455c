"""Modality-dropout U-Net (family ``robustness-enhancement``)."""

from __future__ import annotations

from mmbench.methods.backbone_strategy import BackboneStrategy
from mmbench.methods.registry import register


@register(
    "dropout-unet",
    family="robustness-enhancement",
    paper="Modality dropout as in HeMIS (Havaei et al., MICCAI 2016) on a 3-D U-Net",
    tags=("baseline", "unet"),
)
class DropoutUNet(BackboneStrategy):
    """The shared backbone trained with a random modality subset each step.

    The subset is drawn by the loop (uniform over the 15 by default, ``train.subset_weights``),
    so every batch shares one subset and absent channels are zero, exactly as at test time.
    """

    train_subsets = "random"
