"""The official-code port of AdaMM (Quanato607/AdaMM@f2e1733).

:class:`AdaMMPort` maps the released checkpoint layout onto :class:`~.strategy.AdaMM`'s modules
(:meth:`AdaMMPort.convert_state_dict`) and reproduces a golden fixture of the released code with
those modules (:meth:`AdaMMPort.reproduce`): the teacher and student passes, GARM's internals, the
discriminator, and every loss term, all read from the fixture (seed, batch, spatial size,
availability mask, epoch).

Checkpoint layout (as ``train_adamm_divide.py`` saves it): ``{"model_full": teacher state dict,
"model_missing": student state dict, "d_style": discriminator state dict, ...}``, nested or
flattened with those prefixes, each with or without ``DataParallel``'s ``module.``. Mapping:

- the two ``AdaMMKD`` backbones → ``teacher.*`` / ``student.*`` (``conv1a`` → ``stem``,
  ``conv1b`` → ``enc1``, ``ds1`` → ``down1``, ``conv2a/b`` → ``enc2.0/1``, …, ``conv4a–d`` →
  ``enc4.0–3``, ``up4conva/up4convb`` → ``reduce3/dec3``, …, ``convc/convco`` → ``style/fuse``,
  ``up1conv`` → ``head``); ``conv1a``'s input channels are permuted from the released FLAIR, T1,
  T1ce, T2 order to mmbench's T1, T1ce, T2, FLAIR;
- ``cls_conv1/cls_bn1/cls_conv2`` → ``presence_t`` / ``presence_s`` ``conv1/bn/conv2``;
- the student's ``enc_adapters/dec_adapters/convc_/convco_`` of released key k →
  ``adapters.sets.<code>.enc/dec/style/fuse`` with code = k's bits in canonical order
  (released ``"1010"`` = FLAIR+T1ce → ``"0101"``);
- the student's ``adagem`` → ``garm`` (``contour_proj0`` → ``align_cf`` with ``anchor/sigma`` →
  ``anchors/width_logits``, ``region_proj0`` → ``align_gf``, ``contour_conv.0`` →
  ``cf_node_conv``, ``gcn.weight`` → ``gcn_weight``, ``mdf.gat.attn_layers.0/output_proj`` →
  ``attention.qk/out``, ``mdf.conv0.0/conv1.0`` → ``reproject/merge``, ``mdf.pred`` → ``out``);
- the discriminator's ``0/2/4`` → ``disc.features.0/2/4``, ``6`` → ``disc.logit``.

Dropped because no output depends on them: the teacher's adapters and GARM, the student's
empty-code (``"0000"``) adapter set, and GARM's never-called ``region_conv1/2``, ``e2r``,
``mdf.conv`` and ``mdf.gcn``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from mmbench.errors import CheckpointError
from mmbench.golden import GoldenFixture
from mmbench.methods.adamm.backbone import LABELS
from mmbench.methods.adamm.bbdm import W_CONTENT
from mmbench.methods.adamm.strategy import W_STUDENT_DICE, W_TEACHER_DICE, AdaMM
from mmbench.methods.base import MethodConfig, Strategy
from mmbench.methods.official import OfficialPort, Reproduction, register_official
from mmbench.subsets import MODALITIES, Subset

RELEASED_CHANNELS = ("FLAIR", "T1", "T1ce", "T2")
"""The released input order (``t2f, t1n, t1c, t2w`` in configs/brats.yml)."""
CHECKPOINT_PARTS = {"model_full": "teacher", "model_missing": "student", "d_style": "disc"}

BACKBONE = {
    "conv1a": "stem",
    "conv1b": "enc1",
    "ds1": "down1",
    "conv2a": "enc2.0",
    "conv2b": "enc2.1",
    "ds2": "down2",
    "conv3a": "enc3.0",
    "conv3b": "enc3.1",
    "ds3": "down3",
    "conv4a": "enc4.0",
    "conv4b": "enc4.1",
    "conv4c": "enc4.2",
    "conv4d": "enc4.3",
    "up4conva": "reduce3",
    "up4convb": "dec3",
    "up3conva": "reduce2",
    "up3convb": "dec2",
    "up2conva": "reduce1",
    "up2convb": "dec1",
    "convc": "style",
    "convco": "fuse",
    "up1conv": "head",
}
PRESENCE = {"cls_conv1": "conv1", "cls_bn1": "bn", "cls_conv2": "conv2"}
GARM_PREFIXES = {
    "contour_proj0.anchor": "align_cf.anchors",
    "contour_proj0.sigma": "align_cf.width_logits",
    "region_proj0.anchor": "align_gf.anchors",
    "region_proj0.sigma": "align_gf.width_logits",
    "contour_conv.0.": "cf_node_conv.",
    "gcn.weight": "gcn_weight",
    "mdf.gat.attn_layers.0.": "attention.qk.",
    "mdf.gat.output_proj.": "attention.out.",
    "mdf.conv0.0.": "reproject.",
    "mdf.conv1.0.": "merge.",
    "mdf.pred.": "out.",
}
GARM_UNUSED = ("region_conv1.", "region_conv2.", "e2r.", "mdf.conv.", "mdf.gcn.")
ADAPTER_PARTS = {"enc_adapters": "enc", "dec_adapters": "dec", "convc_": "style", "convco_": "fuse"}
DISC_LAYERS = {"0": "features.0", "2": "features.2", "4": "features.4", "6": "logit"}
UNUSED = object()


def canonical_code(released_key: str, order: tuple[str, ...] = RELEASED_CHANNELS) -> str:
    """A released adapter key (bits in ``order``) as an mmbench subset code (canonical order)."""
    return "".join(released_key[order.index(m)] for m in MODALITIES)


def _strip_module(state: Mapping[str, Any]) -> dict[str, Any]:
    return {k.removeprefix("module."): v for k, v in state.items()}


def _checkpoint_parts(official: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"model_full": sd, "model_missing": sd, "d_style": sd}`` from a nested or flat dict."""
    parts: dict[str, dict[str, Any]] = {}
    for part in CHECKPOINT_PARTS:
        if isinstance(official.get(part), Mapping):
            parts[part] = _strip_module(official[part])
        else:
            prefix = part + "."
            flat = {k[len(prefix) :]: v for k, v in official.items() if k.startswith(prefix)}
            if flat:
                parts[part] = _strip_module(flat)
    known = set(CHECKPOINT_PARTS)
    stray = [k for k in official if k not in known and k.split(".")[0] not in known]
    stray = [k for k in stray if isinstance(official[k], Tensor)]
    if stray or not parts:
        raise CheckpointError(
            "an AdaMM checkpoint holds model_full (teacher), model_missing (student) and d_style "
            f"(discriminator) state dicts; found {', '.join(list(official)[:8]) or 'nothing'}"
        )
    return parts


