"""MM-GAN (data-generation family): imputation, staging, synthesis metrics, training signal."""

from __future__ import annotations

import pytest
import torch

from mmbench.methods import MethodConfig, Stage, StepContext
from mmbench.methods.mmgan import MMGAN, OFFICIAL_SCENARIOS, curriculum_range
from mmbench.methods.synthesis_metrics import synthesis_psnr as masked_psnr
from mmbench.methods.synthesis_metrics import synthesis_ssim as masked_ssim
from mmbench.subsets import FULL, MODALITIES, Subset, zero_absent

PATCH = (16, 16, 16)


def make_batch(subset: Subset, n: int = 2, seed: int = 0) -> dict:
    """A toy batch: noise images (zero outside a brain cube) and a nested tumour."""
    g = torch.Generator().manual_seed(seed)
    full = torch.randn(n, 4, *PATCH, generator=g)
    full[:, :, :2] = 0  # background slab, outside the brain mask
    regions = torch.zeros(n, 3, *PATCH)
    regions[:, 0, 4:12, 4:12, 4:12] = 1
    regions[:, 1, 6:10, 6:10, 6:10] = 1
    regions[:, 2, 7:9, 7:9, 7:9] = 1
    full[:, 3] += 2 * regions[:, 0]  # the tumour is visible, so segmentation can learn
    full[:, 1] += 2 * regions[:, 2]
    return {
        "image": zero_absent(full, subset),
        "image_full": full,
        "regions": regions,
        "available": subset.available,
        "subset": subset,
    }


def build(**options) -> MMGAN:
    torch.manual_seed(0)
    return MMGAN(MethodConfig(width=4, depth=2, patch_size=PATCH, options=options))


def ctx(stage: str, subset: Subset = FULL, stage_step: int = 0) -> StepContext:
    return StepContext(
        step=0, total_steps=10, stage=stage, stage_step=stage_step, stage_steps=5, subset=subset
    )


def test_stages_generator_then_segmenter() -> None:
    stages = build().stages()
    assert [s.name for s in stages] == ["synthesis", "segment"]
    assert stages[0].optimizers == ("gen", "disc") and not stages[0].select_on_val
    assert stages[1].optimizers == ("seg",) and stages[1].select_on_val
    # The segmenter gets a full poly schedule of its own (it starts at the full lr).
    assert [s.schedule for s in stages] == ["stage", "stage"]
    assert build(adversarial=False).stages()[0] == Stage(
        "synthesis", ("gen",), fraction=0.3, select_on_val=False, schedule="stage"
    )
    assert build(adversarial=False).discriminator is None


def test_generator_and_segmenter_shapes() -> None:
    model = build().eval()
    subset = Subset.parse("T1ce+FLAIR")
    image = make_batch(subset)["image"]
    with torch.inference_mode():
        assert model.generate(image, subset.available).shape == (2, 4, *PATCH)
        assert model.predict(image, subset.available).shape == (2, 3, *PATCH)


def test_imputed_input_keeps_present_channels_real() -> None:
    model = build().eval()
    subset = Subset.parse("T1+T2")
    image = make_batch(subset)["image"]
    with torch.inference_mode():
        imputed = model.synthesize(image, subset.available)
        synthetic = model.generate(image, subset.available)
    for c, m in enumerate(MODALITIES):
        if m in subset.available:
            assert torch.equal(imputed[:, c], image[:, c])
        else:
            assert torch.equal(imputed[:, c], synthetic[:, c])
            assert imputed[:, c].abs().sum() > 0  # filled, not left at zero


def test_segmenter_reads_the_imputed_volume(monkeypatch: pytest.MonkeyPatch) -> None:
    model = build().eval()
    subset = Subset.parse("FLAIR")
    image = make_batch(subset)["image"]
    seen: list[torch.Tensor] = []
    forward = model.segmenter.forward
    monkeypatch.setattr(model.segmenter, "forward", lambda x: seen.append(x) or forward(x))
    with torch.inference_mode():
        model.predict(image, subset.available)
        expected = model.synthesize(image, subset.available)
    assert torch.equal(seen[0], expected)


