"""The ``shaspec`` strategy: the official ShaSpec network and losses on mmbench's contract (see
:mod:`mmbench.methods.shaspec.network` and ``docs/methods/shaspec.md``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from mmbench.methods.base import Batch, MethodConfig, Option, Stage, StepContext, Strategy
from mmbench.methods.registry import register
from mmbench.methods.shaspec.losses import (
    ALIGN_WEIGHT,
    DOMAIN_WEIGHT,
    ShaSpecLosses,
    shaspec_losses,
)
from mmbench.methods.shaspec.network import (
    SLOT_FROM_CANONICAL,
    SLOT_ORDER,
    ShaSpecDims,
    ShaSpecNet,
    ShaSpecOutput,
    padded_size,
)
from mmbench.subsets import FULL

# Published recipe (official run.sh / train_SS.py): SGD, Nesterov momentum 0.99, lr 1e-2, no
# weight decay, poly 0.9; 80,000 full-modality iterations, then random modes until 180,000 with
# the poly restarted over 180,000 iterations.
PUBLISHED_LR = 1e-2
PUBLISHED_MOMENTUM = 0.99
PUBLISHED_POWER = 0.9
PUBLISHED_WARMUP = 80_000
PUBLISHED_TOTAL = 180_000
WARMUP = PUBLISHED_WARMUP / PUBLISHED_TOTAL
"""Share of the steps trained on full modalities first, in both recipes: the official 80/180.
The stage is part of ShaSpec's training, and it is also needed numerically: from
initialisation (norm biases 0) a zero image's path is exactly zero, so every InstanceNorm on it
multiplies the gradient by 1/sqrt(eps) ~ 316, and random subsets from the first step overflow
to NaN. At ``quick`` the official share gave full-modality WT Dice 0.757 against 0.742 with 5 %
(docs/methods/shaspec.md)."""

WARMUP_STAGE = "full-modality"

REGIONS_FROM_OFFICIAL: tuple[int, ...] = (1, 2, 0)
"""mmbench (WT, TC, ET) = official logits channels (ET, WT, TC)[REGIONS_FROM_OFFICIAL]."""
OFFICIAL_FROM_REGIONS: tuple[int, ...] = (2, 0, 1)
"""Official (ET, WT, TC) = mmbench regions (WT, TC, ET)[OFFICIAL_FROM_REGIONS]."""


def to_slots(image: Tensor) -> Tensor:
    """N×4×… canonical (T1, T1ce, T2, FLAIR) → N×4×… slot order (FLAIR, T1, T1ce, T2)."""
    return image[:, list(SLOT_FROM_CANONICAL)]


def available_slots(available: Iterable[str]) -> list[int]:
    """Slot indices of the present modalities, in slot order."""
    names = set(available)
    return [s for s, m in enumerate(SLOT_ORDER) if m in names]


def published_lr_factor(ctx: StepContext) -> float:
    """Factor of the published lr at the loop's step ``ctx`` (steps 1-based).

    Officially a poly 0.9 over the 80,000 full-modality iterations, then the run restarts with a
    poly over all 180,000 iterations from iteration 80,000 (≈0.59 at the switch). Here: during
    the full-modality stage ``(1 − i/W)^0.9`` over its W steps, afterwards ``(1 − i/T)^0.9``
    over the run's T steps (i = step − 1).
    """
    if ctx.stage == WARMUP_STAGE:
        return (1.0 - (ctx.stage_step - 1) / max(1, ctx.stage_steps)) ** PUBLISHED_POWER
    return max(0.0, 1.0 - (ctx.step - 1) / max(1, ctx.total_steps)) ** PUBLISHED_POWER


@register(
    "shaspec",
    family="feature-generation",
    paper="Wang et al., Multi-modal Learning with Missing Modality via Shared-Specific Feature "
    "Modelling (ShaSpec), CVPR 2023",
    tags=("shared-specific", "feature-generation", "official-port"),
)
class ShaSpec(Strategy):
    """ShaSpec: a shared encoder for all modalities and a specific encoder per modality (3-D
    ResNet-50 + ASPP each), a shared residual composition layer at the bottleneck, missing
    modalities' features generated from the shared feature of an available one, a decoder fed
    by the shared encoder's skips of all four slots.

    Faithful to the official code (billhhh/ShaSpec @081fe7a, checked against its golden
    fixture by ``mmbench check-official``): same blocks, weight standardisation, norms, slot
    order, donor rule, decoder and sigmoid outputs (ET, WT, TC, mapped to WT, TC, ET), and
    the official losses: Dice + channel-summed BCE + 0.1 · cyclic L1 between the four slots'
    shared features + 0.02 · domain cross-entropy of the specific encoders' pooled
    pre-ASPP features (every slot, missing ones included, as officially).

    Missing modalities: the input slots are zero and every encoder runs on them (the skips
    carry the shared encoder's response to a zero image). ``donor="first"`` (the code): at
    inference the first present modality in the official order (FLAIR, T1, T1ce, T2) gives
    its shared feature; in training a uniformly random present one (the official ``random``
    mode samples the order). ``donor="mean"``: the mean of the present ones (the paper).

    Departures: channel counts scale with the preset's width by ``(width/16)**3`` (official at
    16, 1/8 at ``quick``, 1/64 at ``smoke``; option ``channel_scale`` overrides); inputs
    whose size is not a multiple of (16, 32, 32) are zero-padded at the end and the logits
    cropped; one modality subset per batch (the loop's) instead of one per iteration;
    ``predict`` skips the specific encoders of absent modalities (their features never reach
    the prediction). ``recipe="published"``: SGD (Nesterov 0.99) at 1e-2 without weight
    decay and the official poly restart. Both recipes train the first 80/180 of the steps on
    full modalities, as officially (option ``warmup``; see :data:`WARMUP`).
    """

    options: ClassVar[dict[str, Option]] = {
        "recipe": Option(
            "shared",
            "shared: the preset's optimiser and schedule; published: SGD 1e-2 (Nesterov "
            "0.99), no weight decay, the official poly restart after the full-modality stage",
            choices=("shared", "published"),
        ),
        "donor": Option(
            "first",
            "feature of a missing modality: first = shared feature of the first present "
            "modality (official code; random present one in training), mean = mean of the "
            "present ones (paper)",
            choices=("first", "mean"),
        ),
        "align_weight": Option(
            ALIGN_WEIGHT, "weight of the shared-feature L1 (official 0.1)", minimum=0.0
        ),
        "domain_weight": Option(
            DOMAIN_WEIGHT, "weight of the domain loss (official 0.02)", minimum=0.0
        ),
        "warmup": Option(
            WARMUP,
            "fraction of the steps trained on full modalities first (official 80/180; at "
            "least one step unless 0)",
            minimum=0.0,
            maximum=1.0,
        ),
        "channel_scale": Option(
            0.0, "channel multiplier of the official counts; 0 = (model.width/16)**3", minimum=0.0
        ),
    }

    def __init__(self, config: MethodConfig) -> None:
        super().__init__(config)
        self.recipe = str(self._option("recipe"))
        self.donor = str(self._option("donor"))
        self.align_weight = float(self._option("align_weight"))
        self.domain_weight = float(self._option("domain_weight"))
        self.warmup = float(self._option("warmup"))
        scale = float(self._option("channel_scale"))
        self.dims = (
            ShaSpecDims.from_scale(scale) if scale > 0 else ShaSpecDims.from_width(config.width)
        )
        self.net = ShaSpecNet(self.dims)
        self.domain_head = nn.Linear(self.dims.aspp, len(SLOT_ORDER))
        self._init_weights()

    def _option(self, key: str) -> object:
        return self.config.option(key, self.declared_options()[key].default)

    def _init_weights(self) -> None:
        # Official: kaiming-normal (fan_out) on every (transposed) convolution, norms weight 1
        # bias 0, PyTorch's default for the linear domain classifier.
        for m in self.net.modules():
            if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")

    # ----------------------------------------------------------------------------- forward
    def donor_slot(self, available: Sequence[int], training: bool) -> int | None:
        """The slot whose shared feature fills missing slots (None: the mean)."""
        if self.donor == "mean":
            return None
        if training and len(available) > 1:
            return int(available[int(torch.randint(len(available), ()).item())])
        return int(available[0])

    def forward_all(
        self, x_slots: Tensor, available: Sequence[int], donor: int | None, full: bool = True
    ) -> ShaSpecOutput:
        """The network on N×4×D×H×W slot-ordered input, padded to a multiple of the stride
        and cropped back. ``full``: also run the absent modalities' specific encoders."""
        size = tuple(x_slots.shape[2:])
        target = padded_size(size)
        if target != size:
            pad = [0, target[2] - size[2], 0, target[1] - size[1], 0, target[0] - size[0]]
            x_slots = F.pad(x_slots, pad)
        out = self.net(x_slots, available, donor, run_missing_specific=full)
        if target != size:
            out.logits = out.logits[..., : size[0], : size[1], : size[2]]
        return out

    def domain_logits(self, out: ShaSpecOutput) -> Tensor:
        """N×K×K domain logits of every slot's specific pooled feature."""
        pooled = torch.stack([p for p in out.specific_pooled if p is not None], dim=1)
        return self.domain_head(pooled)

    def losses(self, out: ShaSpecOutput, regions: Tensor) -> ShaSpecLosses:
        """Official losses of a full forward; ``regions`` is N×3×… (WT, TC, ET)."""
        target = regions[:, list(OFFICIAL_FROM_REGIONS)]
        return shaspec_losses(
            out.logits,
            target,
            out.shared,
            self.domain_logits(out),
            align_weight=self.align_weight,
            domain_weight=self.domain_weight,
        )

    # ----------------------------------------------------------------------------- training
    def stages(self) -> list[Stage]:
        if self.warmup <= 0:
            return super().stages()
        # at least one full-modality step, whatever the budget (see WARMUP)
        warm = min(1.0, max(self.warmup, 1.0 / max(1, self.config.total_steps)))
        return [
            Stage(
                WARMUP_STAGE,
                ("main",),
                fraction=warm,
                subset=FULL.name,
                select_on_val=False,
            ),
            Stage("train", ("main",), fraction=1.0 - warm),
        ]

    def training_step(self, batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
        available = available_slots(batch["available"])
        out = self.forward_all(
            to_slots(batch["image"]), available, self.donor_slot(available, True)
        )
        terms = self.losses(out, batch["regions"])
        return {
            "main": terms.total,
            "log/dice": terms.dice.detach(),
            "log/bce": terms.bce.detach(),
            "log/shared_l1": terms.shared_l1.detach(),
            "log/domain": terms.domain.detach(),
        }

    def configure_optimizers(
        self, lr: float, weight_decay: float
    ) -> dict[str, torch.optim.Optimizer]:
        if self.recipe == "published":
            return {
                "main": torch.optim.SGD(
                    self.parameters(),
                    lr=PUBLISHED_LR,
                    momentum=PUBLISHED_MOMENTUM,
                    nesterov=True,
                )
            }
        return super().configure_optimizers(lr, weight_decay)

    def lr_factor(self, optimizer: str, ctx: StepContext) -> float | None:
        if self.recipe == "published":
            return published_lr_factor(ctx)
        return None

    # ----------------------------------------------------------------------------- inference
    def predict(self, image: Tensor, available: tuple[str, ...]) -> Tensor:
        slots = available_slots(available)
        out = self.forward_all(to_slots(image), slots, self.donor_slot(slots, False), full=False)
        prob = torch.sigmoid(out.logits.float())
        return prob[:, list(REGIONS_FROM_OFFICIAL)]

    def inference_modules(self) -> Iterable[nn.Module]:
        return [self.net]


__all__ = [
    "OFFICIAL_FROM_REGIONS",
    "REGIONS_FROM_OFFICIAL",
    "ShaSpec",
    "available_slots",
    "published_lr_factor",
    "to_slots",
]
