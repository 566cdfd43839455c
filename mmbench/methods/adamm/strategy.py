"""AdaMM and its three ablations as registered strategies.

The common class :class:`TeacherStudentKD` also carries SMU-Net (:mod:`.smunet`), which is AdaMM
without adapters, GARM, global style matching and LGRM.

Options (``--set methods.<name>.KEY=VALUE``):

- ``variant``: ``fixed`` (default) or ``faithful`` (the released code's defects: GARM's view for a
  transpose and unmasked attention, degenerate global style matching, discriminator Adam state
  reset every step; see :mod:`.garm`, :mod:`.bbdm`).
- ``rampup_fraction`` (0.1): share of the run over which the consistency weight ramps up.
- ``fresh_disc_adam`` (True under ``faithful``, else False): reset the discriminator optimiser's
  state every step, as the reference re-creates it.
- ``garm_nodes`` (8), ``adj_threshold`` (0.5), ``adapter_dropout`` (0.1), ``disc_lr_scale`` (1.0).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from mmbench.methods.adamm.adapters import AdapterBank
from mmbench.methods.adamm.backbone import AdaBackbone, Features
from mmbench.methods.adamm.bbdm import (
    StyleDiscriminator,
    consistency_loss,
    content_loss,
    discriminator_loss,
    generator_adversarial_loss,
    global_style_matching,
    global_style_matching_faithful,
    gram_loss,
    rampup_weight,
)
from mmbench.methods.adamm.garm import GARM
from mmbench.methods.adamm.lgrm import (
    PresenceHead,
    presence_bce,
    presence_gate,
    presence_targets,
    reliability_weights,
    soft_dice_loss,
)
from mmbench.methods.base import Batch, MethodConfig, Stage, StepContext, Strategy
from mmbench.methods.losses import regions_from_compartments
from mmbench.methods.registry import register
from mmbench.subsets import Subset

ADAMM_PAPER = (
    "No Modality Left Behind: Adapting to Missing Modalities via Knowledge Distillation for "
    "Brain Tumor Segmentation (AdaMM), arXiv 2509.15017"
)
VARIANTS = ("fixed", "faithful")

# Loss weights of the reference (spec "Loss and schedule").
W_TEACHER_DICE, W_STUDENT_DICE = 0.4, 0.6
W_CONTENT, W_GRAM, W_ADV = 0.2, 1e-4, 2e-4


class TeacherStudentKD(Strategy):
    """Teacher (all modalities) and student (available ones) co-trained with distillation.

    Subclasses switch components with the class flags below.
    """

    use_adapters: ClassVar[bool] = True
    use_garm: ClassVar[bool] = True
    use_bbdm: ClassVar[bool] = True
    use_gsm: ClassVar[bool] = True
    use_lgrm: ClassVar[bool] = True

    def __init__(self, config: MethodConfig) -> None:
        super().__init__(config)
        variant = str(config.option("variant", "fixed"))
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        self.variant = variant
        self.faithful = variant == "faithful"
        self.rampup_fraction = float(config.option("rampup_fraction", 0.1))
        self.fresh_disc_adam = bool(config.option("fresh_disc_adam", self.faithful))
        self.disc_lr_scale = float(config.option("disc_lr_scale", 1.0))
        w = config.width
        self.teacher = AdaBackbone(config.in_channels, 3, w)
        self.student = AdaBackbone(config.in_channels, 3, w)
        self.adapters: AdapterBank | None = None
        self.garm: GARM | None = None
        self.presence_t: PresenceHead | None = None
        self.presence_s: PresenceHead | None = None
        self.disc: StyleDiscriminator | None = None
        if self.use_adapters:
            self.adapters = AdapterBank(w, dropout=float(config.option("adapter_dropout", 0.1)))
            if self.use_garm:
                self.garm = GARM(
                    8 * w,
                    nodes=int(config.option("garm_nodes", 8)),
                    faithful=self.faithful,
                    adj_threshold=float(config.option("adj_threshold", 0.5)),
                )
        if self.use_lgrm:
            self.presence_t = PresenceHead(w)
            self.presence_s = PresenceHead(w)
        if self.use_bbdm:
            self.disc = StyleDiscriminator(8 * w)
        self._disc_optimizer: torch.optim.Optimizer | None = None

    # ----------------------------------------------------------------------------- optimisers
    def stages(self) -> list[Stage]:
        if self.disc is None:
            return [Stage("train", ("main",))]
        return [Stage("train", ("main", "disc"))]

    def configure_optimizers(
        self, lr: float, weight_decay: float
    ) -> dict[str, torch.optim.Optimizer]:
        disc_ids = {id(p) for p in self.disc.parameters()} if self.disc is not None else set()
        main = [p for p in self.parameters() if id(p) not in disc_ids]
        out = {"main": torch.optim.Adam(main, lr=lr, weight_decay=weight_decay)}
        if self.disc is not None:
            self._disc_optimizer = torch.optim.Adam(
                self.disc.parameters(), lr=lr * self.disc_lr_scale, weight_decay=weight_decay
            )
            out["disc"] = self._disc_optimizer
        return out

    def inference_modules(self) -> Iterable[nn.Module]:
        mods = [self.student, self.adapters, self.garm, self.presence_s]
        return [m for m in mods if m is not None]

    # ----------------------------------------------------------------------------- forward
    def student_forward(self, image: Tensor, subset: Subset) -> Features:
        """The student on N×4×D×H×W (absent channels zero): adapters and GARM for non-full
        subsets, the plain shared network for the full one."""
        adapters = self.adapters.get(subset) if self.adapters is not None else None
        garm = self.garm if adapters is not None else None
        return self.student(image, adapters, garm)

    def training_step(self, batch: Batch, ctx: StepContext) -> dict[str, Any]:
        subset = Subset.from_names(batch["available"])
        target = batch["compartments"].float()
        ft = self.teacher(batch["image_full"])
        fs = self.student_forward(batch["image"], subset)
        pt, ps = torch.sigmoid(ft.logits.float()), torch.sigmoid(fs.logits.float())
        dice_t, dice_s = soft_dice_loss(pt, target), soft_dice_loss(ps, target)
        logs: dict[str, Any] = {}
        total = torch.zeros((), device=pt.device)
        if self.presence_t is not None and self.presence_s is not None:
            y = presence_targets(target)
            lt, ls = self.presence_t(ft.u2).float(), self.presence_s(fs.u2).float()
            dice_t = dice_t * reliability_weights(lt, y)
            dice_s = dice_s * reliability_weights(ls, y)
            bce = presence_bce(lt, y) + presence_bce(ls, y)
            total = total + bce
            logs["log/presence_bce"] = bce.detach()
        seg = W_TEACHER_DICE * dice_t.sum(1).mean() + W_STUDENT_DICE * dice_s.sum(1).mean()
        lam = rampup_weight(ctx.progress, self.rampup_fraction)
        cons = consistency_loss(pt, ps)
        total = total + seg + lam * cons
        logs.update({"log/seg": seg.detach(), "log/consistency": cons.detach(), "log/lambda": lam})
        disc_loss: Tensor | None = None
        if self.disc is not None:
            content = content_loss(ft.content, fs.content)
            gram = gram_loss(ft.style, fs.style)
            adv = generator_adversarial_loss(self.disc, fs.style)
            total = total + W_CONTENT * content + W_GRAM * gram + W_ADV * adv
            logs.update(
                {
                    "log/content": content.detach(),
                    "log/gram": gram.detach(),
                    "log/adv": adv.detach(),
                }
            )
            if self.use_gsm:
                gsm_fn = global_style_matching_faithful if self.faithful else global_style_matching
                gsm = gsm_fn([ft.c3d, ft.style, ft.content], [fs.c3d, fs.style, fs.content])
                total = total + gsm
                logs["log/gsm"] = gsm.detach()
            disc_loss = discriminator_loss(self.disc, ft.style, fs.style)
            if self.fresh_disc_adam and self._disc_optimizer is not None:
                # The reference builds a new Adam for the discriminator every iteration.
                self._disc_optimizer.state.clear()
        # "main" first: a caller that steps each optimiser right after its backward must not
        # update the discriminator before the generator loss (through D) is back-propagated.
        out: dict[str, Any] = {"main": total}
        if disc_loss is not None:
            out["disc"] = disc_loss
        out.update(logs)
        return out

    def predict(self, image: Tensor, available: tuple[str, ...]) -> Tensor:
        """Student only; LGRM gate; N×4×D×H×W → N×3 (WT, TC, ET) probabilities."""
        fs = self.student_forward(image, Subset.from_names(available))
        prob = torch.sigmoid(fs.logits.float())
        if self.presence_s is not None:
            prob = presence_gate(prob, torch.sigmoid(self.presence_s(fs.u2).float()))
        return regions_from_compartments(prob)


@register(
    "adamm",
    family="knowledge-distillation",
    paper=ADAMM_PAPER,
    tags=("teacher-student", "adapters", "gnn", "ablation-base"),
)
class AdaMM(TeacherStudentKD):
    """AdaMM: KD teacher–student with subset adapters, GARM, BBDM and LGRM.

    Teacher (all four modalities) and student (absent channels zero, adapters chosen by the
    subset code) are SMU-Net-style U-Nets trained jointly from scratch with one Adam (``main``);
    the style discriminator has its own persistent Adam (``disc``). Inference uses the student
    with the LGRM presence gate. ``variant=faithful`` reproduces the released code's defects,
    ``fixed`` (default) corrects them; see ``docs/methods.md``.
    """


@register(
    "adamm-no-garm",
    family="knowledge-distillation",
    paper=ADAMM_PAPER + " (ablation w/o GARM)",
    tags=("teacher-student", "adapters", "ablation"),
)
class AdaMMNoGARM(TeacherStudentKD):
    """AdaMM without GARM: the decoder reads the code-specific bottleneck directly."""

    use_garm = False


@register(
    "adamm-no-bbdm",
    family="knowledge-distillation",
    paper=ADAMM_PAPER + " (ablation w/o BBDM)",
    tags=("teacher-student", "adapters", "gnn", "ablation"),
)
class AdaMMNoBBDM(TeacherStudentKD):
    """AdaMM without BBDM: no content, Gram, global-style or adversarial terms (no
    discriminator); the prediction consistency is kept."""

    use_bbdm = False
    use_gsm = False


@register(
    "adamm-no-lgrm",
    family="knowledge-distillation",
    paper=ADAMM_PAPER + " (ablation w/o LGRM)",
    tags=("teacher-student", "adapters", "gnn", "ablation"),
)
class AdaMMNoLGRM(TeacherStudentKD):
    """AdaMM without LGRM: no presence heads, no gate, plain (unweighted) Dice."""

    use_lgrm = False