def test_generator_losses_and_gradients_separate() -> None:
    model = build()
    model.train()
    losses = model.training_step(make_batch(Subset.parse("T1ce")), ctx("synthesis"))
    assert list(k for k in losses if not k.startswith("log/")) == ["gen", "disc"]
    losses["disc"].backward(retain_graph=True)
    assert all(p.grad is None for p in model.generator.parameters())
    assert any(p.grad is not None for p in model.discriminator.parameters())
    model.zero_grad(set_to_none=True)
    losses = model.training_step(make_batch(Subset.parse("T1ce")), ctx("segment"))
    losses["seg"].backward()
    assert all(p.grad is None for p in model.generator.parameters())  # frozen in stage 2
    assert any(p.grad is not None for p in model.segmenter.parameters())


def test_extra_metrics_rows_for_absent_modalities_only() -> None:
    model = build().eval()
    subset = Subset.parse("T1ce+FLAIR")
    batch = make_batch(subset, n=1)
    rows = model.extra_metrics(batch["image"][0], batch["image_full"][0], subset.available)
    assert sorted((r, m) for r, m, _ in rows) == sorted(
        (mod, metric) for mod in ("T1", "T2") for metric in ("psnr", "ssim")
    )
    assert all(torch.isfinite(torch.tensor(v)) for _, _, v in rows)
    assert model.extra_metrics(batch["image_full"][0], batch["image_full"][0], FULL.available) == []


def test_extra_metrics_never_read_absent_input_channels() -> None:
    model = build().eval()
    subset = Subset.parse("T2")
    batch = make_batch(subset, n=1)
    noisy = batch["image_full"].clone()  # absent channels carry real data here
    a = model.extra_metrics(batch["image"], batch["image_full"], subset.available)
    b = model.extra_metrics(noisy, batch["image_full"], subset.available)
    assert a == b


def test_masked_psnr_and_ssim_reward_a_perfect_synthesis() -> None:
    g = torch.Generator().manual_seed(0)
    target = torch.randn(16, 16, 16, generator=g)
    mask = torch.zeros(16, 16, 16, dtype=torch.bool)
    mask[2:14, 2:14, 2:14] = True
    noisy = target + 0.3 * torch.randn(16, 16, 16, generator=g)
    assert masked_ssim(target, target, mask) == pytest.approx(1.0, abs=1e-4)
    assert masked_ssim(noisy, target, mask) < 0.95
    assert masked_psnr(noisy, target, mask) < masked_psnr(target + 0.01, target, mask)
    # Only voxels inside the mask count.
    outside = noisy.clone()
    outside[~mask] += 100
    assert masked_psnr(outside, target, mask) == masked_psnr(noisy, target, mask)


def test_few_steps_on_a_fixed_batch_reduce_the_losses() -> None:
    model = build()
    opts = model.configure_optimizers(lr=3e-3, weight_decay=0.0)
    batch = make_batch(Subset.parse("T1ce+FLAIR"))
    batch_full = make_batch(FULL)

    def run(stage: str, key: str, b: dict, steps: int) -> tuple[float, float]:
        first = last = 0.0
        for i in range(steps):
            model.train()
            losses = model.training_step(b, ctx(stage))
            for name, loss in losses.items():
                if not name.startswith("log/"):
                    params = [p for g in opts[name].param_groups for p in g["params"]]
                    for p in params:
                        p.grad = None
                    loss.backward(inputs=params, retain_graph=True)
            for name in losses:
                if not name.startswith("log/"):
                    opts[name].step()
            value = float(losses[key].detach())
            first, last = (value, value) if i == 0 else (first, value)
        return first, last

    first, last = run("synthesis", "log/l1", batch, 15)
    assert last < first
    first, last = run("segment", "seg", batch_full, 25)
    assert last < 0.92 * first


