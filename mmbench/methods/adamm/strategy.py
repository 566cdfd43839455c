"""AdaMM, its three ablations, and the teacher–student base they share with SMU-Net.

The model and every loss follow the released code (Quanato607/AdaMM@f2e1733); see
``docs/methods/adamm.md`` for the table of differences and :mod:`.official` for the port that
checks the arithmetic against the golden fixture.

Variants (option ``variant``): ``faithful`` reproduces the released code, defects included;
``fixed`` (default) corrects exactly the defects listed in the AdaMM spec, each of which is also
an option of its own (``None`` = follow ``variant``), so that its effect can be measured:

- ``fix_garm_view``: GARM lays the node matrix out by a transpose, not the released ``view``;
- ``fix_garm_adjacency``: GARM's attention uses the node adjacency the released code computes and
  ignores;
- ``fix_gsm``: global style matching over the list [c3d, style, c4d] its helper was written for,
  not over the samples of the batch;
- ``fix_disc_adam``: the discriminator's Adam keeps its state (released: re-created each step);
- ``fix_eval_mode``: evaluation in eval mode (released: the student is evaluated in train mode,
  with dropout and BatchNorm batch statistics, one volume at a time).

The released code's unused modules (GARM's cascade GCNs and other dead convs, the teacher's
adapter bank and GARM, the empty code's adapter set) are built by neither variant: no output
depends on them.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from mmbench.methods.adamm.adapters import AdapterBank
from mmbench.methods.adamm.backbone import LABELS, AdaBackbone, Features
from mmbench.methods.adamm.bbdm import (
    STUDENT_LABEL,
    TEACHER_LABEL,
    W_ADV,
    W_CONTENT,
    StyleDiscriminator,
    bce_with_label,
    consistency_terms,
    consistency_weight,
    content_loss,
    gsm_intended,
    gsm_released,
    style_gram_loss,
    style_gram_sumsq,
)
from mmbench.methods.adamm.garm import ADJ_THRESHOLD, GARM
from mmbench.methods.adamm.lgrm import (
    PresenceHead,
    dice_loss_per_sample,
    presence_bce,
    presence_gate,
    presence_targets,
    reliability_weights,
)
from mmbench.methods.base import Batch, MethodConfig, Option, Stage, StepContext, Strategy
from mmbench.methods.losses import regions_from_compartments
from mmbench.methods.registry import register
from mmbench.subsets import Subset

ADAMM_PAPER = (
    "No Modality Left Behind: Adapting to Missing Modalities via Knowledge Distillation for "
    "Brain Tumor Segmentation (AdaMM), arXiv 2509.15017"
)
VARIANTS = ("fixed", "faithful")
RECIPES = ("shared", "published")
LABEL_NAMES = ("netc", "snfh", "et")

# Released loss weights (configs/brats.yml: weight_mispath 0.6, weight_content 0.2).
W_TEACHER_DICE, W_STUDENT_DICE = 0.4, 0.6

# Released recipe (configs/brats.yml, solver/build.py, train_adamm_divide.py).
PUBLISHED_LR = 1e-4
PUBLISHED_WEIGHT_DECAY = 1e-5
PUBLISHED_POLY_POWER = 0.9
DISC_BETAS = (0.9, 0.99)


def _fix(help_text: str) -> Option:
    return Option(
        None,
        help_text + " (default: on under fixed, off under faithful)",
        choices=(True, False),
        nullable=True,
    )


KD_OPTIONS: dict[str, Option] = {
    "variant": Option(
        "fixed",
        "faithful = the released code with its defects; fixed = defects corrected",
        choices=VARIANTS,
    ),
    "recipe": Option(
        "shared",
        "shared = the preset's Adam and poly schedule; published = the released Adam (lr 1e-4, "
        "weight decay 1e-5) and per-epoch poly schedule, epochs scaled to the run's steps",
        choices=RECIPES,
    ),
    "epochs": Option(
        200,
        "released epoch count the run's steps are mapped onto (consistency ramp, schedule)",
        minimum=1,
    ),
    "fix_disc_adam": _fix("keep the discriminator's Adam state across steps"),
    "fix_eval_mode": _fix("evaluate the student in eval mode"),
    "head_bias_init": Option(
        None,
        "initial bias of the output logits (not released; default: PyTorch's init)",
        nullable=True,
    ),
}

ADAMM_OPTIONS: dict[str, Option] = {
    "fix_garm_view": _fix("GARM: transpose the node matrix instead of the released view"),
    "fix_garm_adjacency": _fix("GARM: attention restricted to the node adjacency"),
    "fix_gsm": _fix("global style matching over [c3d, style, c4d], not over the batch"),
    "gate_scope": Option(
        "volume",
        "volume = the LGRM gate is decided on the whole blended prediction; window = on each "
        "sliding window before blending",
        choices=("volume", "window"),
    ),
    "adj_threshold": Option(
        ADJ_THRESHOLD, "cosine threshold of GARM's node adjacency", minimum=-1.0, maximum=1.0
    ),
    "garm_nodes": Option(8, "GARM graph nodes K", minimum=1),
    "adapter_hidden": Option(
        None, "adapter hidden width (default 4·C0, 64 at C0 = 16)", nullable=True, minimum=1
    ),
    "adapter_zero_init": Option(
        False, "zero-initialise each adapter's second conv (identity start; not released)"
    ),
}


class TeacherStudentKD(Strategy):
    """Teacher (all modalities) and student (available ones) co-trained with distillation.

    Subclasses switch components with the class flags below. ``use_bbdm`` covers the content,
    style-Gram and adversarial terms and the discriminator; ``use_gsm`` the global style
    matching.
    """

    use_adapters: ClassVar[bool] = False
    use_garm: ClassVar[bool] = False
    use_bbdm: ClassVar[bool] = True
    use_gsm: ClassVar[bool] = False
    use_lgrm: ClassVar[bool] = False
    options: ClassVar[dict[str, Option]] = KD_OPTIONS

    def __init__(self, config: MethodConfig) -> None:
        super().__init__(config)
        self.variant = str(self._option("variant"))
        self.recipe = str(self._option("recipe"))
        self.epochs = int(self._option("epochs"))
        fixed = self.variant == "fixed"

        def correction(key: str) -> bool:
            if key not in self.declared_options():
                return fixed
            value = self._option(key)
            return fixed if value is None else bool(value)

        self.fix_disc_adam = correction("fix_disc_adam")
        self.fix_eval_mode = correction("fix_eval_mode")
        self.fix_garm_view = correction("fix_garm_view")
        self.fix_garm_adjacency = correction("fix_garm_adjacency")
        self.fix_gsm = correction("fix_gsm")
        self.gate_scope = str(self._option("gate_scope", "volume"))
        w = config.width
        self.teacher = AdaBackbone(config.in_channels, w)
        self.student = AdaBackbone(config.in_channels, w)
        head_bias = self._option("head_bias_init")
        if head_bias is not None:
            for net in (self.teacher, self.student):
                nn.init.constant_(net.head.bias, float(head_bias))
        self.adapters: AdapterBank | None = None
        self.garm: GARM | None = None
        self.presence_t: PresenceHead | None = None
        self.presence_s: PresenceHead | None = None
        self.disc: StyleDiscriminator | None = None
        if self.use_adapters:
            hidden = self._option("adapter_hidden", None)
            self.adapters = AdapterBank(
                w,
                hidden=int(hidden) if hidden is not None else None,
                zero_init=bool(self._option("adapter_zero_init", False)),
            )
            if self.use_garm:
                self.garm = GARM(
                    8 * w,
                    nodes=int(self._option("garm_nodes", 8)),
                    transpose_nodes=self.fix_garm_view,
                    masked_attention=self.fix_garm_adjacency,
                    adj_threshold=float(self._option("adj_threshold", ADJ_THRESHOLD)),
                )
        if self.use_lgrm:
            self.presence_t = PresenceHead(w, LABELS)
            self.presence_s = PresenceHead(w, LABELS)
        if self.use_bbdm:
            self.disc = StyleDiscriminator(8 * w)
        self._disc_optimizer: torch.optim.Optimizer | None = None

    def _option(self, key: str, default: Any = None) -> Any:
        """A declared option's value (its declared default when the config does not set it)."""
        declared = self.declared_options().get(key)
        if declared is None:
            return default
        return declared.check(key, self.config.option(key, declared.default))

    # ----------------------------------------------------------------------------- optimisers
    def stages(self) -> list[Stage]:
        if self.disc is None:
            return [Stage("train", ("main",))]
        return [Stage("train", ("main", "disc"))]

    def configure_optimizers(
        self, lr: float, weight_decay: float
    ) -> dict[str, torch.optim.Optimizer]:
        """``main``: one Adam over teacher, student, adapters, GARM and presence heads; ``disc``:
        the discriminator's Adam (betas 0.9/0.99, no weight decay, the main rate, constant; see
        :meth:`lr_factor`). Under ``recipe=published`` the preset's lr and weight decay are
        ignored for the released 1e-4 and 1e-5."""
        if self.recipe == "published":
            lr, weight_decay = PUBLISHED_LR, PUBLISHED_WEIGHT_DECAY
        disc_ids = {id(p) for p in self.disc.parameters()} if self.disc is not None else set()
        main = [p for p in self.parameters() if id(p) not in disc_ids]
        out = {"main": torch.optim.Adam(main, lr=lr, weight_decay=weight_decay)}
        if self.disc is not None:
            self._disc_optimizer = torch.optim.Adam(
                self.disc.parameters(), lr=lr, betas=DISC_BETAS, weight_decay=0.0
            )
            out["disc"] = self._disc_optimizer
        return out

    def epoch_of(self, ctx: StepContext) -> int:
        """The released epoch index (0 … epochs−1) that step ``ctx.step`` (1-based) falls in."""
        e = (ctx.step - 1) * self.epochs // max(1, ctx.total_steps)
        return min(self.epochs - 1, max(0, e))

    def lr_factor(self, optimizer: str, ctx: StepContext) -> float | None:
        """The discriminator's rate is constant (it is re-created at the base lr every step in
        the released loop; no scheduler touches it). ``main`` follows the loop's poly schedule,
        or under ``recipe=published`` the released PolyLR stepped at the start of each epoch:
        (1 − (e + 1)/epochs)^0.9 in epoch e (so the last epoch runs at 0, as released)."""
        if optimizer == "disc":
            return 1.0
        if self.recipe == "published":
            e = self.epoch_of(ctx)
            return max(0.0, 1.0 - (e + 1) / self.epochs) ** PUBLISHED_POLY_POWER
        return None

    def inference_modules(self) -> Iterable[nn.Module]:
        mods = [self.student, self.adapters, self.garm, self.presence_s]
        return [m for m in mods if m is not None]

    # ----------------------------------------------------------------------------- forward
    def student_forward(
        self, image: Tensor, subset: Subset, garm_trace: dict[str, Tensor] | None = None
    ) -> Features:
        """The student on N×4×D×H×W (absent channels zero): adapters and GARM for non-full
        subsets, the plain shared network for the full one. ``garm_trace`` receives GARM's
        intermediate tensors (see :meth:`GARM.forward`)."""
        adapters = self.adapters.get(subset) if self.adapters is not None else None
        garm = None
        if adapters is not None and self.garm is not None:
            garm = functools.partial(self.garm, trace=garm_trace)
        return self.student(image, adapters, garm)

    def loss_terms(
        self,
        ft: Features,
        fs: Features,
        compartments: Tensor,
        epoch: float,
        disc_inputs: tuple[Tensor, Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """Every loss term of one step, named as in the golden fixture.

        Args:
            ft, fs: teacher and student passes.
            compartments: N×3×D×H×W binary NETC, ED, ET labels.
            epoch: released epoch index of the consistency ramp.
            disc_inputs: the discriminator's (teacher, student) inputs; default the shared
                styles (the fixture feeds stand-ins).

        Returns:
            scalars ``loss_co``, ``total_generator`` (the ``main`` loss), ``disc_total`` (with a
            discriminator) and every part of them; tensors ``dice_unweighted_*`` (N×3),
            ``cls_target``, ``cls_probs_*``, ``reliability_w_*`` (N×3), ``disc_out_*``.
        """
        target = compartments.float()
        prob_t = torch.sigmoid(ft.logits.float())
        prob_s = torch.sigmoid(fs.logits.float())
        dice_t = dice_loss_per_sample(prob_t[:, :LABELS], target)
        dice_s = dice_loss_per_sample(prob_s[:, :LABELS], target)
        terms: dict[str, Tensor] = {
            "dice_unweighted_teacher": dice_t,
            "dice_unweighted_student": dice_s,
        }
        loss_co = prob_t.new_zeros(())
        if self.presence_t is not None and self.presence_s is not None:
            y = presence_targets(target)
            cls_t = torch.sigmoid(self.presence_t(ft.u2).float())
            cls_s = torch.sigmoid(self.presence_s(fs.u2).float())
            w_t, w_s = reliability_weights(cls_t, y), reliability_weights(cls_s, y)
            dice_t, dice_s = dice_t * w_t, dice_s * w_s
            terms.update(
                cls_target=y,
                cls_probs_teacher=cls_t,
                cls_probs_student=cls_s,
                reliability_w_teacher=w_t,
                reliability_w_student=w_s,
                presence_bce_teacher=presence_bce(cls_t, y),
                presence_bce_student=presence_bce(cls_s, y),
            )
        per_label_t, per_label_s = dice_t.mean(0), dice_s.mean(0)
        cons = consistency_terms(prob_t[:, :LABELS], prob_s[:, :LABELS])
        for i, name in enumerate(LABEL_NAMES):
            terms[f"dice_teacher_{name}"] = per_label_t[i]
            terms[f"dice_student_{name}"] = per_label_s[i]
            terms[f"consistency_{name}"] = cons[i]
        lam = consistency_weight(epoch)
        terms.update(
            dice_teacher_sum=per_label_t.sum(),
            dice_student_sum=per_label_s.sum(),
            consistency=cons.sum(),
            consistency_weight=torch.tensor(lam),
        )
        loss_co = (
            W_TEACHER_DICE * terms["dice_teacher_sum"]
            + W_STUDENT_DICE * terms["dice_student_sum"]
            + lam * terms["consistency"]
        )
        if self.disc is not None:
            terms["content"] = content_loss(ft.content, fs.content)
            terms["style_gram"] = style_gram_loss(ft.style, fs.style)
            terms["style_gram_sumsq"] = style_gram_sumsq(ft.style, fs.style).detach()
            loss_co = loss_co + W_CONTENT * terms["content"] + terms["style_gram"]
        if "presence_bce_teacher" in terms:
            loss_co = loss_co + terms["presence_bce_teacher"] + terms["presence_bce_student"]
        terms["loss_co_without_gsm"] = loss_co
        if self.use_gsm:
            if self.fix_gsm:
                terms["gsm"] = gsm_intended(
                    [ft.c3d, ft.style, ft.content], [fs.c3d, fs.style, fs.content]
                )
            else:
                terms["gsm"] = gsm_released(ft.global_style, fs.global_style)
            loss_co = loss_co + terms["gsm"]
        terms["loss_co"] = loss_co
        total = loss_co
        if self.disc is not None:
            d_t, d_s = disc_inputs if disc_inputs is not None else (ft.style, fs.style)
            adv = bce_with_label(self.disc(d_s), TEACHER_LABEL)
            out_t, out_s = self.disc(d_t.detach()), self.disc(d_s.detach())
            terms.update(
                adv_generator=adv,
                adv_generator_weighted=W_ADV * adv,
                disc_out_teacher=out_t,
                disc_out_student=out_s,
                disc_teacher_term=bce_with_label(out_t, TEACHER_LABEL),
                disc_student_term=bce_with_label(out_s, STUDENT_LABEL),
            )
            terms["disc_total"] = terms["disc_teacher_term"] + terms["disc_student_term"]
            total = loss_co + W_ADV * adv
        terms["total_generator"] = total
        return terms

    def training_step(self, batch: Batch, ctx: StepContext) -> dict[str, Any]:
        subset = Subset.from_names(batch["available"])
        ft = self.teacher(batch["image_full"])
        fs = self.student_forward(batch["image"], subset)
        terms = self.loss_terms(ft, fs, batch["compartments"], self.epoch_of(ctx))
        if self._disc_optimizer is not None and not self.fix_disc_adam:
            # The released loop builds a new Adam for the discriminator every iteration.
            self._disc_optimizer.state.clear()
        out: dict[str, Any] = {"main": terms["total_generator"]}
        if "disc_total" in terms:
            out["disc"] = terms["disc_total"]
        logged = (
            "dice_teacher_sum",
            "dice_student_sum",
            "consistency",
            "consistency_weight",
            "content",
            "style_gram",
            "gsm",
            "presence_bce_teacher",
            "presence_bce_student",
            "adv_generator",
        )
        for name in logged:
            if name in terms:
                out[f"log/{name}"] = terms[name].detach()
        return out

    # ----------------------------------------------------------------------------- inference
    @contextlib.contextmanager
    def _released_evaluation(self) -> Iterator[bool]:
        """Inside: the student as the released loops evaluate it (``fix_eval_mode`` off): dropout
        on and BatchNorm on batch statistics (running statistics left untouched). Yields whether
        that mode is active (then volumes must be run one at a time, as the released batch 1)."""
        if self.fix_eval_mode or self.training:
            yield False
            return
        changed: list[tuple[nn.Module, bool]] = []
        for module in self.inference_modules():
            for m in module.modules():
                if isinstance(m, (nn.Dropout, nn.modules.batchnorm._BatchNorm)) and not m.training:
                    changed.append((m, getattr(m, "track_running_stats", False)))
                    m.train()
                    if isinstance(m, nn.modules.batchnorm._BatchNorm):
                        m.track_running_stats = False  # batch statistics, no running update
        try:
            yield True
        finally:
            for m, tracked in changed:
                m.eval()
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.track_running_stats = tracked

    def _window_outputs(self, image: Tensor, subset: Subset) -> Tensor:
        fs = self.student_forward(image, subset)
        labels = torch.sigmoid(fs.logits.float())
        if self.presence_s is None:
            return labels
        logit_map = self.presence_s.logit_map(fs.u2).float()
        if self.gate_scope == "window":
            return presence_gate(labels, torch.sigmoid(logit_map.mean((2, 3, 4))))
        return torch.cat([labels, logit_map], 1)

    def predict_window(self, image: Tensor, available: tuple[str, ...]) -> Tensor:
        """Student only: N×4×D×H×W → N×4×… sigmoid outputs (NETC, ED, ET, untrained
        background), plus, with LGRM and ``gate_scope=volume``, the N×3×… presence-logit map
        (:meth:`PresenceHead.logit_map`; its mean over a volume is the presence logit).
        With ``gate_scope=window`` the labels come already gated on this window."""
        subset = Subset.from_names(available)
        with self._released_evaluation() as one_at_a_time:
            if one_at_a_time:
                return torch.cat(
                    [self._window_outputs(image[i : i + 1], subset) for i in range(len(image))]
                )
            return self._window_outputs(image, subset)

    def postprocess(self, prob: Tensor, available: tuple[str, ...]) -> Tensor:
        """Blended :meth:`predict_window` outputs of whole volumes → WT, TC, ET probabilities.

        The LGRM gate is decided here, on the whole volume: a label is erased everywhere when
        the sigmoid of its presence-logit map's volume mean is ≤ 0.5 (the released head
        average-pools over everything it sees). A 3-channel input is already region
        probabilities (an evaluator that blends :meth:`predict`) and passes unchanged.
        """
        if prob.shape[1] == len(LABEL_NAMES):
            return prob
        labels = prob[:, : LABELS + 1]
        if prob.shape[1] > LABELS + 1:
            presence = torch.sigmoid(prob[:, LABELS + 1 :].float().mean((2, 3, 4)))
            labels = presence_gate(labels, presence)
        return regions_from_compartments(labels[:, :LABELS])

    def predict(self, image: Tensor, available: tuple[str, ...]) -> Tensor:
        """Student only, the input taken as one whole volume (LGRM gate decided on it):
        N×4×D×H×W → N×3 (WT, TC, ET) probabilities."""
        return self.postprocess(self.predict_window(image, available), available)


class AdaMMBase(TeacherStudentKD):
    """AdaMM's components on top of the teacher–student base (flags set by the subclasses)."""

    use_adapters = True
    use_garm = True
    use_gsm = True
    use_lgrm = True
    options: ClassVar[dict[str, Option]] = ADAMM_OPTIONS


@register(
    "adamm",
    family="knowledge-distillation",
    paper=ADAMM_PAPER,
    tags=("teacher-student", "adapters", "gnn", "ablation-base"),
)
class AdaMM(AdaMMBase):
    """AdaMM: KD teacher–student with subset adapters, GARM, BBDM and LGRM, as released.

    Teacher (all four modalities) and student (absent channels zero, adapters chosen by the
    subset code) are the released SMU-Net-style U-Nets trained jointly from scratch with one Adam
    (``main``); the style discriminator has its own Adam (``disc``). Inference uses the student;
    the LGRM presence gate is decided on the whole blended volume. ``variant=faithful``
    reproduces the released code (the golden fixture checks it), ``fixed`` (default) corrects its
    listed defects; see ``docs/methods/adamm.md``.
    """


@register(
    "adamm-no-garm",
    family="knowledge-distillation",
    paper=ADAMM_PAPER + " (ablation w/o GARM)",
    tags=("teacher-student", "adapters", "ablation"),
)
class AdaMMNoGARM(AdaMMBase):
    """AdaMM without GARM: the decoder reads the code-specific bottleneck CF directly."""

    use_garm = False


@register(
    "adamm-no-bbdm",
    family="knowledge-distillation",
    paper=ADAMM_PAPER + " (ablation w/o BBDM)",
    tags=("teacher-student", "adapters", "gnn", "ablation"),
)
class AdaMMNoBBDM(AdaMMBase):
    """AdaMM without BBDM: no content, style-Gram, global-style or adversarial terms (no
    discriminator); the prediction consistency is kept."""

    use_bbdm = False
    use_gsm = False


@register(
    "adamm-no-lgrm",
    family="knowledge-distillation",
    paper=ADAMM_PAPER + " (ablation w/o LGRM)",
    tags=("teacher-student", "adapters", "gnn", "ablation"),
)
class AdaMMNoLGRM(AdaMMBase):
    """AdaMM without LGRM: no presence heads, no gate, unweighted Dice, no presence BCE."""

    use_lgrm = False
