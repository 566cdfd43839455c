"""U-HVED (multi-task): shapes, gradients, round trip, product of Gaussians and KL."""

from __future__ import annotations

import itertools
import math

import torch

from mmbench.methods import MethodConfig, StepContext
from mmbench.methods.uhved import (
    UHVED,
    gaussian_kl,
    kl_to_unit,
    product_of_gaussians,
    subset_kl,
)
from mmbench.subsets import FULL, MODALITIES, Subset, zero_absent

PATCH = (16, 16, 16)


def config(**options) -> MethodConfig:
    return MethodConfig(width=4, depth=2, patch_size=PATCH, total_steps=10, options=options)


def build(seed: int = 0, **options) -> UHVED:
    torch.manual_seed(seed)
    return UHVED(config(**options))


def make_batch(subset: Subset, n: int = 2, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    full = torch.randn(n, 4, *PATCH, generator=g) * 0.3
    comp = torch.zeros(n, 3, *PATCH)
    comp[:, 1, 3:13, 3:13, 3:13] = 1
    comp[:, 1, 6:10, 6:10, 6:10] = 0
    comp[:, 2, 6:10, 6:10, 6:10] = 1
    full[:, 3] += 2 * comp.amax(1)
    full[:, 1] += 2 * comp[:, 2]
    full[:, :, :2] = 0  # a background slab outside the "brain"
    regions = torch.stack([comp.amax(1), torch.maximum(comp[:, 0], comp[:, 2]), comp[:, 2]], 1)
    return {
        "image": zero_absent(full, subset),
        "image_full": full,
        "regions": regions,
        "compartments": comp,
        "available": subset.available,
        "subset": subset,
    }


def ctx(subset: Subset = FULL, step: int = 0, total: int = 10) -> StepContext:
    return StepContext(step, total, "train", step, total, subset)


def test_predict_and_reconstruct_shapes() -> None:
    model = build().eval()
    subset = Subset.parse("T1ce+FLAIR")
    image = make_batch(subset)["image"]
    with torch.inference_mode():
        prob = model.predict(image, subset.available)
        rec = model.reconstruct(image[..., :14], subset.available)  # padded inside
    assert prob.shape == (2, 3, *PATCH)
    assert prob.min() >= 0 and prob.max() <= 1
    assert rec.shape == (2, 4, 16, 16, 14)


def test_predict_is_deterministic_in_eval_mode() -> None:
    model = build().eval()
    image = make_batch(FULL)["image"]
    with torch.inference_mode():
        first = model.predict(image, FULL.available)
        assert torch.equal(first, model.predict(image, FULL.available))


def test_training_reads_every_encoder_prediction_only_the_available_ones(monkeypatch) -> None:
    model = build()
    subset = Subset.parse("T2")
    losses = model.training_step(make_batch(subset), ctx(subset, step=5))
    assert torch.isfinite(losses["main"])
    assert {"log/seg", "log/recon", "log/kl"} <= set(losses)
    losses["main"].backward()
    # The KL over the 15 subsets' posteriors reaches every encoder (official: all encoded).
    for encoder in model.encoders:
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.parameters())
    for part in (model.seg_decoder, *model.rec_decoders):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())
    calls: list[int] = []
    for m, enc in enumerate(model.encoders):
        forward = enc.forward
        monkeypatch.setattr(enc, "forward", lambda x, m=m, f=forward: calls.append(m) or f(x))
    with torch.inference_mode():
        model.eval().predict(make_batch(subset)["image"], subset.available)
    assert calls == [MODALITIES.index("T2")]


def test_one_decoder_per_output_and_reconstruction_is_training_only() -> None:
    model = build()
    assert len(model.rec_decoders) == 4
    rec = sum(p.numel() for d in model.rec_decoders for p in d.parameters())
    assert model.training_only_parameter_count() == rec
    assert model.parameter_count() + rec == sum(p.numel() for p in model.parameters())


