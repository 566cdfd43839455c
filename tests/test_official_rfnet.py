"""rfnet against the official code (dyh127/RFNet @1e475fa): the bundled golden fixture, variant
fixtures made by running the official code with other seeds, batches, shapes, masks and epochs,
negative controls, the state-dict converter and ``mmbench import-weights``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mmbench.benchmark.imported import import_weights
from mmbench.benchmark.official import bundled_fixture_root, check_fixture
from mmbench.errors import CheckpointError
from mmbench.golden import GoldenFixture, find_fixtures
from mmbench.methods import MethodConfig, official_port
from mmbench.methods.rfnet.network import SLOT_ORDER, RFNetDims
from mmbench.methods.rfnet.port import (
    dims_from_official,
    mmbench_to_official,
    module_table,
    strategy_for_official,
)
from mmbench.methods.rfnet.strategy import RFNet

BUNDLED = bundled_fixture_root() / "rfnet"
VARIANTS = Path(__file__).parent / "data" / "official-variants"
VARIANT_FOLDERS = [p for p in find_fixtures(VARIANTS) if p.name.startswith("rfnet-")]


def _assert_reproduced(folder: Path) -> None:
    fixture = GoldenFixture(folder)
    result = check_fixture(fixture)
    assert not result.error, result.error
    assert set(result.outputs) == set(fixture.output_names)
    assert set(result.losses) == set(fixture.loss_names)
    bad = {n: c.as_dict() for n, c in {**result.outputs, **result.losses}.items() if not c.ok}
    assert not bad, bad


def test_bundled_fixture_is_reproduced() -> None:
    _assert_reproduced(BUNDLED)


@pytest.mark.parametrize("folder", VARIANT_FOLDERS, ids=lambda p: p.name)
def test_variant_fixture_is_reproduced(folder: Path) -> None:
    _assert_reproduced(folder)


def test_variant_fixtures_cover_seeds_batches_shapes_masks_and_the_warm_up() -> None:
    specs = [GoldenFixture(f).spec for f in VARIANT_FOLDERS]
    assert len({s["seed"] for s in specs}) >= 3
    assert {s["inputs"]["x"]["shape"][0] for s in specs} >= {1, 2, 3}
    assert any(len(set(s["inputs"]["x"]["shape"][2:])) > 1 for s in specs)  # non-cubic
    assert any(s["inputs"]["epoch"]["value"] < 20 for s in specs)  # warm-up total
    masks = [row for s in specs for row in s["inputs"]["mask"]["value"]]
    assert len({tuple(m) for m in masks}) >= 6


# ------------------------------------------------------------------------------ negative controls
def _fixture_with(mutate) -> GoldenFixture:
    fixture = GoldenFixture(BUNDLED)
    mutate(fixture.spec)
    return fixture


def test_a_wrong_mask_is_caught() -> None:
    """The check can fail: the fused output depends on the mask (T1 instead of T1ce)."""

    def swap(spec: dict) -> None:
        spec["inputs"]["mask"]["value"] = [[True, False, True, False]]

    result = check_fixture(_fixture_with(swap))
    assert not result.outputs["fuse_pred"].ok
    assert result.outputs["sep_pred_flair"].ok  # the per-modality path ignores the mask


def test_the_warm_up_epoch_is_read_from_the_fixture() -> None:
    def early(spec: dict) -> None:
        spec["inputs"]["epoch"]["value"] = 3

    result = check_fixture(_fixture_with(early))
    assert not result.losses["loss_total"].ok  # stored for epoch 20: fused term included
    assert result.losses["loss_total_warmup"].ok


def test_the_fusion_reads_the_region_maps_detached_and_gates_by_sigmoid() -> None:
    """With all gates forced to sigmoid(+large) = 1 the fused output moves: the gates are used."""
    fixture = GoldenFixture(BUNDLED)
    official = fixture.state_dict()
    for key in official:
        if ".weight_layer.2.bias" in key:
            official[key] = torch.full_like(official[key], 50.0)
    strategy = strategy_for_official(official)
    official_port("rfnet").load_official(strategy, official)
    order = fixture.spec["channel_order"]
    x = fixture.input("x")[:, [order.index(m) for m in SLOT_ORDER]]
    mask = torch.tensor([[True, True, False, False]])
    with torch.no_grad():
        out, _ = strategy.forward_all(x, mask)
        gates = strategy.net.decoder.fusion[0].gate_values(
            torch.randn(1, 4, 16, 2, 2, 2), torch.softmax(torch.randn(1, 4, 2, 2, 2), 1)
        )
    assert torch.allclose(gates, torch.ones_like(gates))
    fuse = torch.softmax(out.logits, 1)
    assert fixture.compare_output("fuse_pred", fuse).max_abs_err > 1e-3


# ------------------------------------------------------------------------------ converter
def _official_shapes() -> dict[str, torch.Tensor]:
    spec = json.loads((BUNDLED / "fixture.json").read_text())
    return {e["key"]: torch.empty(e["shape"]) for e in spec["state_dict"]}


def test_converter_fits_every_official_key_at_the_official_size() -> None:
    official = _official_shapes()
    dims = dims_from_official(official)
    assert dims == RFNetDims(basic=16, prm_hidden=16, gate_hidden=128)
    # the width rule: the official sizes are those of the paper preset's width 16
    assert dims == RFNetDims.from_width(16)
    strategy = strategy_for_official(official)
    converted = official_port("rfnet").convert_state_dict(official, strategy)
    own = strategy.state_dict()
    assert set(converted) == set(own)
    assert all(tuple(converted[k].shape) == tuple(own[k].shape) for k in own)
    assert set(mmbench_to_official(converted)) == set(official)
    assert len(module_table()) * 2 == len(official)  # every module: weight and bias
    total = sum(v.numel() for v in official.values())
    assert strategy.parameter_count() + strategy.training_only_parameter_count() == total
    sep = sum(v.numel() for k, v in official.items() if k.startswith("decoder_sep."))
    assert strategy.training_only_parameter_count() == sep


def _small(seed: int = 1) -> RFNet:
    torch.manual_seed(seed)
    return RFNet(MethodConfig(width=4, patch_size=(16, 16, 16)))


@pytest.mark.parametrize("prefix", ["", "module."])
def test_converter_round_trip(prefix: str) -> None:
    source = _small(1)
    with torch.no_grad():
        for p in source.parameters():
            p.normal_()
    official = mmbench_to_official(source.state_dict())
    assert "t1ce_encoder.e3_c2.conv.weight" in official
    assert "decoder_fuse.RFM2.modal_fusion.3.weight_layer.2.bias" in official
    target = _small(2)
    official_port("rfnet").load_official(target, {prefix + k: v for k, v in official.items()})
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key
    assert mmbench_to_official(target.state_dict()).keys() == official.keys()


def test_converter_reports_a_missing_key() -> None:
    strategy = _small()
    official = mmbench_to_official(strategy.state_dict())
    del official["t2_encoder.e3_c2.conv.weight"]
    with pytest.raises(CheckpointError, match="net.encoders.3.refine.2.0.conv.weight"):
        official_port("rfnet").load_official(strategy, official)


def test_converter_maps_modalities_to_their_slots() -> None:
    strategy = _small()
    official = mmbench_to_official(strategy.state_dict())
    slot = SLOT_ORDER.index("T1")
    assert torch.equal(
        official["t1_encoder.e1_c1.conv.weight"], strategy.net.encoders[slot].stem.conv.weight
    )


def test_five_class_weights_are_refused() -> None:
    official = _official_shapes()
    official["decoder_fuse.seg_layer.weight"] = torch.empty(5, 16, 1, 1, 1)
    with pytest.raises(ValueError, match="5-class"):
        dims_from_official(official)


@pytest.mark.slow
def test_import_weights_round_trips_an_official_checkpoint(tmp_path: Path) -> None:
    """An official-layout file (``module.`` keys under ``state_dict``, as train.py saves it)
    is converted, loaded and evaluated; the run records the file and the source."""
    source = _small(3)
    official = {f"module.{k}": v for k, v in mmbench_to_official(source.state_dict()).items()}
    path = tmp_path / "model_last.pth"
    torch.save({"epoch": 299, "state_dict": official}, path)
    summary = import_weights(
        "rfnet",
        path,
        preset="smoke",
        out=tmp_path / "out",
        progress=False,
        log=lambda _: None,
    )
    run_json = json.loads((Path(summary.run_dir) / "run.json").read_text())
    assert run_json["status"] == "complete"
    assert run_json["imported"]["source"].startswith("dyh127/RFNet@1e475fa")
    assert run_json["params"] == source.parameter_count()
    assert run_json["params_training_only"] == source.training_only_parameter_count()
    assert summary.method == "rfnet-official" and len(summary.metrics) > 0
