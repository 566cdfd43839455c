"""The official-code port of ``m2ftrans`` (Jun-Jie-Shi/M2FTrans @03a0b28, ``M2FTrans_v1``): the
mapping of the official ``fusiontrans.Model`` state dict onto
:class:`~mmbench.methods.m2ftrans.M2FTrans`, and the reproduction of a golden fixture by
mmbench's own modules."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from mmbench.golden import GoldenFixture
from mmbench.methods.base import MethodConfig, Strategy
from mmbench.methods.m2ftrans.strategy import M2FTrans
from mmbench.methods.mmformer.losses import mmformer_losses, official_loss_values
from mmbench.methods.mmformer.network import LEVELS, NUM_CLASSES, SLOT_ORDER
from mmbench.methods.mmformer.port import OFFICIAL_NAMES, _transformer_modules
from mmbench.methods.official import OfficialPort, Reproduction, register_official

TRANSFORMER = "Bottleneck.trans_bottle"
CROSS_MODULES = {"CT5": "net.decoder.cross.0", "CT4": "net.decoder.cross.1"}
"""Official cross-token modules → mmbench (levels 4 and 3)."""


def _post_norm_levels(official: str, ours: str, levels: int) -> dict[str, str]:
    out: dict[str, str] = {}
    for k in range(1, levels + 1):
        if k < LEVELS:
            out[f"{official}.d{k}_c1"] = f"{ours}.up.{k - 1}"
        out[f"{official}.d{k}_c2"] = f"{ours}.merge.{k - 1}"
        out[f"{official}.d{k}_out"] = f"{ours}.out.{k - 1}"
    out[f"{official}.seg_layer"] = f"{ours}.head"
    return out


def prefix_table(cross_layers: int = 2, depth: int = 3) -> dict[str, str]:
    """Official module prefix → mmbench module prefix. A key is renamed by the longest
    official prefix it starts with (at a ``.`` boundary); the rest of the key (sub-module and
    parameter names) is the same on both sides."""
    table: dict[str, str] = {"pos": "net.position", "fusion": "net.fusion"}
    for slot, modality in enumerate(SLOT_ORDER):
        m, enc = OFFICIAL_NAMES[modality], f"net.encoders.{slot}"
        for k in range(1, LEVELS + 1):
            first = f"{enc}.stem" if k == 1 else f"{enc}.down.{k - 2}"
            table[f"{m}_encoder.e{k}_c1"] = first
            table[f"{m}_encoder.e{k}_c2"] = f"{enc}.refine.{k - 1}.0"
            table[f"{m}_encoder.e{k}_c3"] = f"{enc}.refine.{k - 1}.1"
    table.update(_transformer_modules(TRANSFORMER, "net.transformer", depth))
    table.update(_post_norm_levels("decoder_fusion", "net.decoder", LEVELS))
    for official, ours in CROSS_MODULES.items():
        for i in range(cross_layers):
            src, dst = f"decoder_fusion.{official}.layers.{i}", f"{ours}.layers.{i}"
            table[src] = dst
            for slot, modality in enumerate(SLOT_ORDER):
                m = OFFICIAL_NAMES[modality]
                for kind in ("key", "value"):
                    ours_map = f"{dst}.cross_attn.{kind}_maps.{slot}"
                    table[f"{src}.cross_attn.{kind}_map_{m}"] = ours_map
    for k in range(1, LEVELS - 1):
        table[f"decoder_fusion.RFM{k}.fusion_layer"] = f"net.decoder.skip_fusion.{k - 1}"
    for k in range(1, LEVELS + 1):
        table[f"decoder_fusion.prm_fusion{k}.prm_layer"] = f"deep_heads.{k - 1}"
    table.update(_post_norm_levels("decoder_sep", "sep_decoder", LEVELS - 1))
    return table


def _rename(key: str, table: Mapping[str, str]) -> str:
    parts = key.split(".")
    for cut in range(len(parts), 0, -1):
        head = ".".join(parts[:cut])
        if head in table:
            return ".".join([table[head], *parts[cut:]])
    return key


def official_to_mmbench(
    official: Mapping[str, Tensor], cross_layers: int = 2, depth: int = 3
) -> dict[str, Tensor]:
    """Rename an official state dict (no ``module.`` prefix) to mmbench keys; keys that fit
    nowhere are kept as they are, so that a strict load reports them."""
    table = prefix_table(cross_layers, depth)
    return {_rename(k, table): v for k, v in official.items()}


def mmbench_to_official(
    state: Mapping[str, Tensor], cross_layers: int = 2, depth: int = 3
) -> dict[str, Tensor]:
    """The inverse of :func:`official_to_mmbench`, e.g. to run mmbench-trained weights in the
    official code."""
    inverse = {ours: official for official, ours in prefix_table(cross_layers, depth).items()}
    return {_rename(k, inverse): v for k, v in state.items()}


def _count(official: Mapping[str, Tensor], prefix: str) -> int:
    return len({k[len(prefix) :].split(".")[0] for k in official if k.startswith(prefix)})


def dims_from_official(official: Mapping[str, Tensor], constants: Mapping[str, Any]) -> dict:
    """Sizes of an official checkpoint (from the tensors' shapes; heads from the module
    constants, default 8)."""
    classes = int(official["decoder_fusion.seg_layer.weight"].shape[0])
    if classes != NUM_CLASSES:
        raise ValueError(
            f"m2ftrans predicts {NUM_CLASSES} classes (BraTS 2018-2021); the official weights "
            f"have {classes}"
        )
    return {
        "basic": int(official["flair_encoder.e1_c1.conv.weight"].shape[0]),
        "mlp": int(official[f"{TRANSFORMER}.cross_ffn_list.0.fn.fn.net.0.weight"].shape[0]),
        "depth": _count(official, f"{TRANSFORMER}.cross_attention_list."),
        "heads": int(constants.get("num_heads", 8)),
        "prm": int(official["decoder_fusion.prm_fusion1.prm_layer.0.conv.weight"].shape[0]),
        "cross_layers": _count(official, "decoder_fusion.CT5.layers."),
    }


def strategy_for_official(
    official: Mapping[str, Tensor],
    patch_size: tuple[int, int, int],
    constants: Mapping[str, Any] | None = None,
) -> M2FTrans:
    """An :class:`M2FTrans` whose modules fit ``official`` at input size ``patch_size``.

    Raises:
        ValueError: the checkpoint's deep-supervision width or cross-token depth is not the
            one mmbench builds for its basic width (official: 16 and 2 at basic 16).
    """
    sizes = dims_from_official(official, constants or {})
    config = MethodConfig(
        width=sizes["basic"],
        patch_size=patch_size,
        options={
            "mlp_width": sizes["mlp"],
            "heads": sizes["heads"],
            "transformer_depth": sizes["depth"],
        },
    )
    strategy = M2FTrans(config)
    for key in ("prm", "cross_layers"):
        if getattr(strategy.dims, key) != sizes[key]:
            raise ValueError(
                f"official m2ftrans weights have {key} = {sizes[key]}; mmbench builds "
                f"{getattr(strategy.dims, key)} at basic width {sizes['basic']}"
            )
    return strategy


@register_official("m2ftrans")
class M2FTransPort(OfficialPort):
    """``reproduce`` rebuilds the fixture's official weights, loads them into
    :class:`M2FTrans` through :meth:`convert_state_dict`, runs the fixture's input and mask
    through the strategy's own modules (``eval``, no gradient, auxiliary outputs on) and
    returns every stored output and loss under the fixture's names."""

    source = "Jun-Jie-Shi/M2FTrans@03a0b28ae03ad1a7dea5fb874c7b47c1439caa34"

    def convert_state_dict(
        self, official: Mapping[str, Tensor], strategy: Strategy
    ) -> dict[str, Tensor]:
        if not isinstance(strategy, M2FTrans):
            raise TypeError(f"the m2ftrans port converts into M2FTrans, not {type(strategy)}")
        return official_to_mmbench(official, strategy.dims.cross_layers, strategy.dims.depth)

    def reproduce(self, fixture: GoldenFixture) -> Reproduction:
        spec = fixture.spec
        if spec.get("mode", "eval") != "eval":
            raise ValueError(f"m2ftrans port reproduces eval-mode fixtures, not {spec['mode']!r}")
        official = fixture.state_dict()
        order = list(spec.get("channel_order", SLOT_ORDER))
        perm = [order.index(m) for m in SLOT_ORDER]
        x = fixture.input("x").float()[:, perm]
        mask = torch.as_tensor(fixture.input("mask"), dtype=torch.bool).reshape(x.shape[0], -1)
        mask = mask[:, perm]
        strategy = strategy_for_official(
            official, tuple(int(s) for s in x.shape[-3:]), spec.get("module_constants", {})
        )
        self.load_official(strategy, official)
        strategy.eval()
        outputs: dict[str, Tensor] = {}
        losses: dict[str, float] = {}
        with torch.no_grad():
            out, sep, deep_logits = strategy.forward_all(x, mask, auxiliary=True)
            fuse, seps, deep = strategy.probabilities(out, sep, deep_logits)
            outputs["fuse_pred"] = fuse
            for modality, prob in zip(SLOT_ORDER, seps):
                outputs[f"sep_pred_{OFFICIAL_NAMES[modality]}"] = prob
            for j, (prob, logits) in enumerate(zip(deep, deep_logits or []), start=1):
                outputs[f"ds_pred{j}"] = prob
                outputs[f"ds_logits{j}"] = logits
            outputs["enc_x5"] = out.encoder_bottleneck()
            outputs["bottleneck_tokens"] = out.tokens
            outputs["attn0_weights"] = out.weights
            outputs["ct5_out"], outputs["ct4_out"] = out.cross
            if "target" in spec.get("inputs", {}):
                labels = fixture.input("target").long()
                classes = torch.arange(strategy.dims.num_classes).reshape(1, -1, 1, 1, 1)
                target = (labels.unsqueeze(1) == classes).float()
                terms = mmformer_losses(fuse, seps, deep, target)
                names = [OFFICIAL_NAMES[m] for m in SLOT_ORDER]
                losses.update(official_loss_values(terms, names))
        return Reproduction(outputs=outputs, losses=losses)


__all__ = [
    "M2FTransPort",
    "dims_from_official",
    "mmbench_to_official",
    "official_to_mmbench",
    "prefix_table",
    "strategy_for_official",
]