def test_loss_is_seg_plus_a_tenth_of_kl_and_whole_volume_mse() -> None:
    model = build().eval()  # the posterior mean, so the terms are reproducible
    subset = Subset.parse("T1ce+FLAIR")
    batch = make_batch(subset)
    losses = model.training_step(batch, ctx(subset))
    expected = losses["log/seg"] + 0.1 * losses["log/kl"] + 0.1 * losses["log/recon"]
    torch.testing.assert_close(losses["main"].detach(), expected)
    with torch.no_grad():
        rec = torch.cat(
            [
                d([mu for mu, _ in model(batch["image_full"], [1, 3])["posterior"]])
                for d in model.rec_decoders
            ],
            1,
        )
    mse = (rec - batch["image_full"]).square().mean()  # background voxels included
    torch.testing.assert_close(losses["log/recon"], mse)


def test_state_dict_file_round_trip(tmp_path) -> None:
    model = build()
    optimizer = model.configure_optimizers(1e-3, 0.0)["main"]
    model.training_step(make_batch(FULL), ctx())["main"].backward()
    optimizer.step()
    model.eval()
    path = tmp_path / "uhved.pt"
    torch.save(model.state_dict(), path)
    clone = build(seed=99)
    clone.load_state_dict(torch.load(path, weights_only=True))
    clone.eval()
    subset = Subset.parse("T1+FLAIR")
    image = make_batch(subset, seed=4)["image"]
    with torch.inference_mode():
        a = model.predict(image, subset.available)
        b = clone.predict(image, subset.available)
    assert torch.equal(a, b)


def test_product_with_one_expert_and_prior_is_the_closed_form() -> None:
    mu = torch.tensor([[[2.0, -1.0, 0.5]]])  # N=1, K=1, C=3
    var = torch.tensor([[[0.5, 4.0, 1.0]]])
    mean, logvar = product_of_gaussians(mu, var.log())
    # N(μ, σ²) · N(0, 1) ∝ N(μ/(1+σ²), σ²/(1+σ²))
    assert torch.allclose(mean, (mu / (1 + var))[:, 0], atol=1e-6)
    assert torch.allclose(logvar.exp(), (var / (1 + var))[:, 0], atol=1e-6)  # ε = 1e-7


def test_product_of_two_experts_is_precision_weighted() -> None:
    mu = torch.tensor([[[1.0], [3.0]]])  # K=2
    var = torch.tensor([[[1.0], [0.5]]])
    mean, logvar = product_of_gaussians(mu, var.log())
    precision = 1 + 1 / 1.0 + 1 / 0.5
    assert math.isclose(float(logvar.exp()), 1 / precision, rel_tol=1e-5)
    assert math.isclose(float(mean), (1.0 / 1.0 + 3.0 / 0.5) / precision, rel_tol=1e-5)


def test_without_modality_information_the_fused_posterior_is_the_prior() -> None:
    empty = torch.zeros(2, 0, 3, 4, 4, 4)  # no available expert
    mean, logvar = product_of_gaussians(empty, empty)
    assert mean.shape == (2, 3, 4, 4, 4)
    assert torch.equal(mean, torch.zeros_like(mean))
    assert torch.allclose(logvar, torch.zeros_like(logvar), atol=1e-6)
    # An expert with vanishing precision tells nothing either.
    mu = torch.randn(2, 2, 3, 4, 4, 4)
    mean, logvar = product_of_gaussians(mu, torch.full_like(mu, 60.0))
    assert torch.allclose(mean, torch.zeros_like(mean), atol=1e-12)
    assert torch.allclose(logvar, torch.zeros_like(logvar), atol=1e-6)


def test_kl_is_nonnegative_and_zero_for_the_unit_gaussian() -> None:
    zero = torch.zeros(2, 3, 4, 4, 4)
    assert abs(float(kl_to_unit(zero, zero))) < 1e-6  # 0 up to the official ε = 1e-7
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        mu = torch.randn(2, 3, 4, 4, 4, generator=g) * 3
        logvar = torch.randn(2, 3, 4, 4, 4, generator=g) * 2
        assert float(kl_to_unit(mu, logvar)) > 0
    # closed form for one element: KL(N(1, e) || N(0, 1)) = (e + 1 - 1 - 1) / 2
    one = torch.ones(1)
    assert math.isclose(float(kl_to_unit(one, one)), (math.e - 1) / 2, rel_tol=1e-6)


