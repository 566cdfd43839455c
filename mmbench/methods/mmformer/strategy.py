"""The ``mmformer`` strategy: the mmFormer network and its official losses on mmbench's
contract (see :mod:`mmbench.methods.mmformer.network` and ``docs/methods/mmformer.md``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from mmbench.methods.base import (
    Batch,
    MethodConfig,
    Option,
    StepContext,
    Strategy,
    subset_of,
)
from mmbench.methods.mmformer.losses import MMFormerLosses, mmformer_losses, one_hot_classes
from mmbench.methods.mmformer.network import (
    LEVELS,
    SLOT_FROM_CANONICAL,
    SLOT_ORDER,
    MMFormerDims,
    MMFormerNet,
    MMFormerOutput,
    SeparateDecoder,
    upsample_probabilities,
)
from mmbench.methods.registry import register

# Published recipe (official train.py / job.sh): Adam with amsgrad, coupled L2 weight decay,
# poly 0.9 per epoch over 1000 epochs, the lr rounded to 8 decimals.
PUBLISHED_LR = 2e-4
PUBLISHED_WEIGHT_DECAY = 1e-4
PUBLISHED_EPOCHS = 1000
PUBLISHED_POWER = 0.9


def slot_mask(available: Iterable[str], batch: int, device: torch.device | None = None) -> Tensor:
    """N×K bool availability in slot order (FLAIR, T1ce, T1, T2)."""
    names = set(subset_of(available).available)
    row = torch.tensor([m in names for m in SLOT_ORDER], dtype=torch.bool, device=device)
    return row.unsqueeze(0).expand(batch, -1)


def to_slots(image: Tensor) -> Tensor:
    """N×4×… canonical (T1, T1ce, T2, FLAIR) → N×4×… slot order (FLAIR, T1ce, T1, T2)."""
    return image[:, list(SLOT_FROM_CANONICAL)]


def regions_from_classes(prob: Tensor) -> Tensor:
    """WT, TC, ET probabilities from the 4-class softmax (background, NCR/NET, edema, ET).

    WT = 1 − p_background, TC = p_NCR + p_ET, ET = p_ET: the probability that the voxel belongs
    to the region's classes. N×4×… → N×3×… in [0, 1].
    """
    wt = 1.0 - prob[:, 0]
    tc = prob[:, 1] + prob[:, 3]
    et = prob[:, 3]
    return torch.stack([wt, tc, et], dim=1).clamp(0.0, 1.0)


def published_lr_factor(step: int, total_steps: int) -> float:
    """Factor of the published lr at mmbench step ``step`` (1-based) of ``total_steps``.

    The official schedule sets ``round(2e-4 · (1 − epoch/1000)^0.9, 8)`` at the start of each of
    1000 epochs; mmbench maps the run's steps onto the 1000 epochs in equal shares (epoch =
    ⌊1000 · (step − 1) / total_steps⌋), so the staircase keeps its shape at any budget.
    """
    epoch = min(PUBLISHED_EPOCHS - 1, (step - 1) * PUBLISHED_EPOCHS // max(1, total_steps))
    lr = PUBLISHED_LR * (1.0 - epoch / PUBLISHED_EPOCHS) ** PUBLISHED_POWER
    return round(lr, 8) / PUBLISHED_LR


@register(
    "mmformer",
    family="robustness-enhancement",
    paper="Zhang et al., mmFormer: Multimodal Medical Transformer for Incomplete Multimodal "
    "Learning of Brain Tumor Segmentation, MICCAI 2022",
    tags=("transformer", "multi-encoder", "official-port"),
)
class MMFormer(Strategy):
    """mmFormer: modality-specific encoders, intra- and inter-modal transformers, a shared
    fusion decoder with deep supervision, and an auxiliary per-modality decoder.

    Faithful to the official code (YaoZhang93/mmFormer @b18663a, checked against its golden
    fixture by ``mmbench check-official``): the same blocks, padding modes, concatenation
    orders, the plain-view token-to-voxel reshape, the unmasked inter-modal attention, the
    positional embeddings shared by both transformers, the 4-class softmax and its losses
    (weighted CE + Dice of the fused output, of the four per-modality outputs and of the four
    deep-supervision outputs, weights 1). Training feeds all four modalities
    (``image_full``), as the official code does, and applies the availability mask inside the
    network; ``predict`` runs only the available modalities' encoders (absent ones enter the
    fusion as the zeros their masked features would be). ``predict`` returns WT = 1 − p_BG,
    TC = p_NCR + p_ET, ET = p_ET.

    Departures: sizes scale with the preset's width (official = width 16: basic 8, transformer
    512, MLP 4096; ``basic = width // 2``, transformer 64·basic, MLP 512·basic) and the token
    grid is the crop / 16 (official 8³ for 128³); one modality subset per batch (the loop's)
    instead of one per sample; regions by thresholding the region probabilities at the
    evaluator's threshold instead of the arg-max label; the unused ``<m>_decode_conv`` weights
    are not kept. ``recipe="published"``: Adam (amsgrad) at 2e-4, weight decay 1e-4, per-epoch
    poly over 1000 epochs mapped onto the step budget.

    Options: ``recipe`` (shared | published), ``heads``, ``transformer_depth``,
    ``transformer_width`` and ``mlp_width`` (0 = the width rule).
    """

    options: ClassVar[dict[str, Option]] = {
        "recipe": Option(
            "shared",
            "shared: the preset's Adam and poly schedule; published: the official optimiser, "
            "lr, weight decay and per-epoch schedule scaled to the step budget",
            choices=("shared", "published"),
        ),
        "heads": Option(8, "attention heads of every transformer (official 8)", minimum=1),
        "transformer_depth": Option(1, "layers of every transformer (official 1)", minimum=1),
        "transformer_width": Option(
            0, "token width; 0 = 64 x (width // 2) (official 512 at width 16)", minimum=0
        ),
        "mlp_width": Option(
            0, "transformer MLP width; 0 = 8 x token width (official 4096)", minimum=0
        ),
    }

    def __init__(self, config: MethodConfig) -> None:
        super().__init__(config)
        self.recipe = str(self._option("recipe"))
        transformer = int(self._option("transformer_width")) or None
        mlp = int(self._option("mlp_width")) or (8 * transformer if transformer else None)
        self.dims = MMFormerDims.from_width(
            config.width,
            config.patch_size,
            transformer=transformer,
            mlp=mlp,
            heads=int(self._option("heads")),
            depth=int(self._option("transformer_depth")),
        )
        self.net = MMFormerNet(self.dims)
        self.sep_decoder = SeparateDecoder(self.dims.basic, self.dims.num_classes)
        self._init_weights()

    def _option(self, key: str) -> object:
        return self.config.option(key, self.declared_options()[key].default)

    def _init_weights(self) -> None:
        # Official: kaiming-normal (fan_in, gain sqrt(2)) on every Conv3d weight, PyTorch
        # defaults elsewhere, positional embeddings zero.
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight)

    # ----------------------------------------------------------------------------- forward
    def forward_all(
        self, x_slots: Tensor, mask: Tensor, auxiliary: bool = False
    ) -> tuple[MMFormerOutput, list[Tensor] | None]:
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
            else:  # one slot at a time: a quarter of the peak memory (128³ fixtures)
                sep = [self.sep_decoder(feats[s]) for s in range(k)]  # type: ignore[arg-type]
        return out, sep

    def probabilities(
        self, out: MMFormerOutput, sep: Sequence[Tensor] | None
    ) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """Softmax outputs: fused N×L×…, per-slot N×L×… and the deep-supervision outputs
        upsampled to the input size (levels 1-4, ×2 … ×16)."""
        fuse = torch.softmax(out.logits.float(), 1)
        seps = [torch.softmax(s.float(), 1) for s in sep or []]
        deep = [
            upsample_probabilities(torch.softmax(lg.float(), 1), 2**lvl)
            for lvl, lg in enumerate(out.deep_logits, start=1)
        ]
        return fuse, seps, deep

    # ----------------------------------------------------------------------------- training
    def training_step(self, batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
        image = batch.get("image_full")
        if image is None:
            image = batch["image"]
        n = image.shape[0]
        mask = slot_mask(batch["available"], n, image.device)
        out, sep = self.forward_all(to_slots(image), mask, auxiliary=True)
        fuse, seps, deep = self.probabilities(out, sep)
        target = one_hot_classes(batch["compartments"])
        losses: MMFormerLosses = mmformer_losses(fuse, seps, deep, target)
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
        fuse = torch.softmax(out.logits.float(), 1)
        return regions_from_classes(fuse)

    def inference_modules(self) -> Iterable[nn.Module]:
        return [self.net]


__all__ = [
    "MMFormer",
    "published_lr_factor",
    "regions_from_classes",
    "slot_mask",
    "to_slots",
]
