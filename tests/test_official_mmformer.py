"""mmformer against the official code (YaoZhang93/mmFormer @b18663a): the bundled golden fixture,
variant fixtures made by running the official code with other seeds, batches and masks, the
state-dict converter, and the oddities the fixture pins down (token reshape, region mapping)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from mmbench.benchmark.official import bundled_fixture_root, check_fixture
from mmbench.errors import CheckpointError
from mmbench.golden import GoldenFixture, find_fixtures
from mmbench.methods import MethodConfig, StepContext, official_port
from mmbench.methods.mmformer.network import (
    SLOT_ORDER,
    MMFormerDims,
    conv3d,
    tokens_to_volume,
)
from mmbench.methods.mmformer.port import (
    dims_from_official,
    mmbench_to_official,
    strategy_for_official,
)
from mmbench.methods.mmformer.strategy import (
    MMFormer,
    published_lr_factor,
    regions_from_classes,
    slot_mask,
)
from mmbench.subsets import Subset

BUNDLED = bundled_fixture_root() / "mmformer"
VARIANTS = Path(__file__).parent / "data" / "official-variants"
VARIANT_FOLDERS = [p for p in find_fixtures(VARIANTS) if p.name.startswith("mmformer-")]
# Each fixture is a 128³ forward of the official-size network (about a minute of CPU). The
# default suite runs the bundled one and the batch-2 variant (other seed, one mask per sample);
# MMBENCH_OFFICIAL_VARIANTS=all runs every variant (as `mmbench check-official --fixtures
# tests/data/official-variants --methods mmformer` does).
DEFAULT_VARIANTS = {"mmformer-seed11-batch2"}
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
    """A 128³ forward of the official-size network (about a minute of CPU on one core)."""
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
    return {e["key"]: torch.empty(e["shape"]) for e in spec["state_dict"]}


def test_converter_fits_every_official_key_at_the_official_size() -> None:
    official = _official_shapes()
    sizes = dims_from_official(official, {"num_heads": 8})
    assert sizes == {"basic": 8, "transformer": 512, "mlp": 4096, "depth": 1, "heads": 8}
    strategy = strategy_for_official(official, (128, 128, 128))
    # the width rule: the official sizes are those of the paper preset's width 16
    assert strategy.dims == MMFormerDims.from_width(16, (128, 128, 128))
    converted = official_port("mmformer").convert_state_dict(official, strategy)
    own = strategy.state_dict()
    assert set(converted) == set(own)
    assert all(tuple(converted[k].shape) == tuple(own[k].shape) for k in own)
    dropped = set(official) - set(mmbench_to_official(converted, strategy.dims))
    assert dropped == {
        f"{m}_decode_conv.{p}"
        for m in ("flair", "t1ce", "t1", "t2")
        for p in (
            "weight",
            "bias",
        )
    }


def _small() -> MMFormer:
    return MMFormer(MethodConfig(width=4, patch_size=(16, 16, 16)))


@pytest.mark.parametrize("prefix", ["", "module."])
def test_converter_round_trip(prefix: str) -> None:
    torch.manual_seed(1)
    source = _small()
    with torch.no_grad():
        for p in source.parameters():
            p.normal_()
    official = mmbench_to_official(source.state_dict(), source.dims)
    assert "flair_pos" in official and "multimodal_decode_conv.weight" in official
    # the unused official convs are accepted and ignored
    official["flair_decode_conv.weight"] = torch.zeros(1)
    torch.manual_seed(2)
    target = _small()
    official_port("mmformer").load_official(target, {prefix + k: v for k, v in official.items()})
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key
    back = mmbench_to_official(target.state_dict(), target.dims)
    assert set(back) == set(official) - {"flair_decode_conv.weight"}


def test_converter_reports_a_missing_key() -> None:
    strategy = _small()
    official = mmbench_to_official(strategy.state_dict(), strategy.dims)
    del official["t2_encoder.e3_c2.conv.weight"]
    with pytest.raises(CheckpointError, match="net.encoders.3.refine.2.0.conv.weight"):
        official_port("mmformer").load_official(strategy, official)


def test_converter_maps_modalities_to_their_slots() -> None:
    strategy = _small()
    official = mmbench_to_official(strategy.state_dict(), strategy.dims)
    slot = SLOT_ORDER.index("T1")
    assert torch.equal(official["t1_encoder.e1_c1.weight"], strategy.net.encoders[slot].stem.weight)
    assert torch.equal(official["t1_pos"][0], strategy.net.position[slot])


# ------------------------------------------------------------------------------- oddities
def test_inter_token_reshape_is_the_plain_view() -> None:
    """Voxel s holds tokens 4s..4s+3 side by side (NOTES oddity 1)."""
    n, g, t, k = 2, (2, 2, 2), 3, 4
    tokens = torch.randn(n, k * 8, t)
    volume = tokens_to_volume(tokens, g)
    assert volume.shape == (n, k * t, 2, 2, 2)
    flat = volume.flatten(2)  # N×(K·T)×G
    for s in range(8):
        expected = tokens[:, k * s : k * s + k].reshape(n, k * t)
        assert torch.equal(flat[:, :, s], expected)
    # with slot-major tokens the first G/K voxels see only the first slot
    assert torch.equal(
        flat[:, :, :2].reshape(n, k, t, 2).permute(0, 3, 1, 2).reshape(n, 8, t), tokens[:, :8]
    )


def test_reflect_padding_of_a_one_voxel_side_replicates_only_that_side() -> None:
    conv = torch.nn.Conv3d(2, 3, 3, padding=1, padding_mode="reflect")
    x = torch.randn(1, 2, 1, 3, 4)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1, 0, 0), mode="reflect")
    padded = torch.nn.functional.pad(padded, (0, 0, 0, 0, 1, 1), mode="replicate")
    expected = torch.nn.functional.conv3d(padded, conv.weight, conv.bias)
    assert torch.allclose(conv3d(conv, x), expected, atol=1e-6)
    x = torch.randn(1, 2, 3, 3, 4)
    assert torch.equal(conv3d(conv, x), conv(x))


def test_a_non_cubic_crop_gives_its_own_token_grid() -> None:
    model = MMFormer(MethodConfig(width=4, patch_size=(16, 32, 48))).eval()
    assert model.dims.grid == (1, 2, 3)
    assert model.net.position.shape == (4, 6, 128)
    with torch.no_grad():
        out = model.predict(torch.randn(1, 4, 16, 32, 48), ("T1", "FLAIR"))
        assert out.shape == (1, 3, 16, 32, 48)
        with pytest.raises(ValueError, match="eval.window"):
            model.predict(torch.randn(1, 4, 32, 32, 48), ("T1",))


def test_regions_from_the_four_class_softmax() -> None:
    prob = torch.tensor([0.1, 0.2, 0.3, 0.4]).reshape(1, 4, 1, 1, 1)
    wt, tc, et = regions_from_classes(prob).flatten().tolist()
    assert wt == pytest.approx(0.9) and tc == pytest.approx(0.6) and et == pytest.approx(0.4)


def test_slot_mask_uses_the_official_order() -> None:
    mask = slot_mask(("T1", "FLAIR"), 2)
    assert mask.tolist() == [[True, False, True, False]] * 2  # FLAIR, T1ce, T1, T2


def test_predict_runs_only_the_available_encoders(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _small().eval()
    calls: list[int] = []
    for slot, encoder in enumerate(model.net.encoders):
        encoder.register_forward_hook(lambda *_, s=slot: calls.append(s))
    with torch.no_grad():
        model.predict(torch.randn(1, 4, 16, 16, 16), ("T1ce", "T2"))
    assert sorted(calls) == [SLOT_ORDER.index("T1ce"), SLOT_ORDER.index("T2")]


def test_training_feeds_every_modality_to_the_auxiliary_decoder() -> None:
    model = _small().train()
    seen: list[int] = []
    model.sep_decoder.register_forward_hook(lambda m, inp, out: seen.append(out.shape[0]))
    full = torch.randn(1, 4, 16, 16, 16)
    subset = Subset.parse("T1")
    comp = torch.zeros(1, 3, 16, 16, 16)
    comp[:, 1, 4:12, 4:12, 4:12] = 1
    batch = {
        "image": full * torch.tensor(subset.mask, dtype=torch.float32).reshape(1, 4, 1, 1, 1),
        "image_full": full,
        "compartments": comp,
        "available": subset.available,
        "subset": subset,
    }
    ctx = StepContext(1, 10, "train", 1, 10, subset)
    losses = model.training_step(batch, ctx)
    assert seen == [4]  # the four slots stacked on the batch axis
    assert torch.isfinite(losses["main"])


def test_published_schedule_is_the_per_epoch_poly_scaled_to_the_budget() -> None:
    assert published_lr_factor(1, 400) == 1.0
    # 400 steps over 1000 epochs: step 2 starts epoch 2 (2.5 epochs per step)
    assert published_lr_factor(2, 400) == pytest.approx(
        round(2e-4 * (1 - 2 / 1000) ** 0.9, 8) / 2e-4
    )
    factors = [published_lr_factor(s, 400) for s in range(1, 401)]
    assert all(a >= b for a, b in zip(factors, factors[1:]))
    assert factors[-1] == pytest.approx(round(2e-4 * (1 - 997 / 1000) ** 0.9, 8) / 2e-4)
    # 5000 steps: five steps per epoch at one rate
    assert len({published_lr_factor(s, 5000) for s in range(1, 6)}) == 1


def test_published_recipe_optimiser() -> None:
    cfg = MethodConfig(width=4, patch_size=(16, 16, 16), options={"recipe": "published"})
    opt = MMFormer(cfg).configure_optimizers(lr=0.5, weight_decay=0.5)["main"]
    group = opt.param_groups[0]
    assert group["lr"] == 2e-4 and group["weight_decay"] == 1e-4 and group["amsgrad"]
