"""The ``m2ftrans`` strategy: the M2FTrans network and its official losses on mmbench's contract
(see :mod:`mmbench.methods.m2ftrans.network` and ``docs/methods/m2ftrans.md``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from mmbench.methods.base import Batch, MethodConfig, Option, StepContext, Strategy
from mmbench.methods.m2ftrans.network import (
    SLOTS,
    DeepSupervision,
    M2FTransDims,
    M2FTransNet,
    M2FTransOutput,
    SeparateDecoder,
)
from mmbench.methods.mmformer.losses import MMFormerLosses, mmformer_losses, one_hot_classes
from mmbench.methods.mmformer.network import LEVELS, upsample_probabilities
from mmbench.methods.mmformer.strategy import regions_from_classes, slot_mask, to_slots
from mmbench.methods.registry import register

# Published recipe (official train.sh / train.py, M2FTrans_v1): AdamW with amsgrad, lr 2e-4,
# weight decay 1e-4, 1000 epochs; lr per epoch by `warmuppoly` (linear warm-up over 100 epochs
# from 0, then poly 0.9 over the remaining 900), rounded to 8 decimals.
PUBLISHED_LR = 2e-4
PUBLISHED_WEIGHT_DECAY = 1e-4
PUBLISHED_EPOCHS = 1000
PUBLISHED_WARMUP = 100
PUBLISHED_POWER = 0.9


def published_lr_factor(step: int, total_steps: int) -> float:
    """Factor of the published lr at mmbench step ``step`` (1-based) of ``total_steps``.

    The run's steps are shared equally among the 1000 official epochs (epoch = ⌊1000 ·
    (step − 1) / total_steps⌋); epoch e < 100 trains at round(2e-4 · e / 100, 8) (epoch 0 at
    lr 0, as officially), later ones at round(2e-4 · (1 − (e − 100) / 900)^0.9, 8).
    """
    epoch = min(PUBLISHED_EPOCHS - 1, (step - 1) * PUBLISHED_EPOCHS // max(1, total_steps))
    if epoch < PUBLISHED_WARMUP:
        lr = PUBLISHED_LR * epoch / PUBLISHED_WARMUP
    else:
        rest = PUBLISHED_EPOCHS - PUBLISHED_WARMUP
        lr = PUBLISHED_LR * (1.0 - (epoch - PUBLISHED_WARMUP) / rest) ** PUBLISHED_POWER
    return round(lr, 8) / PUBLISHED_LR


@register(
    "m2ftrans",
    family="robustness-enhancement",
    paper="Shi et al., M2FTrans: Modality-Masked Fusion Transformer for Incomplete "
    "Multi-Modality Brain Tumor Segmentation, IEEE JBHI 2023",
    tags=("transformer", "multi-encoder", "official-port"),
)
class M2FTrans(Strategy):
    """M2FTrans: per-modality post-norm encoders, a modality-masked fusion transformer with
    learnable fusion tokens, attention-derived modality weights on every skip, cross-token
    fusion in the two deepest decoder levels, five deep-supervision heads and an auxiliary
    per-modality decoder.

    Faithful to the official ``M2FTrans_v1`` model (Jun-Jie-Shi/M2FTrans @03a0b28, checked
    against its golden fixture by ``mmbench check-official``): the same blocks, padding modes,
    masks, attention-derived weights (unnormalised sums of the first layer's attention,
    nearest upsampling), channel-wise cross-token attention, concatenation orders, the 4-class
    softmax and its losses (weighted CE + Dice of the fused output, of the four per-modality
    outputs and of the five deep-supervision outputs, weights 1). Training feeds all four
    modalities (``image_full``) and applies the availability mask inside the network, as the
    official code does; ``predict`` runs only the available modalities' encoders.

    Departures: sizes scale with the preset's width (official = width 16: basic 16, MLP 4096,
    deep-supervision heads 16; ``basic = width``, MLP 256·basic, heads basic) and the token
    grid is the crop / 16 (official 5³ for 80³); one modality subset per batch (the loop's)
    instead of one per sample; regions by thresholding the region probabilities instead of the
    arg-max label. ``recipe="published"``: AdamW (amsgrad) at 2e-4, weight decay 1e-4, the
    100-epoch warm-up and poly over 1000 epochs mapped onto the step budget.

    Options: ``recipe`` (shared | published), ``heads``, ``transformer_depth``, ``mlp_width``
    (0 = the width rule), ``basic_width`` (0 = the preset width; ``quick`` sets 4, mmFormer's
    encoder width there, to keep the preset affordable).
    """

    options: ClassVar[dict[str, Option]] = {
        "recipe": Option(
            "shared",
            "shared: the preset's Adam and poly schedule; published: the official optimiser, "
            "lr, weight decay and warm-up + per-epoch poly schedule scaled to the step budget",
            choices=("shared", "published"),
        ),
        "heads": Option(8, "attention heads of the masked transformer (official 8)", minimum=1),
        "transformer_depth": Option(3, "layers of the masked transformer (official 3)", minimum=1),
        "mlp_width": Option(
            0, "transformer MLP width; 0 = 256 x basic width (official 4096)", minimum=0
        ),
        "basic_width": Option(
            0,
            "channels of level 0 (token width 16x, deep-supervision heads 1x, MLP 256x); "
            "0 = the preset's model.width (official 16 = the paper preset)",
            minimum=0,
        ),
    }

    def __init__(self, config: MethodConfig) -> None:
        super().__init__(config)
        self.recipe = str(self._option("recipe"))
        self.dims = M2FTransDims.from_width(
            int(self._option("basic_width")) or config.width,
            config.patch_size,
            mlp=int(self._option("mlp_width")) or None,
            heads=int(self._option("heads")),
            depth=int(self._option("transformer_depth")),
        )
        self.net = M2FTransNet(self.dims)
        self.sep_decoder = SeparateDecoder(self.dims.basic, self.dims.num_classes)
        self.deep_heads = DeepSupervision(self.dims)
        self._init_weights()

    def _option(self, key: str) -> object:
        return self.config.option(key, self.declared_options()[key].default)

    def _init_weights(self) -> None:
        # Official: kaiming-normal (fan_in, gain sqrt(2)) on every Conv3d weight, `pos` zero,
        # `fusion` N(0, 1), PyTorch defaults elsewhere.
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight)

    # ----------------------------------------------------------------------------- forward
    def forward_all(
        self, x_slots: Tensor, mask: Tensor, auxiliary: bool = False
    ) -> tuple[M2FTransOutput, list[Tensor] | None, list[Tensor] | None]:
        """The network on slot-ordered input (N×4×D×H×W) with an N×4 bool mask.

        With ``auxiliary`` every encoder runs, the per-modality decoder gives N×L×D×H×W logits
        for each slot (a list in slot order) and the deep-supervision heads the logits of
        levels 0-4; otherwise only the available slots run and both are ``None``.
        """
        out = self.net(x_slots, mask, run=range(SLOTS) if auxiliary else None)
        sep = deep = None
        if auxiliary:
            deep = self.deep_heads(out.levels)
            n, feats = x_slots.shape[0], out.features
            if torch.is_grad_enabled():
                # the four slots stacked on the batch axis: one call of the shared decoder
                stacked = [
                    torch.cat([feats[s][lvl] for s in range(SLOTS)], 0)  # type: ignore[index]
                    for lvl in range(LEVELS)
                ]
                sep = list(self.sep_decoder(stacked).split(n, 0))
            else:  # one slot at a time: a quarter of the peak memory
                sep = [self.sep_decoder(feats[s]) for s in range(SLOTS)]  # type: ignore[arg-type]
        return out, sep, deep

    @staticmethod
    def probabilities(
        out: M2FTransOutput, sep: Sequence[Tensor] | None, deep: Sequence[Tensor] | None
    ) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """Softmax outputs: fused N×L×…, per-slot N×L×… and the five deep-supervision outputs
        (levels 0-4) upsampled to the input size (×1 … ×16, softmax first)."""
        fuse = torch.softmax(out.logits.float(), 1)
        seps = [torch.softmax(s.float(), 1) for s in sep or []]
        probs = [torch.softmax(lg.float(), 1) for lg in deep or []]
        ups = [p if lvl == 0 else upsample_probabilities(p, 2**lvl) for lvl, p in enumerate(probs)]
        return fuse, seps, ups

    # ----------------------------------------------------------------------------- training
    def training_step(self, batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
        image = batch.get("image_full")
        if image is None:
            image = batch["image"]
        mask = slot_mask(batch["available"], image.shape[0], image.device)
        out, sep, deep_logits = self.forward_all(to_slots(image), mask, auxiliary=True)
        fuse, seps, deep = self.probabilities(out, sep, deep_logits)
        losses: MMFormerLosses = mmformer_losses(
            fuse, seps, deep, one_hot_classes(batch["compartments"])
        )
        return {
            "main": losses.total,
            "log/fuse": losses.fuse.detach(),
            "log/sep": losses.sep.detach(),
            "log/deep": losses.deep.detach(),
        }

    def configure_optimizers(
        self, lr: float, weight_decay: float
    ) -> dict[str, torch.optim.Optimizer]:
        if self.recipe == "published":
            return {
                "main": torch.optim.AdamW(
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
        out, _, _ = self.forward_all(to_slots(image), mask)
        return regions_from_classes(torch.softmax(out.logits.float(), 1))

    def inference_modules(self) -> Iterable[nn.Module]:
        return [self.net]


__all__ = ["M2FTrans", "published_lr_factor"]