def expected_subset_kl(n_available: int) -> float:
    """Closed form of the official KL when all four experts are N(0, 1): a subset of k
    experts with the prior has variance 1/(1+k)."""

    def kl(v1: float, v2: float) -> float:  # KL(N(0, v1) || N(0, v2))
        return 0.5 * (-1 + math.log(v2) - math.log(v1) + v1 / v2)

    v_a = 1 / (1 + n_available)
    inter = sum(math.comb(4, k) * kl(v_a, 1 / (1 + k)) for k in range(1, 5))
    prior = sum(math.comb(4, k) * kl(1 / (1 + k), 1.0) for k in range(1, 5))
    return inter / 14 + prior / 15


def test_kl_is_averaged_over_all_subset_posteriors_known_answer() -> None:
    mu = torch.zeros(1, 4, 2, 3, 3, 3)
    logvar = torch.zeros_like(mu)
    for available in ([0, 1, 2, 3], [2], [0, 3]):
        value = float(subset_kl(mu, logvar, available))
        assert math.isclose(value, expected_subset_kl(len(available)), rel_tol=1e-5)
    # With everything available the inter-subset part compares the full posterior with each
    # subset's, so it is positive even though the sample only uses the full product.
    assert float(subset_kl(mu, logvar, [0, 1, 2, 3])) > 0


def test_vectorised_kl_equals_the_official_loop_over_subsets() -> None:
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(2, 4, 3, 4, 4, 4, generator=g, dtype=torch.float64)
    logvar = torch.randn(2, 4, 3, 4, 4, 4, generator=g, dtype=torch.float64)
    for available in ([1], [0, 2, 3], [0, 1, 2, 3]):
        a_mu, a_lv = product_of_gaussians(mu[:, available], logvar[:, available])
        inter = prior = 0.0
        for k in range(1, 5):
            for subset in itertools.combinations(range(4), k):
                s_mu, s_lv = product_of_gaussians(mu[:, list(subset)], logvar[:, list(subset)])
                inter += float(gaussian_kl(a_mu, a_lv, s_mu, s_lv))
                prior += float(kl_to_unit(s_mu, s_lv))
        expected = inter / 14 + prior / 15
        assert math.isclose(float(subset_kl(mu, logvar, available)), expected, rel_tol=1e-5)


def test_published_recipe() -> None:
    model = build(recipe="published")
    opt = model.configure_optimizers(6e-3, 0.0)["main"]
    assert opt.param_groups[0]["lr"] == 1e-3 and opt.param_groups[0]["weight_decay"] == 1e-5
    assert model.lr_factor("main", ctx()) == 1.0
    assert build().lr_factor("main", ctx()) is None
    torch.manual_seed(0)
    draws = [tuple(model.training_available(FULL.available)) for _ in range(2000)]
    sizes = [len(d) for d in draws]
    assert all(sizes.count(k) > 0 for k in range(1, 5))
    # The number of modalities is uniform (1/4 each), so the full set is drawn about 1/4 of
    # the time (1/15 under the loop's uniform draw over subsets).
    assert abs(sizes.count(4) / 2000 - 0.25) < 0.04
    assert build().training_available(("T1", "FLAIR")) == [0, 3]


def test_extra_metrics_give_psnr_for_absent_modalities() -> None:
    model = build().eval()
    subset = Subset.parse("T1ce")
    batch = make_batch(subset)
    rows = model.extra_metrics(batch["image"][:1], batch["image_full"][:1], subset.available)
    assert [r[0] for r in rows] == ["T1", "T2", "FLAIR"]
    assert all(r[1] == "psnr" and math.isfinite(r[2]) for r in rows)
    assert model.extra_metrics(batch["image_full"], batch["image_full"], FULL.available) == []


def test_few_steps_on_a_toy_batch_reduce_the_segmentation_loss() -> None:
    model = build()
    optimizer = model.configure_optimizers(3e-3, 0.0)["main"]
    batch = make_batch(FULL)
    first = None
    for step in range(30):
        losses = model.training_step(batch, ctx(step=step, total=30))
        optimizer.zero_grad()
        losses["main"].backward()
        optimizer.step()
        first = float(losses["log/seg"]) if first is None else first
    # Dice + BCE from a random init falls slowly; the shared UNet3D reaches ~0.88x in 30 steps.
    assert float(losses["log/seg"]) < 0.92 * first
