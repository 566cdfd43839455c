"""RFNet (robustness-enhancement): shapes, gradients, round trip and region-aware fusion."""

from __future__ import annotations

import pytest
import torch

from mmbench.methods import MethodConfig, StepContext
from mmbench.methods.rfnet import RegionAwareFusion, RFNet, present_indices, region_targets
from mmbench.subsets import FULL, MODALITIES, Subset, zero_absent

PATCH = (16, 16, 16)


def config(**options) -> MethodConfig:
    return MethodConfig(width=4, patch_size=PATCH, total_steps=10, depth=2, options=options)


def build(seed: int = 0, **options) -> RFNet:
    torch.manual_seed(seed)
    return RFNet(config(**options))


def make_batch(subset: Subset, n: int = 2, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    full = torch.randn(n, 4, *PATCH, generator=g) * 0.3
    comp = torch.zeros(n, 3, *PATCH)
    comp[:, 1, 3:13, 3:13, 3:13] = 1
    comp[:, 1, 6:10, 6:10, 6:10] = 0
    comp[:, 2, 6:10, 6:10, 6:10] = 1
    # The tumour is visible in the images so that a few steps can learn it.
    full[:, 3] += 2 * comp.amax(1)
    full[:, 1] += 2 * comp[:, 2]
    regions = torch.stack([comp.amax(1), torch.maximum(comp[:, 0], comp[:, 2]), comp[:, 2]], 1)
    return {
        "image": zero_absent(full, subset),
        "image_full": full,
        "regions": regions,
        "compartments": comp,
        "available": subset.available,
        "subset": subset,
    }


def ctx(subset: Subset = FULL, step: int = 0) -> StepContext:
    return StepContext(step, 10, "train", step, 10, subset)


def test_predict_shape_and_range() -> None:
    model = build().eval()
    with torch.inference_mode():
        out = model.predict(make_batch(FULL)["image"], FULL.available)
    assert out.shape == (2, 3, *PATCH)
    assert out.min() >= 0 and out.max() <= 1


def test_forward_outputs_per_scale() -> None:
    model = build().eval()
    subset = Subset.parse("T1ce+FLAIR")
    out = model(make_batch(subset)["image"], present_indices(subset.available), aux=True)
    assert out["logits"].shape == (2, 3, *PATCH)
    assert [r.shape[-1] for r in out["region_logits"]] == [16, 8, 4]
    assert all(r.shape[1] == 4 for r in out["region_logits"])
    assert out["aux_logits"].shape == (1, 2, 3, *PATCH)  # one random modality per sample
    every = build(aux_all=True)(make_batch(subset)["image"], [1, 3], aux=True)["aux_logits"]
    assert every.shape == (2, 2, 3, *PATCH)


def test_gradients_reach_present_encoders_only() -> None:
    model = build()
    subset = Subset.parse("T1+T2")
    losses = model.training_step(make_batch(subset), ctx(subset))
    assert torch.isfinite(losses["main"])
    assert {"log/seg", "log/aux", "log/region"} <= set(losses)
    losses["main"].backward()
    for m, encoder in zip(MODALITIES, model.encoders):
        grads = [p.grad for p in encoder.parameters()]
        if m in subset.available:
            assert all(g is not None and torch.isfinite(g).all() for g in grads)
            assert any(g.abs().sum() > 0 for g in grads)
        else:
            assert all(g is None for g in grads)
    for part in (model.decoder, model.aux_decoder, model.fusions):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())


def test_state_dict_file_round_trip(tmp_path) -> None:
    model = build()
    optimizer = model.configure_optimizers(1e-3, 0.0)["main"]
    model.training_step(make_batch(FULL), ctx())["main"].backward()
    optimizer.step()
    model.eval()
    path = tmp_path / "rfnet.pt"
    torch.save(model.state_dict(), path)
    clone = build(seed=99)
    clone.load_state_dict(torch.load(path, weights_only=True))
    clone.eval()
    subset = Subset.parse("T1ce+T2")
    image = make_batch(subset, seed=4)["image"]
    with torch.inference_mode():
        a = model.predict(image, subset.available)
        b = clone.predict(image, subset.available)
    assert torch.equal(a, b)


@pytest.mark.parametrize("subset", ["T2", "T1ce+FLAIR", "T1+T1ce+T2", "T1+T1ce+T2+FLAIR"])
def test_fusion_weights_zero_for_absent_and_sum_to_one(subset: str) -> None:
    torch.manual_seed(0)
    fusion = RegionAwareFusion(channels=3, out_channels=5)
    with torch.no_grad():  # a large bias on every slot: absent ones must still get exactly 0
        fusion.modality_bias.fill_(30.0)
    present = present_indices(Subset.parse(subset).available)
    feats = torch.randn(2, len(present), 3, 4, 4, 4)
    fused, region_logits, weights = fusion(feats, present)
    assert fused.shape == (2, 5, 4, 4, 4)
    assert region_logits.shape == (2, 4, 4, 4, 4)
    assert weights.shape == (2, 4, 4, 3)
    absent = [i for i in range(4) if i not in present]
    assert torch.equal(weights[:, :, absent], torch.zeros_like(weights[:, :, absent]))
    assert torch.allclose(weights.sum(2), torch.ones(2, 4, 3), atol=1e-6)
    assert (weights[:, :, present] > 0).all()


def test_absent_encoder_weights_do_not_change_predict() -> None:
    model = build().eval()
    subset = Subset.parse("T1ce+FLAIR")
    image = make_batch(subset)["image"]
    with torch.inference_mode():
        before = model.predict(image, subset.available)
        for m in ("T1", "T2"):
            for p in model.encoders[MODALITIES.index(m)].parameters():
                p.add_(torch.randn_like(p) * 5)
        after = model.predict(image, subset.available)
        assert torch.equal(before, after)
        # ...whereas a present modality's encoder does matter (the check can fail).
        for p in model.encoders[MODALITIES.index("FLAIR")].parameters():
            p.add_(torch.randn_like(p) * 5)
        assert not torch.equal(before, model.predict(image, subset.available))


def test_region_targets_are_a_partition() -> None:
    comp = make_batch(FULL)["compartments"]
    for size in [(16, 16, 16), (4, 4, 4)]:
        target = region_targets(comp, size)
        assert target.shape == (2, 4, *size)
        assert torch.allclose(target.sum(1), torch.ones(2, *size), atol=1e-6)
    assert torch.equal(region_targets(comp, PATCH)[:, 1:], comp)


def test_few_steps_on_a_toy_batch_reduce_the_segmentation_loss() -> None:
    model = build()
    optimizer = model.configure_optimizers(3e-3, 0.0)["main"]
    batch = make_batch(FULL)
    first = None
    for step in range(30):
        losses = model.training_step(batch, ctx(step=step))
        optimizer.zero_grad()
        losses["main"].backward()
        optimizer.step()
        first = float(losses["log/seg"]) if first is None else first
    # Dice + BCE from a random init falls slowly; the shared UNet3D reaches ~0.88x in 30 steps.
    assert float(losses["log/seg"]) < 0.92 * first
