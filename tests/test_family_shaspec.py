"""ShaSpec (feature-generation family): the faithful network's donor rule, fusion, skips, losses,
recipes and size rule on tiny widths (the official numbers are in test_official_shaspec.py)."""

from __future__ import annotations

import pytest
import torch

from mmbench.methods import MethodConfig, StepContext
from mmbench.methods.shaspec.losses import bce_loss, dice_loss, shared_l1
from mmbench.methods.shaspec.network import SLOT_ORDER, ShaSpecDims, padded_size
from mmbench.methods.shaspec.strategy import (
    WARMUP,
    WARMUP_STAGE,
    ShaSpec,
    available_slots,
    published_lr_factor,
    to_slots,
)
from mmbench.subsets import ALL_SUBSETS, FULL, Subset, zero_absent

PATCH = (16, 32, 32)


def build(seed: int = 0, patch=PATCH, **options) -> ShaSpec:
    torch.manual_seed(seed)
    return ShaSpec(MethodConfig(width=4, patch_size=patch, options=options))


def make_batch(subset: Subset, n: int = 2, seed: int = 0, patch=PATCH) -> dict:
    """Noise images with a nested tumour visible in T1ce and FLAIR."""
    g = torch.Generator().manual_seed(seed)
    full = torch.randn(n, 4, *patch, generator=g)
    regions = torch.zeros(n, 3, *patch)
    regions[:, 0, 4:12, 8:24, 8:24] = 1
    regions[:, 1, 6:10, 12:20, 12:20] = 1
    regions[:, 2, 7:9, 14:18, 14:18] = 1
    full[:, 3] += 2 * regions[:, 0]
    full[:, 1] += 2 * regions[:, 2]
    return {
        "image": zero_absent(full, subset),
        "image_full": full,
        "regions": regions,
        "available": subset.available,
        "subset": subset,
    }


def ctx(subset: Subset = FULL, stage: str = "train", step: int = 1) -> StepContext:
    return StepContext(
        step=step, total_steps=10, stage=stage, stage_step=step, stage_steps=10, subset=subset
    )


def test_width_rule_and_sizes() -> None:
    assert ShaSpecDims.from_width(16) == ShaSpecDims()
    quick = ShaSpecDims.from_width(8)
    assert quick.scale == 1 / 8 and quick.stem == 8 and quick.planes == (8, 16, 32, 40)
    assert quick.aspp == 32 and quick.decoder == (4, 8, 16, 32)
    assert quick.stage_channels == (8, 32, 64, 128, 160)
    assert padded_size((16, 16, 16)) == (16, 32, 32)
    assert padded_size((32, 64, 96)) == (32, 64, 96)


def test_forward_shapes_and_what_the_decoder_sees() -> None:
    model = build().eval()
    subset = Subset.parse("T1+FLAIR")
    x = to_slots(make_batch(subset)["image"])
    avail = available_slots(subset.available)
    assert avail == [SLOT_ORDER.index("FLAIR"), SLOT_ORDER.index("T1")]
    with torch.no_grad():
        out = model.forward_all(x, avail, donor=avail[0])
    a = model.dims.aspp
    assert out.logits.shape == (2, 3, *PATCH)
    assert out.shared.shape == (2, 4, a, 1, 1, 1)
    assert out.fused.shape == (2, 4 * a, 1, 1, 1)
    # skips: the shared backbone outputs of all four slots, concatenated
    assert [t.shape[1] for t in out.shared_layers] == [4 * c for c in model.dims.stage_channels]
    assert out.shared_layers[0].shape[2:] == (16, 16, 16)


def test_missing_slots_get_the_first_available_shared_feature() -> None:
    model = build().eval()
    for name in ("T1ce+T2", "T1+T1ce+T2", "T2"):
        subset = Subset.parse(name)
        avail = available_slots(subset.available)
        x = to_slots(make_batch(subset)["image"])
        assert model.donor_slot(avail, training=False) == avail[0]
        with torch.no_grad():
            out = model.forward_all(x, avail, model.donor_slot(avail, training=False))
        a = model.dims.aspp
        for s in range(4):
            slot = out.fused[:, s * a : (s + 1) * a]
            if s in avail:
                spec = out.specific[s]
                expected = model.net.composition(out.shared[:, s], spec)
                torch.testing.assert_close(slot, expected)
            else:
                assert torch.equal(slot, out.shared[:, avail[0]])


def test_mean_donor_is_the_mean_of_the_available_shared_features() -> None:
    model = build(donor="mean").eval()
    subset = Subset.parse("T1+T2+FLAIR")
    avail = available_slots(subset.available)
    assert model.donor_slot(avail, training=True) is None
    with torch.no_grad():
        out = model.forward_all(to_slots(make_batch(subset)["image"]), avail, None)
    torch.testing.assert_close(out.generated, out.shared[:, avail].mean(1))


