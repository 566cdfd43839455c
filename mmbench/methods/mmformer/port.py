"""The official-code port of ``mmformer`` (YaoZhang93/mmFormer @b18663a): the mapping of the
official ``mmformer.Model`` state dict onto :class:`~mmbench.methods.mmformer.MMFormer`, and the
reproduction of a golden fixture by mmbench's own modules."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from mmbench.golden import GoldenFixture
from mmbench.methods.base import MethodConfig, Strategy
from mmbench.methods.mmformer.losses import mmformer_losses, official_loss_values
from mmbench.methods.mmformer.network import LEVELS, NUM_CLASSES, SLOT_ORDER, MMFormerDims
from mmbench.methods.mmformer.strategy import MMFormer
from mmbench.methods.official import OfficialPort, Reproduction, register_official

OFFICIAL_NAMES: dict[str, str] = {"FLAIR": "flair", "T1ce": "t1ce", "T1": "t1", "T2": "t2"}
"""The official attribute prefix of each modality (``flair_encoder``, ``flair_pos``, …)."""


def _transformer_modules(official: str, ours: str, depth: int) -> dict[str, str]:
    out: dict[str, str] = {}
    for d in range(depth):
        attn, ffn = f"{official}.cross_attention_list.{d}.fn", f"{official}.cross_ffn_list.{d}.fn"
        layer = f"{ours}.layers.{d}"
        out[f"{attn}.norm"] = f"{layer}.attn_norm"
        out[f"{attn}.fn.qkv"] = f"{layer}.attn.qkv"
        out[f"{attn}.fn.proj"] = f"{layer}.attn.proj"
        out[f"{ffn}.norm"] = f"{layer}.mlp_norm"
        out[f"{ffn}.fn.net.0"] = f"{layer}.mlp.linear1"
        out[f"{ffn}.fn.net.3"] = f"{layer}.mlp.linear2"
    return out


def _decoder_levels(official: str, ours: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for k in range(1, LEVELS):
        out[f"{official}.d{k}_c1.conv"] = f"{ours}.up.{k - 1}.conv"
        out[f"{official}.d{k}_c2.conv"] = f"{ours}.merge.{k - 1}.conv"
        out[f"{official}.d{k}_out.conv"] = f"{ours}.out.{k - 1}.conv"
    return out


def module_table(dims: MMFormerDims) -> dict[str, str]:
    """Official module path → mmbench module path, for every module holding parameters except
    the positional embeddings (official ``<m>_pos``, stacked into ``net.position``) and the
    unused ``<m>_decode_conv``. Parameter names (``weight``, ``bias``) are the same on both
    sides."""
    table: dict[str, str] = {}
    for slot, modality in enumerate(SLOT_ORDER):
        m = OFFICIAL_NAMES[modality]
        enc = f"net.encoders.{slot}"
        table[f"{m}_encoder.e1_c1"] = f"{enc}.stem"
        for k in range(1, LEVELS + 1):
            if k > 1:
                table[f"{m}_encoder.e{k}_c1.conv"] = f"{enc}.down.{k - 2}.conv"
            table[f"{m}_encoder.e{k}_c2.conv"] = f"{enc}.refine.{k - 1}.0.conv"
            table[f"{m}_encoder.e{k}_c3.conv"] = f"{enc}.refine.{k - 1}.1.conv"
        table[f"{m}_encode_conv"] = f"net.intra.{slot}.embed"
        table.update(
            _transformer_modules(f"{m}_transformer", f"net.intra.{slot}.transformer", dims.depth)
        )
    table.update(
        _transformer_modules("multimodal_transformer", "net.inter.transformer", dims.depth)
    )
    table["multimodal_decode_conv"] = "net.inter.project"
    table.update(_decoder_levels("decoder_fuse", "net.decoder"))
    table["decoder_fuse.seg_layer"] = "net.decoder.heads.0"
    for k in range(1, LEVELS):
        table[f"decoder_fuse.seg_d{k}"] = f"net.decoder.heads.{k}"
    for k in range(1, LEVELS + 1):
        for j in range(3):
            table[f"decoder_fuse.RFM{k}.fusion_layer.{j}.conv"] = (
                f"net.decoder.skip_fusion.{k - 1}.{j}.conv"
            )
    table.update(_decoder_levels("decoder_sep", "sep_decoder"))
    table["decoder_sep.seg_layer"] = "sep_decoder.head"
    return table


def unused_official_key(key: str) -> bool:
    """Official parameters that no forward pass reads (``<m>_decode_conv``)."""
    return any(key.startswith(f"{m}_decode_conv.") for m in OFFICIAL_NAMES.values())


def official_to_mmbench(official: Mapping[str, Tensor], dims: MMFormerDims) -> dict[str, Tensor]:
    """Rename an official state dict (no ``module.`` prefix) to mmbench keys.

    Keys that fit nowhere are kept as they are, so that a strict load reports them; the
    positional embeddings are stacked only when all four are present.
    """
    table = module_table(dims)
    pos_keys = {f"{OFFICIAL_NAMES[m]}_pos": slot for slot, m in enumerate(SLOT_ORDER)}
    out: dict[str, Tensor] = {}
    positions: dict[int, Tensor] = {}
    for key, value in official.items():
        if key in pos_keys:
            positions[pos_keys[key]] = value
            continue
        if unused_official_key(key):
            continue
        module, _, param = key.rpartition(".")
        out[f"{table[module]}.{param}" if module in table else key] = value
    if len(positions) == len(SLOT_ORDER):
        out["net.position"] = torch.cat(
            [positions[s].reshape(1, *positions[s].shape[-2:]) for s in range(len(SLOT_ORDER))]
        )
    return out


def mmbench_to_official(state: Mapping[str, Tensor], dims: MMFormerDims) -> dict[str, Tensor]:
    """The inverse of :func:`official_to_mmbench` (every official key but the unused
    ``<m>_decode_conv``), e.g. to run mmbench-trained weights in the official code."""
    inverse = {ours: official for official, ours in module_table(dims).items()}
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key == "net.position":
            for slot, modality in enumerate(SLOT_ORDER):
                out[f"{OFFICIAL_NAMES[modality]}_pos"] = value[slot : slot + 1]
            continue
        module, _, param = key.rpartition(".")
        out[f"{inverse[module]}.{param}" if module in inverse else key] = value
    return out


def dims_from_official(official: Mapping[str, Tensor], constants: Mapping[str, Any]) -> dict:
    """Sizes of an official checkpoint: basic width, token width, MLP width and transformer
    depth from the tensors' shapes, heads from the module constants (default 8)."""
    basic = int(official["flair_encoder.e1_c1.weight"].shape[0])
    transformer = int(official["flair_pos"].shape[-1])
    prefix = "multimodal_transformer.cross_attention_list."
    depth = len({k[len(prefix) :].split(".")[0] for k in official if k.startswith(prefix)})
    mlp = int(official["multimodal_transformer.cross_ffn_list.0.fn.fn.net.0.weight"].shape[0])
    classes = int(official["decoder_fuse.seg_layer.weight"].shape[0])
    if classes != NUM_CLASSES:
        raise ValueError(
            f"mmformer predicts {NUM_CLASSES} classes (BraTS 2018-2021); the official weights "
            f"have {classes} (BraTS 2015's 5-class layout is not supported)"
        )
    return {
        "basic": basic,
        "transformer": transformer,
        "mlp": mlp,
        "depth": depth,
        "heads": int(constants.get("num_heads", 8)),
    }


