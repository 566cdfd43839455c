"""The official-code port of ``shaspec`` (billhhh/ShaSpec @081fe7a): the mapping of the official
``DualNet_SS`` state dict onto :class:`~mmbench.methods.shaspec.ShaSpec`, and the reproduction
of a golden fixture by mmbench's own modules (in the fixture's dtype, float64 for ShaSpec)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from mmbench.golden import GoldenFixture
from mmbench.methods.base import MethodConfig, Strategy
from mmbench.methods.official import OfficialPort, Reproduction, register_official
from mmbench.methods.shaspec.network import ASPP_CHANNELS, BLOCKS, SLOT_ORDER
from mmbench.methods.shaspec.strategy import OFFICIAL_FROM_REGIONS, ShaSpec

OFFICIAL_ENCODERS: dict[str, str] = {
    "shared_enc": "net.shared_encoder",
    "flair_enc": f"net.specific_encoders.{SLOT_ORDER.index('FLAIR')}",
    "t1_enc": f"net.specific_encoders.{SLOT_ORDER.index('T1')}",
    "t1ce_enc": f"net.specific_encoders.{SLOT_ORDER.index('T1ce')}",
    "t2_enc": f"net.specific_encoders.{SLOT_ORDER.index('T2')}",
}
"""Official encoder attribute → mmbench module."""


def _conv_norm(official: str, ours: str) -> dict[str, str]:
    """An official ``nn.Sequential(conv, norm, act)`` → :class:`ConvNormAct`."""
    return {f"{official}.0": f"{ours}.conv", f"{official}.1": f"{ours}.norm"}


def _encoder_modules(official: str, ours: str) -> dict[str, str]:
    table = {
        f"{official}.backbone.conv1": f"{ours}.backbone.stem_conv",
        f"{official}.backbone.norm1": f"{ours}.backbone.stem_norm",
    }
    for i, blocks in enumerate(BLOCKS):
        for j in range(blocks):
            src, dst = f"{official}.backbone.layer{i + 1}.{j}", f"{ours}.backbone.stages.{i}.{j}"
            for part in ("conv1", "norm1", "conv2", "norm2", "conv3", "norm3"):
                table[f"{src}.{part}"] = f"{dst}.{part}"
            if j == 0:
                table[f"{src}.downsample.0"] = f"{dst}.shortcut_conv"
                table[f"{src}.downsample.1"] = f"{dst}.shortcut_norm"
    table.update(_conv_norm(f"{official}.asppreduce", f"{ours}.reduce"))
    table.update(_conv_norm(f"{official}.aspp.branch1", f"{ours}.aspp.point"))
    for d in range(3):
        table.update(_conv_norm(f"{official}.aspp.branch{d + 2}", f"{ours}.aspp.dilated.{d}"))
    table[f"{official}.aspp.branch5_conv"] = f"{ours}.aspp.pool.conv"
    table[f"{official}.aspp.branch5_norm"] = f"{ours}.aspp.pool.norm"
    table.update(_conv_norm(f"{official}.aspp.conv_cat", f"{ours}.aspp.merge"))
    return table


def module_table() -> dict[str, str]:
    """Official module path → mmbench module path, for every module holding parameters
    (parameter names ``weight``, ``bias`` are the same on both sides)."""
    table: dict[str, str] = {}
    for official, ours in OFFICIAL_ENCODERS.items():
        table.update(_encoder_modules(official, ours))
    for k in range(4):
        table.update(_conv_norm(f"shared_dec.shortcut_conv{k}", f"net.decoder.skip.{k}"))
        table[f"shared_dec.transposeconv_stage{k}"] = f"net.decoder.up.{k}"
        for part in ("conv1", "norm1", "conv2", "norm2"):
            table[f"shared_dec.stage{k}_de.{part}"] = f"net.decoder.refine.{k}.{part}"
    table["shared_dec.cls_conv.0"] = "net.decoder.head"
    table["compos_layer.conv"] = "net.composition.conv"
    table["dom_classifier"] = "domain_head"
    return table


def _rename(state: Mapping[str, Tensor], table: Mapping[str, str]) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        module, _, param = key.rpartition(".")
        out[f"{table[module]}.{param}" if module in table else key] = value
    return out


def official_to_mmbench(official: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename an official state dict (no ``module.`` prefix) to mmbench keys; keys that fit
    nowhere are kept as they are, so that a strict load reports them."""
    return _rename(official, module_table())


