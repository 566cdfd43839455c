"""The official-code port of ``rfnet`` (dyh127/RFNet @1e475fa): the mapping of the official
``models.Model`` state dict onto :class:`~mmbench.methods.rfnet.strategy.RFNet`, and the
reproduction of a golden fixture by mmbench's own modules."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from mmbench.golden import GoldenFixture
from mmbench.methods.base import MethodConfig, Strategy
from mmbench.methods.official import OfficialPort, Reproduction, register_official
from mmbench.methods.rfnet.losses import (
    PUBLISHED_FUSION_START_EPOCH,
    one_hot_classes,
    rfnet_losses,
)
from mmbench.methods.rfnet.network import LEVELS, NUM_CLASSES, SLOT_ORDER, RFNetDims
from mmbench.methods.rfnet.strategy import RFNet

OFFICIAL_NAMES: dict[str, str] = {"FLAIR": "flair", "T1ce": "t1ce", "T1": "t1", "T2": "t2"}
"""The official attribute prefix of each modality's encoder (``flair_encoder``, …)."""


def _block(table: dict[str, str], official: str, ours: str) -> None:
    # a `general_conv3d` (official) / `ConvBlock` (ours): both hold their conv as `.conv`
    table[f"{official}.conv"] = f"{ours}.conv"


def _decoder_levels(table: dict[str, str], official: str, ours: str) -> None:
    for level in range(1, LEVELS):
        _block(table, f"{official}.d{level}_c1", f"{ours}.up.{level - 1}")
        _block(table, f"{official}.d{level}_c2", f"{ours}.merge.{level - 1}")
        _block(table, f"{official}.d{level}_out", f"{ours}.out.{level - 1}")
    table[f"{official}.seg_layer"] = f"{ours}.head"


def module_table() -> dict[str, str]:
    """Official module path → mmbench module path, for every module holding parameters (the
    convolutions; parameter names ``weight`` and ``bias`` are the same on both sides)."""
    table: dict[str, str] = {}
    for slot, modality in enumerate(SLOT_ORDER):
        official, ours = f"{OFFICIAL_NAMES[modality]}_encoder", f"net.encoders.{slot}"
        _block(table, f"{official}.e1_c1", f"{ours}.stem")
        for level in range(1, LEVELS + 1):
            if level > 1:
                _block(table, f"{official}.e{level}_c1", f"{ours}.down.{level - 2}")
            _block(table, f"{official}.e{level}_c2", f"{ours}.refine.{level - 1}.0")
            _block(table, f"{official}.e{level}_c3", f"{ours}.refine.{level - 1}.1")
    _decoder_levels(table, "decoder_fuse", "net.decoder")
    for level in range(1, LEVELS + 1):
        rfm, fusion = f"decoder_fuse.RFM{level}", f"net.decoder.fusion.{level - 1}"
        for region in range(NUM_CLASSES):
            for j in (0, 2):
                table[f"{rfm}.modal_fusion.{region}.weight_layer.{j}"] = (
                    f"{fusion}.gates.{region}.{j}"
                )
        for j in range(3):
            _block(table, f"{rfm}.region_fusion.fusion_layer.{j}", f"{fusion}.region.{j}")
            _block(table, f"{rfm}.short_cut.{j}", f"{fusion}.shortcut.{j}")
        prm, ours = f"decoder_fuse.prm_generator{level}", f"net.decoder.prm.{level - 1}"
        for j in range(3):
            _block(table, f"{prm}.embedding_layer.{j}", f"{ours}.embed.{j}")
        _block(table, f"{prm}.prm_layer.0", f"{ours}.head.0")
        table[f"{prm}.prm_layer.1"] = f"{ours}.head.1"
    _decoder_levels(table, "decoder_sep", "sep_decoder")
    return table


def _rename(state: Mapping[str, Tensor], table: Mapping[str, str]) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        module, _, param = key.rpartition(".")
        # keys that fit nowhere are kept as they are, so that a strict load reports them
        out[f"{table[module]}.{param}" if module in table else key] = value
    return out