def test_l1_is_on_missing_channels_only_with_the_official_weight(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = build(adversarial=False)
    subset = Subset.parse("T1ce+FLAIR")
    batch = make_batch(subset)
    full = batch["image_full"]
    # A generator that is off by 5 on present channels and by 1, 3 on the missing T1, T2.
    offset = torch.tensor([1.0, 5.0, 3.0, 5.0])[None, :, None, None, None]
    monkeypatch.setattr(model, "generate", lambda image, available: full + offset)
    losses = model.training_step(batch, ctx("synthesis", subset))
    assert float(losses["log/l1"]) == pytest.approx((1.0 + 3.0) / 2)
    assert float(losses["gen"]) == pytest.approx(0.9 * 2.0)


def test_generator_reads_no_availability_code_and_never_trains_on_the_full_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = build(adversarial=False)
    seen: list[torch.Tensor] = []
    forward = model.generator.forward
    monkeypatch.setattr(model.generator, "forward", lambda x: seen.append(x) or forward(x))
    batch = make_batch(FULL)
    for step in range(20):
        torch.manual_seed(step)
        losses = model.training_step(batch, ctx("synthesis"))
        assert torch.isfinite(losses["gen"]) and float(losses["log/l1"]) > 0
    assert all(x.shape[1] == 4 for x in seen)  # the four modalities, nothing else
    zeroed = [tuple(bool(x[:, c].eq(0).all()) for c in range(4)) for x in seen]
    assert all(any(z) and not all(z) for z in zeroed)  # some, never no, modality missing
    assert len(set(zeroed)) > 3  # the 14 scenarios are drawn, not one


def test_discriminator_is_conditioned_on_the_real_volume(monkeypatch: pytest.MonkeyPatch) -> None:
    model = build()
    inputs: list[torch.Tensor] = []
    forward = model.discriminator.forward
    monkeypatch.setattr(model.discriminator, "forward", lambda x: inputs.append(x) or forward(x))
    subset = Subset.parse("T2")
    batch = make_batch(subset)
    losses = model.training_step(batch, ctx("synthesis", subset))
    assert len(inputs) == 3  # real pair, detached fake pair, fake pair for the generator
    for x in inputs:
        assert x.shape[1] == 8
        assert torch.equal(x[:, 4:], batch["image_full"])  # the condition is the real volume
    assert torch.equal(inputs[0][:, :4], batch["image_full"])
    assert {"gen", "disc", "log/adv", "log/l1"} <= set(losses)


def test_discriminator_is_training_only() -> None:
    model = build()
    disc = sum(p.numel() for p in model.discriminator.parameters())
    gen_seg = sum(p.numel() for m in (model.generator, model.segmenter) for p in m.parameters())
    assert model.training_only_parameter_count() == disc
    assert model.parameter_count() == gen_seg  # the generator is used at inference


def test_published_recipe_official_gan_optimisers_and_curriculum() -> None:
    model = build(recipe="published")
    opts = model.configure_optimizers(lr=6e-3, weight_decay=1e-5)
    for name in ("gen", "disc"):
        group = opts[name].param_groups[0]
        assert group["lr"] == 2e-4 and group["betas"] == (0.5, 0.999)
        assert model.lr_factor(name, ctx("synthesis")) == 1.0
    assert opts["seg"].param_groups[0]["lr"] == 6e-3
    assert model.lr_factor("seg", ctx("segment")) is None
    assert build().lr_factor("gen", ctx("synthesis")) is None
    # Epochs 0-10 of 60 draw three of the 3-sequence scenarios; the last epochs draw all 14.
    assert curriculum_range(0) == (11, 14) and curriculum_range(59) == (0, 14)
    early = {model.synthesis_subset(FULL, ctx("synthesis", stage_step=0)).name for _ in range(60)}
    assert early == set(OFFICIAL_SCENARIOS[11:])
    late = {model.synthesis_subset(FULL, ctx("synthesis", stage_step=5)).name for _ in range(400)}
    assert late == set(OFFICIAL_SCENARIOS)
    assert all(len(Subset.parse(n).available) in (1, 2, 3) for n in OFFICIAL_SCENARIOS)
    assert len(set(OFFICIAL_SCENARIOS)) == 14
