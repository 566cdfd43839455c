"""ShaSpec (feature-generation family): shared/specific features, generation, auxiliary losses."""

from __future__ import annotations

import torch

from mmbench.methods import MethodConfig, StepContext
from mmbench.methods.shaspec import ShaSpec
from mmbench.subsets import ALL_SUBSETS, FULL, MODALITIES, Subset, zero_absent

PATCH = (16, 16, 16)


def build(seed: int = 0, **options) -> ShaSpec:
    torch.manual_seed(seed)
    return ShaSpec(MethodConfig(width=4, patch_size=PATCH, depth=2, options=options))


def make_batch(subset: Subset, n: int = 2, seed: int = 0) -> dict:
    """A toy batch: noise images with a nested tumour visible in T1ce and FLAIR."""
    g = torch.Generator().manual_seed(seed)
    full = torch.randn(n, 4, *PATCH, generator=g)
    regions = torch.zeros(n, 3, *PATCH)
    regions[:, 0, 4:12, 4:12, 4:12] = 1
    regions[:, 1, 6:10, 6:10, 6:10] = 1
    regions[:, 2, 7:9, 7:9, 7:9] = 1
    full[:, 3] += 2 * regions[:, 0]
    full[:, 1] += 2 * regions[:, 2]
    return {
        "image": zero_absent(full, subset),
        "image_full": full,
        "regions": regions,
        "available": subset.available,
        "subset": subset,
    }


def ctx(subset: Subset = FULL) -> StepContext:
    return StepContext(
        step=0, total_steps=10, stage="train", stage_step=0, stage_steps=5, subset=subset
    )


def test_feature_shapes() -> None:
    model = build().eval()
    subset = Subset.parse("T1+FLAIR")
    with torch.inference_mode():
        feats = model.encode(make_batch(subset)["image"], subset.available)
    assert feats.available == [0, 3]
    assert [f.shape for f in feats.shared] == [
        (4, 2, 2, 16, 16, 16),
        (4, 2, 4, 8, 8, 8),
        (4, 2, 8, 4, 4, 4),
    ]
    assert [f.shape for f in feats.fused] == [(2, 4, 16, 16, 16), (2, 8, 8, 8, 8), (2, 16, 4, 4, 4)]
    assert model.predict(make_batch(subset)["image"], subset.available).shape == (2, 3, *PATCH)


def test_missing_shared_feature_is_the_mean_of_available_ones() -> None:
    model = build().eval()
    for subset in (Subset.parse("T1ce+T2+FLAIR"), Subset.parse("T1+T1ce"), Subset.parse("T2")):
        image = make_batch(subset)["image"]
        with torch.inference_mode():
            feats = model.encode(image, subset.available)
            own = {
                c: model.shared_encoder(image[:, c : c + 1])
                for c, m in enumerate(MODALITIES)
                if m in subset.available
            }
        for level, shared in enumerate(feats.shared):
            mean = torch.stack([own[c][level] for c in own]).mean(0)
            for c, m in enumerate(MODALITIES):
                if m in subset.available:
                    torch.testing.assert_close(shared[c], own[c][level], atol=1e-5, rtol=1e-5)
                else:
                    torch.testing.assert_close(shared[c], mean, atol=1e-5, rtol=1e-5)
                    assert torch.count_nonzero(feats.specific[level][c]) == 0


def test_shared_encoder_is_one_module_for_all_modalities() -> None:
    model = build()
    assert isinstance(model.shared_encoder.stem.conv1.conv, torch.nn.Conv3d)
    assert model.shared_encoder.stem.conv1.conv.in_channels == 1
    assert len(model.specific_encoders) == 4
    assert len({id(e) for e in model.specific_encoders}) == 4


def test_auxiliary_losses_are_logged_and_alignment_vanishes_for_one_modality() -> None:
    model = build()
    model.train()
    losses = model.training_step(make_batch(FULL), ctx())
    assert {"main", "log/seg", "log/domain", "log/align"} <= set(losses)
    assert losses["log/align"] > 0 and losses["log/domain"] > 0
    expected = (
        losses["log/seg"]
        + model.domain_weight * losses["log/domain"]
        + model.align_weight * losses["log/align"]
    )
    torch.testing.assert_close(losses["main"].detach(), expected)
    one = model.training_step(make_batch(Subset.parse("T2")), ctx())
    assert float(one["log/align"]) == 0.0


def test_domain_loss_trains_the_specific_encoders_only_through_their_modality() -> None:
    model = build()
    model.train()
    subset = Subset.parse("T1ce+FLAIR")
    feats = model.encode(make_batch(subset)["image"], subset.available)
    pooled = feats.specific[-1][feats.available].mean(dim=(3, 4, 5)).flatten(0, 1)
    labels = torch.tensor([1, 1, 3, 3])
    torch.nn.functional.cross_entropy(model.domain_head(pooled), labels).backward()
    grads = [
        any(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.parameters())
        for enc in model.specific_encoders
    ]
    assert grads == [False, True, False, True]


def test_state_dict_round_trip_through_a_file(tmp_path) -> None:
    model = build().eval()
    path = tmp_path / "shaspec.pt"
    torch.save(model.state_dict(), path)
    clone = build(seed=5).eval()
    clone.load_state_dict(torch.load(path, weights_only=True))
    for subset in (FULL, Subset.parse("T1ce")):
        image = make_batch(subset, seed=2)["image"]
        with torch.inference_mode():
            assert torch.equal(
                model.predict(image, subset.available), clone.predict(image, subset.available)
            )


def test_every_subset_runs() -> None:
    model = build().eval()
    with torch.inference_mode():
        for subset in ALL_SUBSETS:
            out = model.predict(make_batch(subset, n=1)["image"], subset.available)
            assert out.shape == (1, 3, *PATCH) and torch.isfinite(out).all()


def test_a_few_dozen_steps_on_a_fixed_batch_reduce_the_segmentation_loss() -> None:
    model = build()
    opt = model.configure_optimizers(lr=3e-3, weight_decay=0.0)["main"]
    batch = make_batch(Subset.parse("T1ce+FLAIR"))
    seg = []
    for _ in range(30):
        model.train()
        losses = model.training_step(batch, ctx())
        opt.zero_grad()
        losses["main"].backward()
        opt.step()
        seg.append(float(losses["log/seg"]))
    assert min(seg[-5:]) < 0.92 * seg[0], seg