def _network_key(key: str, role: str, order: tuple[str, ...]) -> str | object:
    """The mmbench key of one released ``AdaMMKD`` key (``role``: teacher or student)."""
    head, _, rest = key.partition(".")
    if head in BACKBONE:
        return f"{role}.{BACKBONE[head]}.{rest}"
    if head in PRESENCE:
        return f"presence_{role[0]}.{PRESENCE[head]}.{rest}"
    if head in ADAPTER_PARTS:
        if role == "teacher":
            return UNUSED
        bits, _, rest = rest.partition(".")
        if "1" not in bits:
            return UNUSED  # the unreachable empty code
        return f"adapters.sets.{canonical_code(bits, order)}.{ADAPTER_PARTS[head]}.{rest}"
    if head == "adagem":
        if role == "teacher" or rest.startswith(GARM_UNUSED):
            return UNUSED
        for prefix, target in GARM_PREFIXES.items():
            if rest.startswith(prefix):
                return "garm." + target + rest[len(prefix) :]
    raise KeyError(key)


@register_official("adamm")
class AdaMMPort(OfficialPort):
    """AdaMM ↔ Quanato607/AdaMM@f2e1733 (see the module docstring)."""

    source = "Quanato607/AdaMM@f2e1733f6e751bf686aad6d60208faf5ec0ffdde"
    channel_order: tuple[str, ...] = RELEASED_CHANNELS

    def convert_state_dict(
        self, official: Mapping[str, Tensor], strategy: Strategy
    ) -> dict[str, Tensor]:
        """mmbench-keyed tensors from a released checkpoint (see the module docstring).

        Raises:
            CheckpointError: the checkpoint is not AdaMM's layout, or holds keys the mapping does
                not know (listed).
        """
        order = tuple(self.channel_order)
        perm = [order.index(m) for m in MODALITIES]
        out: dict[str, Tensor] = {}
        unknown: list[str] = []
        for part, state in _checkpoint_parts(official).items():
            role = CHECKPOINT_PARTS[part]
            for key, value in state.items():
                try:
                    if role == "disc":
                        layer, _, rest = key.partition(".")
                        target: str | object = f"disc.{DISC_LAYERS[layer]}.{rest}"
                    else:
                        target = _network_key(key, role, order)
                except KeyError:
                    unknown.append(f"{part}.{key}")
                    continue
                if target is UNUSED:
                    continue
                assert isinstance(target, str)
                if getattr(strategy, target.split(".")[0], None) is None:
                    continue  # a module this strategy does not have (an ablation)
                tensor = torch.as_tensor(value)
                if key == "conv1a.weight":
                    tensor = tensor[:, perm]
                out[target] = tensor
        if unknown:
            more = f" (+{len(unknown) - 8} more)" if len(unknown) > 8 else ""
            raise CheckpointError(
                f"{len(unknown)} keys of the AdaMM checkpoint are not in the released layout: "
                f"{', '.join(unknown[:8])}{more}"
            )
        return out

    # ------------------------------------------------------------------------------ fixture
    def reproduce(self, fixture: GoldenFixture) -> Reproduction:
        spec = fixture.spec
        self.channel_order = tuple(spec.get("channel_order") or RELEASED_CHANNELS)
        order = self.channel_order
        perm = [order.index(m) for m in MODALITIES]
        _check_loss_weights(spec.get("config") or {})
        student_sd = fixture.state_dict("student")
        teacher_sd = fixture.state_dict("teacher")
        disc_sd = fixture.state_dict("discriminator")
        width = int(student_sd["conv1a.weight"].shape[0])
        options: dict[str, Any] = {"variant": "faithful"}
        if "epochs_total" in spec:
            options["epochs"] = int(spec["epochs_total"])
        hidden = [v.shape[0] for k, v in student_sd.items() if k.endswith(".0.down.weight")]
        if hidden and int(hidden[0]) != 4 * width:
            options["adapter_hidden"] = int(hidden[0])
        anchors = student_sd.get("adagem.contour_proj0.anchor")
        if anchors is not None:
            options["garm_nodes"] = int(anchors.shape[0])
        image = fixture.input("image")[:, perm]
        image_student = fixture.input("image_student")[:, perm]
        spatial = tuple(int(s) for s in image.shape[2:])
        strategy = AdaMM(MethodConfig(width=width, patch_size=spatial, options=options))
        self.load_official(
            strategy, {"model_full": teacher_sd, "model_missing": student_sd, "d_style": disc_sd}
        )
        strategy.to(image.dtype).eval()  # the fixture's dtype (float32 for the released runs)
        mask = [bool(b) for b in fixture.input("mask")]
        subset = Subset.from_names(m for m, present in zip(order, mask, strict=True) if present)
        # The label map is stored with the expected values (fixture.json's target_layout).
        labels = torch.as_tensor(fixture.expected["target"]).long()
        compartments = torch.stack([labels == k for k in range(1, LABELS + 1)], 1).float()
        compartments = compartments.to(image.dtype)
        disc_in = (fixture.input("disc_in_teacher"), fixture.input("disc_in_student"))
        trace: dict[str, Tensor] = {}
        with torch.no_grad():
            ft = strategy.teacher(image)
            fs = strategy.student_forward(image_student, subset, garm_trace=trace)
            terms = strategy.loss_terms(
                ft, fs, compartments, float(spec.get("epoch", 0)), disc_inputs=disc_in
            )
            disc_feat = strategy.disc.features(disc_in[0]) if strategy.disc is not None else None
        outputs: dict[str, Any] = {}
        for role, f in (("teacher", ft), ("student", fs)):
            outputs.update(
                {
                    f"{role}_seg": torch.sigmoid(f.logits),
                    f"{role}_logit": f.logits,
                    f"{role}_cls_probs": terms.get(f"cls_probs_{role}"),
                    f"{role}_style": f.style,
                    f"{role}_content": f.content,
                    f"{role}_global_Gs": f.global_style,
                    f"{role}_u2": f.u2,
                }
            )
        outputs.update({f"garm_{name}": value for name, value in trace.items()})
        outputs.update(garm_cf_in=fs.cf, garm_gf_in=fs.gf, garm_out=fs.bottleneck)
        outputs["disc_feat_teacher"] = disc_feat
        for name in (
            "disc_out_teacher",
            "disc_out_student",
            "cls_target",
            "reliability_w_teacher",
            "reliability_w_student",
            "dice_unweighted_teacher",
            "dice_unweighted_student",
        ):
            outputs[name] = terms.get(name)
        losses = {name: float(value) for name, value in terms.items() if value.ndim == 0}
        return Reproduction(outputs=outputs, losses=losses)


def _check_loss_weights(config: Mapping[str, Any]) -> None:
    """The fixture's released config must use the loss weights mmbench implements."""
    expected = {"weight_mispath": W_STUDENT_DICE, "weight_content": W_CONTENT}
    for key, value in expected.items():
        if key in config and abs(float(config[key]) - value) > 1e-12:
            raise ValueError(f"fixture config {key}={config[key]}, mmbench implements {value}")
    if abs(1 - W_STUDENT_DICE - W_TEACHER_DICE) > 1e-12:
        raise AssertionError("teacher and student Dice weights must sum to 1, as released")
