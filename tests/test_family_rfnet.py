"""RFNet (robustness-enhancement): the faithful port's behaviour on mmbench's contract (shapes,
which modules train when, the fusion-loss warm-up, the width rule, the published recipe)."""

from __future__ import annotations

import pytest
import torch

from mmbench.methods import MethodConfig, StepContext
from mmbench.methods.rfnet.losses import fusion_weight, published_epoch
from mmbench.methods.rfnet.network import SLOT_ORDER, RFNetDims, check_size
from mmbench.methods.rfnet.strategy import RFNet, published_lr_factor, slot_mask, to_slots
from mmbench.subsets import FULL, Subset, zero_absent

PATCH = (16, 16, 16)


def build(seed: int = 0, **options) -> RFNet:
    torch.manual_seed(seed)
    return RFNet(MethodConfig(width=4, patch_size=PATCH, total_steps=10, options=options))


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


def ctx(subset: Subset = FULL, step: int = 1, total: int = 10) -> StepContext:
    return StepContext(step, total, "train", step, total, subset)


def test_predict_gives_nested_region_probabilities() -> None:
    model = build().eval()
    with torch.inference_mode():
        out = model.predict(make_batch(FULL)["image"], FULL.available)
    assert out.shape == (2, 3, *PATCH)
    assert out.min() >= 0 and out.max() <= 1
    wt, tc, et = out.unbind(1)
    assert (wt >= tc - 1e-6).all() and (tc >= et - 1e-6).all()


def test_canonical_input_is_permuted_to_the_official_slots() -> None:
    x = torch.arange(4.0).reshape(1, 4, 1, 1, 1)  # T1, T1ce, T2, FLAIR
    assert to_slots(x).flatten().tolist() == [3.0, 1.0, 0.0, 2.0]  # FLAIR, T1ce, T1, T2
    assert slot_mask(("T1", "FLAIR"), 2).tolist() == [[True, False, True, False]] * 2
    assert SLOT_ORDER == ("FLAIR", "T1ce", "T1", "T2")


def test_predict_runs_only_the_available_encoders() -> None:
    model = build().eval()
    calls: list[int] = []
    for slot, encoder in enumerate(model.net.encoders):
        encoder.register_forward_hook(lambda *_, s=slot: calls.append(s))
    with torch.no_grad():
        model.predict(torch.randn(1, 4, *PATCH), ("T1ce", "T2"))
    assert sorted(calls) == [SLOT_ORDER.index("T1ce"), SLOT_ORDER.index("T2")]


def test_absent_encoder_weights_do_not_change_predict() -> None:
    model = build().eval()
    subset = Subset.parse("T1ce+FLAIR")
    image = make_batch(subset)["image"]
    with torch.inference_mode():
        before = model.predict(image, subset.available)
        for m in ("T1", "T2"):
            for p in model.net.encoders[SLOT_ORDER.index(m)].parameters():
                p.add_(torch.randn_like(p) * 5)
        assert torch.equal(before, model.predict(image, subset.available))
        # ...whereas a present modality's encoder does matter (the check can fail).
        for p in model.net.encoders[SLOT_ORDER.index("FLAIR")].parameters():
            p.add_(torch.randn_like(p) * 5)
        assert not torch.equal(before, model.predict(image, subset.available))


def test_running_every_encoder_and_masking_equals_running_the_available_ones() -> None:
    model = build().eval()
    x = torch.randn(2, 4, *PATCH)
    mask = slot_mask(("T2",), 2)
    with torch.no_grad():
        some, _ = model.forward_all(x, mask)
        every, sep = model.forward_all(x, mask, auxiliary=True)
    assert torch.equal(some.logits, every.logits)
    assert sep is not None and len(sep) == 4 and sep[0].shape == (2, 4, *PATCH)


def _grad_norm(module: torch.nn.Module) -> float:
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


def test_every_encoder_trains_whatever_the_subset() -> None:
    """Officially all four encoders and the shared per-modality decoder run on the full images
    every step: the per-modality loss trains an absent modality's encoder too."""
    model = build()
    subset = Subset.parse("T1+T2")
    seen: list[int] = []
    model.sep_decoder.register_forward_hook(lambda m, inp, out: seen.append(out.shape[0]))
    losses = model.training_step(make_batch(subset), ctx(subset, step=9))
    assert seen == [8]  # four slots × batch 2, stacked on the batch axis
    assert {"log/fuse", "log/sep", "log/prm", "log/fuse_weight"} <= set(losses)
    losses["main"].backward()
    for encoder in model.net.encoders:
        assert _grad_norm(encoder) > 0
    assert _grad_norm(model.sep_decoder) > 0


def test_warm_up_gives_no_gradient_to_the_last_fusion_level() -> None:
    """During the warm-up (fused loss × 0) only RFM1, d1_c2, d1_out and seg_layer of the fused
    decoder get no gradient; the deeper fusion levels still learn through the region maps."""
    decoder_parts = ("fusion.0", "merge.0", "out.0", "head")
    for step, expect_zero in ((1, True), (10, False)):  # total 10: warm-up = step 1 only
        model = build()
        losses = model.training_step(make_batch(FULL), ctx(FULL, step=step, total=10))
        assert float(losses["log/fuse_weight"]) == (0.0 if expect_zero else 1.0)
        losses["main"].backward()
        dec = model.net.decoder
        zero = [_grad_norm(dec.get_submodule(name)) == 0 for name in decoder_parts]
        assert all(zero) if expect_zero else not any(zero)
        assert _grad_norm(dec.fusion[1]) > 0 and _grad_norm(dec.fusion[3]) > 0


