"""The ``rfnet`` strategy: the RFNet network and its official losses on mmbench's contract (see
:mod:`mmbench.methods.rfnet.network` and ``docs/methods/rfnet.md``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from mmbench.methods.base import Batch, MethodConfig, Option, StepContext, Strategy, subset_of
from mmbench.methods.mmformer.strategy import regions_from_classes
from mmbench.methods.registry import register
from mmbench.methods.rfnet.losses import (
    PUBLISHED_EPOCHS,
    PUBLISHED_FUSION_START_EPOCH,
    RFNetLosses,
    fusion_weight,
    one_hot_classes,
    published_epoch,
    rfnet_losses,
)
from mmbench.methods.rfnet.network import (
    LEVELS,
    SLOT_FROM_CANONICAL,
    SLOT_ORDER,
    RFNetDims,
    RFNetNet,
    RFNetOutput,
    SeparateDecoder,
    upsample_probabilities,
)

# Published recipe (official train.py / job.sh): Adam with amsgrad, coupled L2 weight decay,
# poly 0.9 set per epoch over 300 epochs, the lr rounded to 8 decimals.
PUBLISHED_LR = 2e-4
PUBLISHED_WEIGHT_DECAY = 1e-4
PUBLISHED_POWER = 0.9


def slot_mask(available: Iterable[str], batch: int, device: torch.device | None = None) -> Tensor:
    """N×K bool availability in slot order (FLAIR, T1ce, T1, T2)."""
    names = set(subset_of(available).available)
    row = torch.tensor([m in names for m in SLOT_ORDER], dtype=torch.bool, device=device)
    return row.unsqueeze(0).expand(batch, -1)


def to_slots(image: Tensor) -> Tensor:
    """N×4×… canonical (T1, T1ce, T2, FLAIR) → N×4×… slot order (FLAIR, T1ce, T1, T2)."""
    return image[:, list(SLOT_FROM_CANONICAL)]


def published_lr_factor(step: int, total_steps: int) -> float:
    """Factor of the published lr at mmbench step ``step`` (1-based) of ``total_steps``.

    The official ``LR_Scheduler`` sets ``round(2e-4 · (1 − float32(epoch) / float32(300))^0.9,
    8)`` at the start of each of 300 epochs; mmbench maps the run's steps onto the 300 epochs in
    equal shares (:func:`~mmbench.methods.rfnet.losses.published_epoch`).
    """
    epoch = published_epoch(step, total_steps)
    ratio = np.float32(epoch) / np.float32(PUBLISHED_EPOCHS)
    lr = round(float(PUBLISHED_LR * np.power(1 - ratio, PUBLISHED_POWER)), 8)
    return lr / PUBLISHED_LR


@register(
    "rfnet",
    family="robustness-enhancement",
    paper="Ding et al., RFNet: Region-aware Fusion Network for Incomplete Multi-modal Brain "
    "Tumor Segmentation, ICCV 2021",
    tags=("fusion", "multi-encoder", "official-port"),
)
class RFNet(Strategy):
    """RFNet: modality-specific encoders, region-aware fusion (probability region maps and one
    sigmoid gate per modality and region) at every level of a fusion decoder, and a shared
    per-modality decoder in training.

    Faithful to the official code (dyh127/RFNet @1e475fa, checked against its golden fixture by
    ``mmbench check-official``): the same blocks (conv, instance norm, LeakyReLU 0.2, reflect
    padding), concatenation orders, region maps detached before the fusion and computed from the
    decoder context, gates from all four slots' descriptors (absent ones zero), the shortcut
    branch, the 4-class softmax and its losses (weighted CE + Dice of the fused output, of the
    four per-modality outputs and of the four region maps, weights 1, the fused term off for the
    first 20 of 300 official epochs). Training feeds all four modalities (``image_full``) to the
    four encoders and the shared per-modality decoder, as the official code does, and applies
    the availability mask inside the fusion decoder; ``predict`` runs only the available
    modalities' encoders (absent ones enter the fusion as the zeros their masked features would
    be) and returns WT = 1 − p_BG, TC = p_NCR + p_ET, ET = p_ET.

    Departures: sizes scale with the preset's width (every official channel count × ``m =
    width_multiplier · width / 16``; official = width 16 with multiplier 1); one modality subset
    per batch (the loop's) instead of one per sample; regions by thresholding the region
    probabilities instead of the arg-max label. ``recipe="published"``: Adam (amsgrad) at 2e-4,
    weight decay 1e-4, per-epoch poly over 300 epochs mapped onto the step budget.

    Options: ``recipe`` (shared | published), ``width_multiplier``, ``fusion_start_epoch``.
    """

    options: ClassVar[dict[str, Option]] = {
        "recipe": Option(
            "shared",
            "shared: the preset's Adam and poly schedule; published: the official optimiser, "
            "lr, weight decay and per-epoch schedule scaled to the step budget",
            choices=("shared", "published"),
        ),
        "width_multiplier": Option(
            1.0,
            "every official channel count x width_multiplier * width / 16 (1 = official at the "
            "paper preset's width 16)",
            minimum=0.0,
        ),
        "fusion_start_epoch": Option(
            PUBLISHED_FUSION_START_EPOCH,
            "official epoch (of 300, mapped onto the run's steps) from which the fused loss "
            "counts; before it its weight is 0 (job.sh: 20; 0 = no warm-up)",
            minimum=0,
            maximum=PUBLISHED_EPOCHS,
        ),
    }

    def __init__(self, config: MethodConfig, dims: RFNetDims | None = None) -> None:
        """``dims`` (e.g. read from an official checkpoint) replaces the width rule."""
        super().__init__(config)
        self.recipe = str(self._option("recipe"))
        self.fusion_start_epoch = int(self._option("fusion_start_epoch"))
        multiplier = float(self._option("width_multiplier"))
        self.dims = dims or RFNetDims.from_width(config.width, multiplier)
        self.net = RFNetNet(self.dims)
        self.sep_decoder = SeparateDecoder(self.dims.basic, self.dims.num_classes)
        self._init_weights()

    def _option(self, key: str) -> object:
        return self.config.option(key, self.declared_options()[key].default)

    def _init_weights(self) -> None:
        # Official: kaiming-normal (fan_in, gain sqrt(2)) on every Conv3d weight (the gate
        # networks' 1×1 convs included), PyTorch defaults for the biases.
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight)

    # ----------------------------------------------------------------------------- forward
    def forward_all(
        self, x_slots: Tensor, mask: Tensor, auxiliary: bool = False
    ) -> tuple[RFNetOutput, list[Tensor] | None]:
        """The network on slot-ordered input (N×4×D×H×W) with an N×4 bool mask.

        With ``auxiliary`` every encoder runs and the per-modality decoder gives N×L×D×H×W
        logits for each slot (a list in slot order); otherwise only the available slots run.
        """
        run = range(len(SLOT_ORDER)) if auxiliary else None
        out = self.net(x_slots, mask, run=run)
        sep = None
        if auxiliary:
            k, n = len(SLOT_ORDER), x_slots.shape[0]
            feats = out.features
            if torch.is_grad_enabled():
                # The four slots stacked on the batch axis: instance norm is per sample, so one
                # call equals four calls of the shared decoder (and is faster on a CPU).
                stacked = [
                    torch.cat([feats[s][lvl] for s in range(k)], 0)  # type: ignore[index]
                    for lvl in range(LEVELS)
                ]
                sep = list(self.sep_decoder(stacked).split(n, 0))
            else:  # one slot at a time: a quarter of the peak memory
                sep = [self.sep_decoder(feats[s]) for s in range(k)]  # type: ignore[arg-type]
        return out, sep

    @staticmethod
    def probabilities(
        out: RFNetOutput, sep: Sequence[Tensor] | None
    ) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """Softmax outputs as the official forward returns them: fused N×L×…, per-slot
        N×L×… and the region maps of levels 1-4 upsampled to the input size (×1, ×2, ×4, ×8)."""
        fuse = torch.softmax(out.logits.float(), 1)
        seps = [torch.softmax(s.float(), 1) for s in sep or []]
        prms = [upsample_probabilities(p.float(), 2**lvl) for lvl, p in enumerate(out.prms)]
        return fuse, seps, prms

    # ----------------------------------------------------------------------------- training
    def fusion_weight(self, ctx: StepContext) -> float:
        """Weight of the fused loss at this step (0 during the official warm-up)."""
        return fusion_weight(ctx.step, ctx.total_steps, self.fusion_start_epoch)

    def training_step(self, batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
        image = batch.get("image_full")
        if image is None:
            image = batch["image"]
        n = image.shape[0]
        mask = slot_mask(batch["available"], n, image.device)
        out, sep = self.forward_all(to_slots(image), mask, auxiliary=True)
        fuse, seps, prms = self.probabilities(out, sep)
        target = one_hot_classes(batch["compartments"])
        losses: RFNetLosses = rfnet_losses(fuse, seps, prms, target)
        weight = self.fusion_weight(ctx)
        return {
            "main": losses.total(weight),
            "log/fuse": losses.fuse.detach(),
            "log/sep": losses.sep.detach(),
            "log/prm": losses.prm.detach(),
            "log/fuse_weight": torch.tensor(weight),
        }

    def configure_optimizers(
        self, lr: float, weight_decay: float
    ) -> dict[str, torch.optim.Optimizer]:
        if self.recipe == "published":
            return {
                "main": torch.optim.Adam(
                    self.parameters(),
                    lr=PUBLISHED_LR,
                    betas=(0.9, 0.999),
                    eps=1e-8,
                    weight_decay=PUBLISHED_WEIGHT_DECAY,
                    amsgrad=True,
                )
            }
        return super().configure_optimizers(lr, weight_decay)

    def lr_factor(self, optimizer: str, ctx: StepContext) -> float | None:
        if self.recipe == "published":
            return published_lr_factor(ctx.step, ctx.total_steps)
        return None

    # ----------------------------------------------------------------------------- inference
    def predict(self, image: Tensor, available: tuple[str, ...]) -> Tensor:
        mask = slot_mask(available, image.shape[0], image.device)
        out, _ = self.forward_all(to_slots(image), mask)
        return regions_from_classes(torch.softmax(out.logits.float(), 1))

    def inference_modules(self) -> Iterable[nn.Module]:
        return [self.net]


__all__ = ["RFNet", "published_lr_factor", "slot_mask", "to_slots"]
