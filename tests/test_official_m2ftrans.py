"""m2ftrans against the official code (Jun-Jie-Shi/M2FTrans @03a0b28, ``M2FTrans_v1``): the
bundled golden fixture, variant fixtures made by running the official code with other seeds,
batches and masks, the state-dict converter, and the behaviours the fixture pins down (masks,
modality weights, cross-token attention, parameter split, published schedule)."""

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
from mmbench.methods.m2ftrans.network import (
    SLOT_ORDER,
    CrossTokenAttention,
    M2FTransDims,
    fusion_attention_mask,
    modality_weights,
)
from mmbench.methods.m2ftrans.port import (
    dims_from_official,
    mmbench_to_official,
    strategy_for_official,
)
from mmbench.methods.m2ftrans.strategy import M2FTrans, published_lr_factor
from mmbench.subsets import Subset

BUNDLED = bundled_fixture_root() / "m2ftrans"
VARIANTS = Path(__file__).parent / "data" / "official-variants"
VARIANT_FOLDERS = [p for p in find_fixtures(VARIANTS) if p.name.startswith("m2ftrans-")]
# Each fixture is an 80³ forward of the official-size network (about 20 s of CPU). The default
# suite runs the bundled one and the batch-2 variant; MMBENCH_OFFICIAL_VARIANTS=all runs every
# variant (as `mmbench check-official --fixtures tests/data/official-variants --methods
# m2ftrans` does).
DEFAULT_VARIANTS = {"m2ftrans-seed11-batch2"}
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
    return {e["key"]: torch.empty(e["shape"]) for e in spec["state_dict"]}


def test_converter_fits_every_official_key_at_the_official_size() -> None:
    official = _official_shapes()
    sizes = dims_from_official(official, {"num_heads": 8})
    assert sizes == {
        "basic": 16,
        "mlp": 4096,
        "depth": 3,
        "heads": 8,
        "prm": 16,
        "cross_layers": 2,
    }
    strategy = strategy_for_official(official, (80, 80, 80))
    # the width rule: the official sizes are those of the paper preset's width 16
    assert strategy.dims == M2FTransDims.from_width(16, (80, 80, 80))
    assert strategy.dims.grid == (5, 5, 5) and strategy.dims.transformer == 256
    converted = official_port("m2ftrans").convert_state_dict(official, strategy)
    own = strategy.state_dict()
    assert set(converted) == set(own)
    assert all(tuple(converted[k].shape) == tuple(own[k].shape) for k in own)
    assert set(mmbench_to_official(converted)) == set(official)
    total = sum(v.numel() for v in official.values())
    assert strategy.parameter_count() + strategy.training_only_parameter_count() == total


def _small() -> M2FTrans:
    return M2FTrans(MethodConfig(width=2, patch_size=(16, 16, 16)))


@pytest.mark.parametrize("prefix", ["", "module."])
def test_converter_round_trip(prefix: str) -> None:
    torch.manual_seed(1)
    source = _small()
    with torch.no_grad():
        for p in source.parameters():
            p.normal_()
    official = mmbench_to_official(source.state_dict())
    assert (
        "pos" in official
        and "decoder_fusion.CT4.layers.1.cross_attn.key_map_t2.conv1.weight" in official
    )
    torch.manual_seed(2)
    target = _small()
    official_port("m2ftrans").load_official(target, {prefix + k: v for k, v in official.items()})
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key
    assert mmbench_to_official(target.state_dict()).keys() == official.keys()


def test_converter_reports_a_missing_key() -> None:
    strategy = _small()
    official = mmbench_to_official(strategy.state_dict())
    del official["t2_encoder.e3_c2.conv.weight"]
    with pytest.raises(CheckpointError, match="net.encoders.3.refine.2.0.conv.weight"):
        official_port("m2ftrans").load_official(strategy, official)