def strategy_for_official(
    official: Mapping[str, Tensor],
    patch_size: tuple[int, int, int],
    constants: Mapping[str, Any] | None = None,
) -> MMFormer:
    """An :class:`MMFormer` whose modules fit ``official`` at input size ``patch_size``."""
    sizes = dims_from_official(official, constants or {})
    config = MethodConfig(
        width=2 * sizes["basic"],
        patch_size=patch_size,
        options={
            "transformer_width": sizes["transformer"],
            "mlp_width": sizes["mlp"],
            "heads": sizes["heads"],
            "transformer_depth": sizes["depth"],
        },
    )
    return MMFormer(config)


@register_official("mmformer")
class MMFormerPort(OfficialPort):
    """``reproduce`` rebuilds the fixture's official weights, loads them into
    :class:`MMFormer` through :meth:`convert_state_dict`, runs the fixture's input and mask
    through the strategy's own modules (``eval``, no gradient, auxiliary outputs on) and
    returns every stored output and loss under the fixture's names."""

    source = "YaoZhang93/mmFormer@b18663adbfd0323656083e0470420c8c715c1782"

    def convert_state_dict(
        self, official: Mapping[str, Tensor], strategy: Strategy
    ) -> dict[str, Tensor]:
        if not isinstance(strategy, MMFormer):
            raise TypeError(f"the mmformer port converts into MMFormer, not {type(strategy)}")
        return official_to_mmbench(official, strategy.dims)

    def reproduce(self, fixture: GoldenFixture) -> Reproduction:
        spec = fixture.spec
        if spec.get("mode", "eval") != "eval":
            raise ValueError(f"mmformer port reproduces eval-mode fixtures, not {spec['mode']!r}")
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
            out, sep = strategy.forward_all(x, mask, auxiliary=True)
            fuse, seps, deep = strategy.probabilities(out, sep)
            outputs["fuse_pred"] = fuse
            for modality, prob in zip(SLOT_ORDER, seps):
                outputs[f"sep_pred_{OFFICIAL_NAMES[modality]}"] = prob
            for j, (prob, logits) in enumerate(zip(deep, out.deep_logits), start=1):
                outputs[f"ds_pred{j}"] = prob
                outputs[f"ds_logits{j}"] = logits
            outputs["enc_x5"] = out.encoder_bottleneck()
            outputs["intra_tokens"] = out.intra_tokens
            outputs["inter_tokens"] = out.inter_tokens
            outputs["inter_x5"] = out.inter_volume
            if "target" in spec.get("inputs", {}):
                labels = fixture.input("target").long()
                classes = torch.arange(strategy.dims.num_classes).reshape(1, -1, 1, 1, 1)
                target = (labels.unsqueeze(1) == classes).float()
                terms = mmformer_losses(fuse, seps, deep, target)
                names = [OFFICIAL_NAMES[m] for m in SLOT_ORDER]
                losses.update(official_loss_values(terms, names))
        return Reproduction(outputs=outputs, losses=losses)


__all__ = [
    "MMFormerPort",
    "OFFICIAL_NAMES",
    "dims_from_official",
    "mmbench_to_official",
    "module_table",
    "official_to_mmbench",
    "strategy_for_official",
]