def official_to_mmbench(official: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename an official state dict (no ``module.`` prefix) to mmbench keys."""
    return _rename(official, module_table())


def mmbench_to_official(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The inverse of :func:`official_to_mmbench`, e.g. to run mmbench-trained weights in the
    official code (keys in mmbench's order)."""
    return _rename(state, {ours: official for official, ours in module_table().items()})


def dims_from_official(official: Mapping[str, Tensor]) -> RFNetDims:
    """Sizes of an official checkpoint, read from its tensors' shapes.

    Raises:
        ValueError: not 4 classes (BraTS 2015's 5-class layout is not supported).
    """
    classes = int(official["decoder_fuse.seg_layer.weight"].shape[0])
    if classes != NUM_CLASSES:
        raise ValueError(
            f"rfnet predicts {NUM_CLASSES} classes (BraTS 2018-2021); the official weights "
            f"have {classes} (BraTS 2015's 5-class layout is not supported)"
        )
    return RFNetDims(
        basic=int(official["flair_encoder.e1_c1.conv.weight"].shape[0]),
        prm_hidden=int(official["decoder_fuse.prm_generator4.prm_layer.1.weight"].shape[1]),
        gate_hidden=int(
            official["decoder_fuse.RFM4.modal_fusion.0.weight_layer.0.weight"].shape[0]
        ),
    )


def strategy_for_official(
    official: Mapping[str, Tensor], options: Mapping[str, Any] | None = None
) -> RFNet:
    """An :class:`RFNet` whose modules fit ``official`` (any basic width)."""
    dims = dims_from_official(official)
    config = MethodConfig(width=dims.basic, options=dict(options or {}))
    return RFNet(config, dims=dims)


def _mask_rows(value: Any, batch: int) -> Tensor:
    mask = torch.as_tensor(value, dtype=torch.bool)
    if mask.numel() == len(SLOT_ORDER):  # one mask for the whole batch (the official test)
        return mask.reshape(1, -1).expand(batch, -1)
    return mask.reshape(batch, -1)


@register_official("rfnet")
class RFNetPort(OfficialPort):
    """``reproduce`` rebuilds the fixture's official weights, loads them into :class:`RFNet`
    through :meth:`convert_state_dict`, runs the fixture's input and mask through the
    strategy's own modules (no gradient; every encoder and the per-modality decoder, as the
    official training forward) and returns every stored output and loss under the fixture's
    names. Seed, batch, spatial size, mask and epoch are read from the fixture."""

    source = "dyh127/RFNet@1e475fa5de4ac3f41f8de3d3102bb8b28383c2c4"

    def convert_state_dict(
        self, official: Mapping[str, Tensor], strategy: Strategy
    ) -> dict[str, Tensor]:
        if not isinstance(strategy, RFNet):
            raise TypeError(f"the rfnet port converts into RFNet, not {type(strategy)}")
        return official_to_mmbench(official)

    def reproduce(self, fixture: GoldenFixture) -> Reproduction:
        spec = fixture.spec
        official = fixture.state_dict()
        order = list(spec.get("channel_order", SLOT_ORDER))
        perm = [order.index(m) for m in SLOT_ORDER]
        x = fixture.input("x").float()[:, perm]
        mask = _mask_rows(fixture.input("mask"), x.shape[0])[:, perm]
        strategy = strategy_for_official(official)
        self.load_official(strategy, official)
        strategy.eval()
        outputs: dict[str, Tensor] = {}
        losses: dict[str, float] = {}
        with torch.no_grad():
            out, sep = strategy.forward_all(x, mask, auxiliary=True)
            fuse, seps, prms = strategy.probabilities(out, sep)
            outputs["fuse_pred"] = fuse
            for modality, prob in zip(SLOT_ORDER, seps):
                outputs[f"sep_pred_{OFFICIAL_NAMES[modality]}"] = prob
            for level, (prob, raw) in enumerate(zip(prms, out.prms), start=1):
                outputs[f"prm_pred{level}"] = prob
                if level > 1:
                    outputs[f"prm_raw{level}"] = raw
            if "target" in spec.get("inputs", {}):
                labels = fixture.input("target").long()
                compartments = torch.stack([labels == c for c in range(1, NUM_CLASSES)], 1)
                target = one_hot_classes(compartments)
                terms = rfnet_losses(fuse, seps, prms, target)
                for modality, ce, dice in zip(SLOT_ORDER, terms.sep_cross, terms.sep_dice):
                    losses[f"sep_cross_{OFFICIAL_NAMES[modality]}"] = float(ce)
                    losses[f"sep_dice_{OFFICIAL_NAMES[modality]}"] = float(dice)
                for level, (ce, dice) in enumerate(zip(terms.prm_cross, terms.prm_dice), 1):
                    losses[f"prm_cross_{level}"] = float(ce)
                    losses[f"prm_dice_{level}"] = float(dice)
                epoch = spec["inputs"].get("epoch", {})
                start = int(epoch.get("region_fusion_start_epoch", PUBLISHED_FUSION_START_EPOCH))
                weight = 1.0 if int(epoch.get("value", start)) >= start else 0.0
                losses.update(
                    fuse_cross=float(terms.fuse_cross),
                    fuse_dice=float(terms.fuse_dice),
                    fuse_loss=float(terms.fuse),
                    sep_cross=float(terms.sep_cross_sum),
                    sep_dice=float(terms.sep_dice_sum),
                    sep_loss=float(terms.sep),
                    prm_cross=float(terms.prm_cross_sum),
                    prm_dice=float(terms.prm_dice_sum),
                    prm_loss=float(terms.prm),
                    loss_total=float(terms.total(weight)),
                    loss_total_warmup=float(terms.total(0.0)),
                )
        return Reproduction(outputs=outputs, losses=losses)


__all__ = [
    "OFFICIAL_NAMES",
    "RFNetPort",
    "dims_from_official",
    "mmbench_to_official",
    "module_table",
    "official_to_mmbench",
    "strategy_for_official",
]