def test_the_fused_loss_trains_no_region_map_generator() -> None:
    """The fusion reads the region maps detached: the fused loss alone leaves every prm
    generator without gradient, but reaches the fusion modules and the encoders."""
    model = build()
    batch = make_batch(Subset.parse("T1ce"))
    out, sep = model.forward_all(to_slots(batch["image_full"]), slot_mask(("T1ce",), 2))
    torch.softmax(out.logits, 1)[:, 1:].mean().backward()
    assert _grad_norm(model.net.decoder.prm) == 0
    assert _grad_norm(model.net.decoder.fusion) > 0
    assert _grad_norm(model.net.encoders[SLOT_ORDER.index("T1ce")]) > 0
    assert _grad_norm(model.net.encoders[SLOT_ORDER.index("T1")]) == 0  # absent: zeroed


def test_absent_gate_multiplies_zeros() -> None:
    torch.manual_seed(0)
    fusion = build().net.decoder.fusion[1]
    masked = torch.randn(1, 4, 8, 4, 4, 4)
    masked[:, 2:] = 0  # T1, T2 absent
    prm = torch.softmax(torch.randn(1, 4, 4, 4, 4), 1)
    gates = fusion.gate_values(masked, prm)
    assert gates.shape == (1, 4, 4) and (gates > 0).all() and (gates < 1).all()
    with torch.no_grad():  # the absent slots' gate rows change nothing
        base = fusion(masked, prm)
        for gate in fusion.gates:
            gate[2].weight[2:].normal_()
            gate[2].bias[2:].fill_(9.0)
        assert torch.equal(base, fusion(masked, prm))


def test_fusion_warm_up_maps_the_official_epochs_onto_the_steps() -> None:
    # 300 steps: one step per official epoch; epochs 0-19 are the warm-up
    assert [fusion_weight(s, 300) for s in (1, 20, 21, 300)] == [0.0, 0.0, 1.0, 1.0]
    # 400 steps: epoch = floor(300 (step - 1) / 400) < 20 for steps 1..27
    assert fusion_weight(27, 400) == 0.0 and fusion_weight(28, 400) == 1.0
    assert published_epoch(400, 400) == 299
    assert fusion_weight(1, 400, start_epoch=0) == 1.0
    model = build(fusion_start_epoch=0)
    assert model.fusion_weight(ctx(step=1)) == 1.0


def test_published_schedule_is_the_per_epoch_poly_scaled_to_the_budget() -> None:
    assert published_lr_factor(1, 400) == 1.0
    factors = [published_lr_factor(s, 400) for s in range(1, 401)]
    assert all(a >= b for a, b in zip(factors, factors[1:]))
    assert factors[-1] == pytest.approx(round(2e-4 * (1 - 299 / 300) ** 0.9, 8) / 2e-4)
    assert len({published_lr_factor(s, 3000) for s in range(1, 11)}) == 1  # 10 steps/epoch


def test_published_recipe_optimiser() -> None:
    model = build(recipe="published")
    group = model.configure_optimizers(lr=0.5, weight_decay=0.5)["main"].param_groups[0]
    assert group["lr"] == 2e-4 and group["weight_decay"] == 1e-4 and group["amsgrad"]
    assert model.lr_factor("main", ctx(step=1)) == 1.0
    assert build().lr_factor("main", ctx(step=1)) is None  # shared: the loop's schedule


def test_width_rule() -> None:
    assert RFNetDims.from_width(16) == RFNetDims(16, 16, 128)  # official
    assert RFNetDims.from_width(8) == RFNetDims(8, 8, 64)
    assert RFNetDims.from_width(8, 0.5) == RFNetDims(4, 4, 32)  # the quick preset
    assert RFNetDims.from_width(4).basic == 4  # never below 4
    with pytest.raises(ValueError, match="multiple of 4"):
        RFNetDims(basic=6)
    model = build()
    assert model.dims == RFNetDims(4, 4, 32)
    total = sum(p.numel() for p in model.parameters())
    sep = sum(p.numel() for p in model.sep_decoder.parameters())
    assert model.training_only_parameter_count() == sep
    assert model.parameter_count() == total - sep


def test_spatial_size_must_allow_three_halvings() -> None:
    check_size((16, 24, 32))
    for bad in [(8, 16, 16), (16, 20, 16)]:
        with pytest.raises(ValueError, match="multiples of 8"):
            check_size(bad)


def test_state_dict_file_round_trip(tmp_path) -> None:
    model = build()
    optimizer = model.configure_optimizers(1e-3, 0.0)["main"]
    model.training_step(make_batch(FULL), ctx(step=5))["main"].backward()
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
        assert torch.equal(
            model.predict(image, subset.available), clone.predict(image, subset.available)
        )


def test_few_steps_on_a_toy_batch_reduce_the_fused_loss() -> None:
    model = build(fusion_start_epoch=0)
    optimizer = model.configure_optimizers(3e-3, 0.0)["main"]
    batch = make_batch(FULL)
    first = None
    for step in range(1, 21):
        losses = model.training_step(batch, ctx(step=step, total=20))
        optimizer.zero_grad()
        losses["main"].backward()
        optimizer.step()
        first = float(losses["log/fuse"]) if first is None else first
    assert float(losses["log/fuse"]) < 0.8 * first


def test_stacked_per_modality_decoder_equals_one_call_per_slot() -> None:
    """Training stacks the four slots on the batch axis (instance norm is per sample); the
    fixtures check the one-call-per-slot path used without gradients."""
    model = build()
    x = torch.randn(2, 4, *PATCH)
    mask = slot_mask(("FLAIR",), 2)
    stacked = model.forward_all(x, mask, auxiliary=True)[1]
    with torch.no_grad():
        separate = model.forward_all(x, mask, auxiliary=True)[1]
    assert stacked is not None and separate is not None
    for a, b in zip(stacked, separate):
        assert torch.allclose(a.detach(), b, atol=1e-5)
