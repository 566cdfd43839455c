"""The shared U-Net on region targets: the base of zerofill and dropout-unet."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from mmbench.methods.base import Batch, MethodConfig, Option, StepContext, Strategy
from mmbench.methods.blocks import UNet3D
from mmbench.methods.losses import dice_bce_loss


class BackboneStrategy(Strategy):
    """The compact 3-D U-Net (:class:`~mmbench.methods.blocks.UNet3D`) predicting WT, TC, ET.

    Input is the four-channel volume with absent channels zero; the subsets it trains on are
    set by ``train_subsets`` in subclasses. It has no options of its own.
    """

    options: ClassVar[dict[str, Option]] = {}

    def __init__(self, config: MethodConfig) -> None:
        super().__init__(config)
        self.net = UNet3D(
            config.in_channels,
            config.out_channels,
            width=config.width,
            depth=config.depth,
        )

    def training_step(self, batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
        return {"main": dice_bce_loss(self.net(batch["image"]), batch["regions"])}

    def predict(self, image: Tensor, available: tuple[str, ...]) -> Tensor:
        return torch.sigmoid(self.net(image).float())
