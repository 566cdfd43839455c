"""shaspec against the official code (billhhh/ShaSpec @081fe7a): the bundled golden fixture,
variant fixtures made by running the official code with other seeds, batches, masks and shapes,
the state-dict converter and ``import-weights``, and the oddities the fixture pins down."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from mmbench.benchmark.imported import import_weights
from mmbench.benchmark.official import bundled_fixture_root, check_fixture
from mmbench.errors import CheckpointError
from mmbench.golden import GoldenFixture, find_fixtures
from mmbench.methods import MethodConfig, official_port
from mmbench.methods.shaspec.network import SLOT_ORDER, InstanceNorm, ShaSpecDims, WSConv3d
from mmbench.methods.shaspec.port import (
    mmbench_to_official,
    module_table,
    scale_from_official,
    strategy_for_official,
)
from mmbench.methods.shaspec.strategy import ShaSpec

BUNDLED = bundled_fixture_root() / "shaspec"
VARIANTS = Path(__file__).parent / "data" / "official-variants"
VARIANT_FOLDERS = [p for p in find_fixtures(VARIANTS) if p.name.startswith("shaspec-")]
# Each fixture is a float64 forward of the 187.7 M-parameter official network (about a minute
# of one core). The default suite runs the bundled one and the batch-2 variant (other seed, T2
# only); MMBENCH_OFFICIAL_VARIANTS=all runs every variant (as `mmbench check-official --fixtures
# tests/data/official-variants --methods shaspec` does).
DEFAULT_VARIANTS = {"shaspec-seed11-b2-t2"}
ALL_VARIANTS = os.environ.get("MMBENCH_OFFICIAL_VARIANTS") == "all"


def _assert_reproduced(folder: Path) -> None:
    result = check_fixture(GoldenFixture(folder))
    assert not result.error, result.error
    fixture = GoldenFixture(folder)
    assert set(result.outputs) == set(fixture.output_names)
    assert set(result.losses) == set(fixture.loss_names)
    bad = {n: c.as_dict() for n, c in {**result.outputs, **result.losses}.items() if not c.ok}
    assert not bad, bad


@pytest.mark.slow
def test_bundled_fixture_is_reproduced() -> None:
    _assert_reproduced(BUNDLED)


@pytest.mark.slow
@pytest.mark.parametrize("folder", VARIANT_FOLDERS, ids=lambda p: p.name)
def test_variant_fixture_is_reproduced(folder: Path) -> None:
    if not (ALL_VARIANTS or folder.name in DEFAULT_VARIANTS):
        pytest.skip("set MMBENCH_OFFICIAL_VARIANTS=all to check every variant fixture")
    _assert_reproduced(folder)


def test_variant_fixtures_are_present() -> None:
    names = {p.name for p in VARIANT_FOLDERS}
    assert DEFAULT_VARIANTS <= names and len(names) >= 3, names


# ------------------------------------------------------------------------------- converter
def _official_shapes() -> dict[str, torch.Tensor]:
    spec = json.loads((BUNDLED / "fixture.json").read_text())
    return {e["key"]: torch.empty(e["shape"], device="meta") for e in spec["state_dict"]}


def test_converter_fits_every_official_key_at_the_official_size() -> None:
    official = _official_shapes()
    assert scale_from_official(official) == 1.0
    with torch.device("meta"):
        strategy = strategy_for_official(official)
    # the width rule: the official sizes are those of the paper preset's width 16
    assert strategy.dims == ShaSpecDims.from_width(16) == ShaSpecDims()
    converted = official_port("shaspec").convert_state_dict(official, strategy)
    own = strategy.state_dict()
    assert set(converted) == set(own)
    assert all(tuple(converted[k].shape) == tuple(own[k].shape) for k in own)
    assert set(mmbench_to_official(converted)) == set(official)
    assert len(module_table()) == len({k.rpartition(".")[0] for k in official})
    # inference parameters: everything but the domain classifier (official 187,708,132 in all)
    assert strategy.parameter_count() == 187_707_104
    assert strategy.training_only_parameter_count() == 4 * 256 + 4


def _small(seed: int = 0) -> ShaSpec:
    torch.manual_seed(seed)
    return ShaSpec(MethodConfig(width=4, patch_size=(16, 32, 32)))


@pytest.mark.parametrize("prefix", ["", "module."])
def test_converter_round_trip(prefix: str) -> None:
    source = _small(1)
    with torch.no_grad():
        for p in source.parameters():
            p.normal_()
    official = mmbench_to_official(source.state_dict())
    assert "shared_enc.backbone.layer4.2.conv3.weight" in official
    assert "compos_layer.conv.weight" in official and "dom_classifier.bias" in official
    target = _small(2)
    official_port("shaspec").load_official(target, {prefix + k: v for k, v in official.items()})
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


def test_converter_reports_a_missing_key() -> None:
    strategy = _small()
    official = mmbench_to_official(strategy.state_dict())
    del official["t2_enc.aspp.branch3.0.weight"]
    with pytest.raises(CheckpointError, match="specific_encoders.3.aspp.dilated.1.conv.weight"):
        official_port("shaspec").load_official(strategy, official)


def test_converter_maps_modalities_to_their_slots() -> None:
    strategy = _small()
    official = mmbench_to_official(strategy.state_dict())
    for name, modality in (("flair", "FLAIR"), ("t1", "T1"), ("t1ce", "T1ce"), ("t2", "T2")):
        encoder = strategy.net.specific_encoders[SLOT_ORDER.index(modality)]
        assert torch.equal(
            official[f"{name}_enc.backbone.conv1.weight"], encoder.backbone.stem_conv.weight
        )


@pytest.mark.slow
def test_import_weights_round_trips_an_official_layout_checkpoint(tmp_path) -> None:
    """A DataParallel-prefixed official-layout file, nested under ``state_dict``, through
    ``import-weights`` at ``smoke`` (the prefix-free case is the converter round trip)."""
    prefix = "module."
    source = _small(3)
    with torch.no_grad():
        for p in source.parameters():
            p.normal_(0.0, 0.1)
    official = {prefix + k: v for k, v in mmbench_to_official(source.state_dict()).items()}
    path = tmp_path / "final.pth"
    torch.save({"state_dict": official}, path)
    summary = import_weights(
        "shaspec", path, preset="smoke", out=tmp_path / "out", progress=False, log=lambda _: None
    )
    run_json = json.loads((Path(summary.run_dir) / "run.json").read_text())
    assert run_json["status"] == "complete"
    assert run_json["method"] == "shaspec-official"


# ------------------------------------------------------------------------------- oddities
def test_weight_standardisation_gives_unit_variance_zero_mean_filters() -> None:
    conv = WSConv3d(3, 5, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.mul_(7).add_(2)
    x = torch.zeros(1, 3, 3, 3, 3)
    x[0, :, 1, 1, 1] = 1  # a delta: the output at the centre sums the standardised filter taps
    w = conv.weight - conv.weight.mean(dim=(1, 2, 3, 4), keepdim=True)
    w = w / torch.sqrt(w.flatten(1).var(1) + 1e-12).reshape(-1, 1, 1, 1, 1)
    assert torch.allclose(conv(x), torch.nn.functional.conv3d(x, w, padding=1), atol=1e-6)
    assert torch.allclose(w.flatten(1).mean(1), torch.zeros(5), atol=1e-6)


def test_instance_norm_of_one_voxel_is_its_bias() -> None:
    norm = InstanceNorm(4)
    with torch.no_grad():
        norm.bias.copy_(torch.tensor([0.5, -1.0, 2.0, 0.0]))
        norm.weight.fill_(3.0)
    out = norm(torch.randn(2, 4, 1, 1, 1))
    assert torch.equal(out, norm.bias.reshape(1, 4, 1, 1, 1).expand(2, 4, 1, 1, 1))