def test_converter_maps_modalities_to_their_slots() -> None:
    strategy = _small()
    official = mmbench_to_official(strategy.state_dict())
    slot = SLOT_ORDER.index("T1")
    assert torch.equal(
        official["t1_encoder.e1_c1.conv.weight"], strategy.net.encoders[slot].stem.conv.weight
    )
    cross = strategy.net.decoder.cross[0].layers[0].cross_attn
    assert torch.equal(
        official["decoder_fusion.CT5.layers.0.cross_attn.value_map_t1.conv3.weight"],
        cross.value_maps[slot].conv3.weight,
    )
    assert torch.equal(
        official["decoder_fusion.prm_fusion1.prm_layer.1.weight"], strategy.deep_heads[0][1].weight
    )


# ------------------------------------------------------------------------------- behaviour
def test_fusion_mask_blocks() -> None:
    """Modality tokens see their own block only; fusion tokens see the fusion block and the
    available slots (NOTES: mask_gen_fusion)."""
    g = 2
    allowed = fusion_attention_mask(torch.tensor([[False, True, False, True]]), g)[0]
    block = torch.arange(5 * g) // g
    for i in range(5 * g):
        for j in range(5 * g):
            if block[i] < 4:
                want = bool(block[i] == block[j])
            else:
                want = bool(block[j] == 4 or block[j] in (1, 3))
            assert bool(allowed[i, j]) == want, (i, j)


def test_modality_weights_are_unnormalised_fusion_row_sums() -> None:
    n, heads, g = 1, 2, 8
    attn = torch.rand(n, heads, 5 * g, 5 * g)
    weights = modality_weights(attn, (2, 2, 2))
    fusion_rows = attn[:, :, 4 * g :, :].sum((1, 2))
    for k in range(4):
        assert torch.allclose(weights[:, k].flatten(1), fusion_rows[:, k * g : (k + 1) * g])


def test_modality_weights_pass_no_gradient() -> None:
    """The official code detaches the first layer's attention before Weight_Attention."""
    model = _small().train()
    out, _, _ = model.forward_all(torch.randn(1, 4, 16, 16, 16), torch.tensor([[True] * 4]))
    assert out.logits.requires_grad and not out.weights.requires_grad


def test_cross_attention_ignores_absent_slots() -> None:
    torch.manual_seed(0)
    layer = CrossTokenAttention(4, dropout=0.0).eval()
    query, maps = torch.randn(1, 4, 2, 2, 2), torch.randn(1, 4, 4, 2, 2, 2)
    available = torch.tensor([[True, False, True, False]])
    changed = maps.clone()
    changed[:, 1] = 1e3 * torch.randn_like(changed[:, 1])
    with torch.no_grad():
        assert torch.equal(layer(query, maps, available), layer(query, changed, available))


def test_predict_runs_only_the_available_encoders() -> None:
    model = _small().eval()
    calls: list[int] = []
    for slot, encoder in enumerate(model.net.encoders):
        encoder.register_forward_hook(lambda *_, s=slot: calls.append(s))
    with torch.no_grad():
        model.predict(torch.randn(1, 4, 16, 16, 16), ("T1ce", "T2"))
    assert sorted(calls) == [SLOT_ORDER.index("T1ce"), SLOT_ORDER.index("T2")]


def test_predict_equals_running_every_encoder_and_masking() -> None:
    """Skipping absent encoders changes nothing: their weight is exactly 0 (fixture's
    absent_channel_check)."""
    torch.manual_seed(3)
    model = M2FTrans(MethodConfig(width=2, patch_size=(32, 32, 32))).eval()
    x = torch.randn(1, 4, 32, 32, 32)
    mask = torch.tensor([[True, False, False, True]])
    with torch.no_grad():
        some, _, _ = model.forward_all(x, mask)
        every, _, _ = model.forward_all(x, mask, auxiliary=True)
    assert torch.allclose(some.logits, every.logits, atol=1e-5)


def test_parameters_split_inference_and_training_only() -> None:
    model = _small()
    training_only = sum(p.numel() for p in model.sep_decoder.parameters()) + sum(
        p.numel() for p in model.deep_heads.parameters()
    )
    assert model.training_only_parameter_count() == training_only
    assert model.parameter_count() == sum(p.numel() for p in model.net.parameters())