def mmbench_to_official(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The inverse of :func:`official_to_mmbench` (e.g. to run mmbench weights officially)."""
    return _rename(state, {ours: off for off, ours in module_table().items()})


def scale_from_official(official: Mapping[str, Tensor]) -> float:
    """The channel multiplier of an official-layout state dict (ASPP width / 256)."""
    return int(official["dom_classifier.weight"].shape[1]) / ASPP_CHANNELS


def strategy_for_official(
    official: Mapping[str, Tensor], patch_size: tuple[int, int, int] = (80, 160, 160)
) -> ShaSpec:
    """A :class:`ShaSpec` whose modules fit ``official`` (official width → width 16)."""
    scale = scale_from_official(official)
    config = MethodConfig(width=16, patch_size=patch_size, options={"channel_scale": scale})
    return ShaSpec(config)


@register_official("shaspec")
class ShaSpecPort(OfficialPort):
    """``reproduce`` rebuilds the fixture's official weights, loads them into :class:`ShaSpec`
    through :meth:`convert_state_dict`, runs the fixture's input, mode string and target
    through the strategy's own modules in the fixture's dtype (``eval``, no gradient) and
    returns every stored output and loss under the fixture's names."""

    source = "billhhh/ShaSpec@081fe7a1e40d6bbc0736dc93e779a0a5a439d091"

    def convert_state_dict(
        self, official: Mapping[str, Tensor], strategy: Strategy
    ) -> dict[str, Tensor]:
        if not isinstance(strategy, ShaSpec):
            raise TypeError(f"the shaspec port converts into ShaSpec, not {type(strategy)}")
        return official_to_mmbench(official)

    def reproduce(self, fixture: GoldenFixture) -> Reproduction:
        spec = fixture.spec
        if spec.get("mode", "eval") != "eval":
            raise ValueError(f"shaspec port reproduces eval-mode fixtures, not {spec['mode']!r}")
        dtype = torch.float64 if spec.get("dtype", "float32") == "float64" else torch.float32
        official = fixture.state_dict()
        order = list(spec.get("channel_order", SLOT_ORDER))
        image = fixture.input("image")
        x = image[:, [order.index(m) for m in SLOT_ORDER]].to(dtype)
        mode = [int(v) for v in str(fixture.input("mode")).split(",")]
        slots = [SLOT_ORDER.index(order[m]) for m in mode]
        strategy = strategy_for_official(official, tuple(int(s) for s in x.shape[-3:]))
        self.load_official(strategy, official)
        strategy.to(dtype).eval()
        # The official forward zeroes the missing channels itself.
        keep = torch.zeros(len(SLOT_ORDER), dtype=dtype)
        keep[slots] = 1
        x = x * keep.reshape(1, -1, 1, 1, 1)
        available = sorted(slots)
        donor = slots[0] if strategy.donor == "first" else None
        outputs: dict[str, Tensor] = {}
        losses: dict[str, float] = {}
        with torch.no_grad():
            out = strategy.forward_all(x, available, donor)
            n, k = out.shared.shape[:2]
            outputs["seg_logits"] = out.logits
            outputs["seg_prob"] = torch.sigmoid(out.logits)
            outputs["shared_ft"] = out.shared.flatten(0, 1)
            outputs["shared_gft"] = out.shared_pooled.flatten(0, 1).reshape(n * k, -1, 1, 1, 1)
            specific = torch.stack([f for f in out.specific if f is not None], dim=1)
            outputs["specific_ft"] = specific.flatten(0, 1)
            pooled = torch.stack([p for p in out.specific_pooled if p is not None], dim=1)
            outputs["specific_gft"] = pooled.flatten(0, 1).reshape(n * k, -1, 1, 1, 1)
            outputs["generated_ft"] = out.generated
            outputs["fused_ft"] = out.fused
            outputs["domain_logits"] = strategy.domain_logits(out).flatten(0, 1)
            names = [
                "shared_conv1",
                "shared_layer1",
                "shared_layer2",
                "shared_layer3",
                "shared_layer4",
            ]
            for name, layer in zip(names, out.shared_layers):
                outputs[name] = layer.reshape(n * k, -1, *layer.shape[2:])
            outputs["decoder_stage0"] = out.decoder_last
            if "target" in spec.get("inputs", {}):
                labels = fixture.input("target").long()
                regions = torch.stack(
                    [labels > 0, (labels == 1) | (labels == 3), labels == 3], dim=1
                ).to(dtype)  # WT, TC, ET of mmbench's labels
                terms = strategy.losses(out, regions)
                losses = {
                    "seg_dice": float(terms.dice),
                    "seg_bce": float(terms.bce),
                    "shared_l1": float(terms.shared_l1),
                    "domain_ce": float(terms.domain),
                    "total": float(terms.total),
                }
        return Reproduction(outputs=outputs, losses=losses)


__all__ = [
    "OFFICIAL_ENCODERS",
    "OFFICIAL_FROM_REGIONS",
    "ShaSpecPort",
    "mmbench_to_official",
    "module_table",
    "official_to_mmbench",
    "scale_from_official",
    "strategy_for_official",
]