def test_training_donor_is_a_random_available_modality() -> None:
    model = build()
    avail = [0, 2, 3]
    torch.manual_seed(0)
    donors = {model.donor_slot(avail, training=True) for _ in range(40)}
    assert donors == set(avail)
    assert model.donor_slot([1], training=True) == 1


def test_losses_are_the_official_terms_with_the_official_weights() -> None:
    # 32³: the bottleneck is 2×1×1; at 16×32×32 it is one voxel and InstanceNorm makes every
    # shared feature its bias (0 at initialisation), as officially
    model = build(patch=(32, 32, 32)).train()
    batch = make_batch(Subset.parse("T1ce"), patch=(32, 32, 32))
    losses = model.training_step(batch, ctx(Subset.parse("T1ce")))
    expected = (
        losses["log/dice"]
        + losses["log/bce"]
        + 0.1 * losses["log/shared_l1"]
        + 0.02 * losses["log/domain"]
    )
    torch.testing.assert_close(losses["main"].detach(), expected)
    assert float(losses["log/shared_l1"]) > 0  # missing slots are included, as officially


def test_loss_formulas_on_known_values() -> None:
    logits = torch.zeros(1, 3, 2, 1, 1)
    target = torch.tensor([1.0, 0.0]).reshape(1, 1, 2, 1, 1).expand(1, 3, 2, 1, 1)
    # p = 0.5 everywhere: Dice 1 - 2*0.5/(1+1+1) per channel; BCE log 2 per channel, summed
    assert float(dice_loss(logits, target)) == pytest.approx(1 - 1 / 3)
    assert float(bce_loss(logits, target)) == pytest.approx(3 * torch.log(torch.tensor(2.0)))
    shared = torch.arange(4.0).reshape(1, 4, 1, 1, 1, 1)
    assert float(shared_l1(shared)) == pytest.approx(1 + 1 + 1 + 3)


def test_domain_loss_reaches_the_specific_encoders_of_missing_slots_too() -> None:
    model = build().train()
    subset = Subset.parse("T1ce+FLAIR")
    batch = make_batch(subset)
    out = model.forward_all(to_slots(batch["image"]), available_slots(subset.available), 0)
    from mmbench.methods.shaspec.losses import domain_loss

    domain_loss(model.domain_logits(out)).backward()
    grads = [
        any(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.parameters())
        for enc in model.net.specific_encoders
    ]
    assert all(grads)


def test_recipes_stages_and_schedule() -> None:
    shared = build().stages()
    assert [s.name for s in shared] == [WARMUP_STAGE, "train"]
    assert shared[0].subset == FULL.name and shared[0].fraction == WARMUP == pytest.approx(80 / 180)
    published = build(recipe="published")
    stages = published.stages()
    assert stages[0].fraction == pytest.approx(80 / 180) and stages[0].subset == FULL.name
    opt = published.configure_optimizers(lr=0.5, weight_decay=0.5)["main"]
    assert isinstance(opt, torch.optim.SGD)
    group = opt.param_groups[0]
    assert group["lr"] == 1e-2 and group["momentum"] == 0.99 and group["nesterov"]
    assert group["weight_decay"] == 0
    assert build(warmup=0.0).stages()[0].name == "train"
    # poly over the warm-up, then the official restart over the whole run
    warm = StepContext(1, 180, WARMUP_STAGE, 1, 80, FULL)
    assert published_lr_factor(warm) == 1.0
    after = StepContext(81, 180, "train", 1, 100, FULL)
    assert published_lr_factor(after) == pytest.approx((1 - 80 / 180) ** 0.9)


def test_parameter_counts_separate_the_domain_classifier() -> None:
    model = build()
    total = sum(p.numel() for p in model.parameters())
    assert model.training_only_parameter_count() == model.dims.aspp * 4 + 4
    assert model.parameter_count() + model.training_only_parameter_count() == total


def test_every_subset_runs_at_an_unpadded_and_a_padded_size() -> None:
    model = build().eval()
    with torch.inference_mode():
        for patch in (PATCH, (16, 16, 16)):
            for subset in ALL_SUBSETS:
                image = make_batch(subset, n=1, patch=patch)["image"]
                out = model.predict(image, subset.available)
                assert out.shape == (1, 3, *patch) and torch.isfinite(out).all()


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


def test_a_few_steps_after_a_full_modality_start_reduce_the_segmentation_loss() -> None:
    model = build()
    opt = model.configure_optimizers(lr=3e-3, weight_decay=0.0)["main"]
    seg = []
    for i in range(24):
        subset = FULL if i < 2 else Subset.parse("T1ce+FLAIR")
        model.train()
        losses = model.training_step(make_batch(subset), ctx(subset, step=i + 1))
        opt.zero_grad()
        losses["main"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 12.0)
        opt.step()
        seg.append(float(losses["log/dice"] + losses["log/bce"]))
    assert all(torch.isfinite(torch.tensor(seg)))
    assert min(seg[-4:]) < 0.9 * seg[2], seg