def test_a_non_cubic_crop_gives_its_own_token_grid() -> None:
    model = M2FTrans(MethodConfig(width=2, patch_size=(16, 32, 48))).eval()
    assert model.dims.grid == (1, 2, 3)
    assert model.net.position.shape == (1, 30, 32) and model.net.fusion.shape == (1, 6, 32)
    with torch.no_grad():
        assert model.predict(torch.randn(1, 4, 16, 32, 48), ("T1", "FLAIR")).shape == (
            1,
            3,
            16,
            32,
            48,
        )
        with pytest.raises(ValueError, match="eval.window"):
            model.predict(torch.randn(1, 4, 32, 32, 48), ("T1",))


def test_training_step_trains_every_encoder_and_head() -> None:
    model = _small().train()
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
    losses = model.training_step(batch, StepContext(1, 10, "train", 1, 10, subset))
    assert torch.isfinite(losses["main"])
    losses["main"].backward()
    for slot in range(4):  # the per-modality decoder trains every encoder
        assert model.net.encoders[slot].stem.conv.weight.grad.abs().sum() > 0
    assert all(h[1].weight.grad is not None for h in model.deep_heads)


def test_published_schedule_is_warmup_then_poly_scaled_to_the_budget() -> None:
    assert published_lr_factor(1, 1000) == 0.0  # epoch 0 trains at lr 0, as officially
    assert published_lr_factor(51, 1000) == pytest.approx(0.5)
    assert published_lr_factor(101, 1000) == 1.0
    assert published_lr_factor(1000, 1000) == pytest.approx(
        round(2e-4 * (1 - 899 / 900) ** 0.9, 8) / 2e-4
    )
    factors = [published_lr_factor(s, 400) for s in range(1, 401)]
    peak = factors.index(max(factors))
    assert all(a <= b for a, b in zip(factors[:peak], factors[1 : peak + 1]))
    assert all(a >= b for a, b in zip(factors[peak:], factors[peak + 1 :]))


def test_published_recipe_optimiser() -> None:
    cfg = MethodConfig(width=2, patch_size=(16, 16, 16), options={"recipe": "published"})
    opt = M2FTrans(cfg).configure_optimizers(lr=0.5, weight_decay=0.5)["main"]
    assert isinstance(opt, torch.optim.AdamW)
    group = opt.param_groups[0]
    assert group["lr"] == 2e-4 and group["weight_decay"] == 1e-4 and group["amsgrad"]


@pytest.mark.slow
def test_import_weights_round_trip(tmp_path: Path) -> None:
    """mmbench weights → official keys (DataParallel's ``module.``, nested under
    ``state_dict``, as train.py saves them) → file → ``import-weights``: the same tensors come
    back and the run scores the test split."""
    from mmbench.benchmark.checkpoint import load_checkpoint
    from mmbench.benchmark.imported import import_weights, official_state_dict
    from mmbench.benchmark.runner import resolve_config
    from mmbench.methods import create

    config = resolve_config("smoke", None, ["m2ftrans"]).for_method("m2ftrans")
    torch.manual_seed(5)
    source = create("m2ftrans", preset=config)
    official = mmbench_to_official(source.state_dict())
    path = tmp_path / "model_last.pth"
    torch.save({"epoch": 999, "state_dict": {f"module.{k}": v for k, v in official.items()}}, path)

    state = official_state_dict(load_checkpoint(path), path)
    torch.manual_seed(6)
    target = create("m2ftrans", preset=config)
    official_port("m2ftrans").load_official(target, state)
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key

    summary = import_weights(
        "m2ftrans", path, preset="smoke", out=tmp_path / "out", progress=False, log=lambda _: None
    )
    assert summary.method == "m2ftrans-official"
    assert summary.params == source.parameter_count()
    assert len(summary.metrics) > 0
