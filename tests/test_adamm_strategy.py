"""AdaMM / SMU-Net strategies: adapter selection, the whole-volume gate, variants and their
corrections, optimisers and recipes, loss bookkeeping, toy training."""

from __future__ import annotations

import math

import pytest
import torch
from monai.inferers import sliding_window_inference

from mmbench.methods import MethodConfig, StepContext, method_info
from mmbench.methods.adamm import AdaMM, AdaMMNoBBDM, AdaMMNoGARM, AdaMMNoLGRM, SMUNet
from mmbench.subsets import FULL, Subset, zero_absent

S = 16


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny convs run several times faster on one thread, above all on shared cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def config(total_steps: int = 100, **options) -> MethodConfig:
    return MethodConfig(
        width=4, patch_size=(S, S, S), total_steps=total_steps, options=dict(options)
    )


def batch(subset: Subset, n: int = 2, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    full = torch.randn(n, 4, S, S, S, generator=g)
    comp = torch.zeros(n, 3, S, S, S)
    comp[:, 1, 3:13, 3:13, 3:13] = 1
    comp[:, 1, 5:11, 5:11, 5:11] = 0
    comp[:, 2, 5:11, 5:11, 5:11] = 1
    comp[:, 2, 7:9, 7:9, 7:9] = 0
    comp[:, 0, 7:9, 7:9, 7:9] = 1
    # Make the lesion visible in every modality so that a toy model can learn it.
    full[:, :, 3:13, 3:13, 3:13] += 2.0
    return {
        "image": zero_absent(full, subset),
        "image_full": full,
        "compartments": comp,
        "regions": comp,
        "available": subset.available,
        "subset": subset,
    }


def ctx(step: int, total: int = 100, subset: Subset = FULL) -> StepContext:
    return StepContext(step, total, "train", step, total, subset)


def train_steps(model, opts, b, steps: int, start: int = 1) -> list[dict]:
    """What the loop does: every loss into its own optimiser's parameters, then all steps."""
    logs = []
    for i in range(start, start + steps):
        losses = model.training_step(b, ctx(i, subset=b["subset"]))
        for name, opt in opts.items():
            params = [p for g in opt.param_groups for p in g["params"]]
            for p in params:
                p.grad = None
            losses[name].backward(inputs=params, retain_graph=True)
        for opt in opts.values():
            opt.step()
        logs.append({k: float(torch.as_tensor(v).detach()) for k, v in losses.items()})
    return logs


def open_gate(model: AdaMM) -> None:
    with torch.no_grad():
        model.presence_s.conv2.bias.fill_(10.0)  # every label judged present


# ----------------------------------------------------------------------------- registry
def test_registered_names_family_and_declared_options() -> None:
    for name, cls in [
        ("adamm", AdaMM),
        ("adamm-no-garm", AdaMMNoGARM),
        ("adamm-no-bbdm", AdaMMNoBBDM),
        ("adamm-no-lgrm", AdaMMNoLGRM),
        ("smunet", SMUNet),
    ]:
        info = method_info(name)
        assert info.cls is cls and info.family == "knowledge-distillation"
        declared = cls.declared_options()
        assert {"variant", "recipe", "fix_disc_adam", "fix_eval_mode"} <= set(declared)
        assert ("fix_gsm" in declared) == (cls is not SMUNet)
    with pytest.raises(ValueError, match="variant"):
        AdaMM(config(variant="nonsense"))
    with pytest.raises(ValueError, match="recipe"):
        AdaMM(config(recipe="paper"))


def test_ablations_drop_their_components_and_terms() -> None:
    torch.manual_seed(0)
    assert AdaMMNoGARM(config()).garm is None
    no_bbdm = AdaMMNoBBDM(config())
    assert no_bbdm.disc is None and [s.optimizers for s in no_bbdm.stages()] == [("main",)]
    no_lgrm = AdaMMNoLGRM(config())
    assert no_lgrm.presence_s is None and no_lgrm.presence_t is None
    smu = SMUNet(config())
    assert smu.adapters is None and smu.garm is None and smu.presence_s is None
    assert smu.disc is not None
    b = batch(Subset.parse("T2"))
    expected = {
        smu: {"content", "style_gram", "adv_generator"},
        no_bbdm: {"consistency", "presence_bce_teacher"},
        no_lgrm: {"gsm", "content", "adv_generator"},
    }
    absent = {
        smu: {"gsm", "presence_bce_teacher"},
        no_bbdm: {"gsm", "content", "style_gram", "adv_generator"},
        no_lgrm: {"presence_bce_teacher"},
    }
    for model, names in expected.items():
        logs = train_steps(model, model.configure_optimizers(1e-3, 0.0), b, 1)
        keys = {k.removeprefix("log/") for k in logs[0]}
        assert names <= keys and not absent[model] & keys, type(model).__name__


def test_parameter_count_is_the_student_at_width_16() -> None:
    model = AdaMM(MethodConfig(width=16))
    # backbone 4,778,212 + 14 × 134,288 + GARM 119,936 + presence head 7,011
    assert model.parameter_count() == 4_778_212 + 14 * 134_288 + 119_936 + 7_011
    assert SMUNet(MethodConfig(width=16)).parameter_count() == 4_778_212


# ----------------------------------------------------------------------------- inference
def test_predict_uses_the_adapter_of_the_given_subset_only() -> None:
    torch.manual_seed(0)
    model = AdaMM(config()).eval()
    open_gate(model)
    image = torch.randn(1, 4, S, S, S)
    subsets = [Subset.parse("T1ce+FLAIR"), Subset.parse("T2"), Subset.parse("T1+T1ce+T2"), FULL]
    with torch.no_grad():
        before = {s: model.predict(image, s.available) for s in subsets}
        for p in model.adapters.sets["0101"].parameters():  # T1ce+FLAIR
            p.add_(torch.randn_like(p) * 0.5)
        after = {s: model.predict(image, s.available) for s in subsets}
    assert not torch.allclose(before[subsets[0]], after[subsets[0]])
    for s in subsets[1:]:
        assert torch.equal(before[s], after[s]), s


def test_full_subset_skips_adapters_and_garm() -> None:
    torch.manual_seed(0)
    model = AdaMM(config()).eval()
    open_gate(model)
    image = torch.randn(1, 4, S, S, S)
    with torch.no_grad():
        before = model.predict(image, FULL.available)
        for p in list(model.adapters.parameters()) + list(model.garm.parameters()):
            p.add_(1.0)
        assert torch.equal(before, model.predict(image, FULL.available))


def test_predict_gate_erases_an_absent_label_and_keeps_a_present_one() -> None:
    torch.manual_seed(0)
    model = AdaMM(config()).eval()
    image = torch.randn(1, 4, S, S, S)
    bias = model.presence_s.conv2.bias
    with torch.no_grad():
        bias.copy_(torch.tensor([10.0, 10.0, -10.0]))  # ET judged absent
        out = model.predict(image, ("T1ce",))
        assert (out[:, 2] == 0).all()  # ET region erased
        assert (out[:, 0] > 0).any()  # WT kept
        bias.copy_(torch.tensor([10.0, 10.0, 10.0]))
        assert (model.predict(image, ("T1ce",))[:, 2] > 0).any()


def test_gate_is_decided_on_the_whole_blended_volume() -> None:
    """Blended outputs: labels (NETC, ED, ET, background) + presence-logit maps. ET's map is
    positive on the left half and more negative on the right, so its volume mean is below 0."""
    model = AdaMM(config()).eval()
    labels = torch.full((1, 4, 8, 8, 16), 0.9)
    maps = torch.ones(1, 3, 8, 8, 16)
    maps[:, 2, :, :, 8:] = -3.0  # ET: left half +1, right half −3, mean −1
    maps[:, 1, :, :, 8:] = -0.5  # ED: mean +0.25
    out = model.postprocess(torch.cat([labels, maps], 1), ("T1ce",))
    assert out.shape == (1, 3, 8, 8, 16)
    assert (out[:, 2] == 0).all()  # ET erased everywhere, also where its window saw it
    assert torch.allclose(out[:, 0], torch.full_like(out[:, 0], 0.9))  # ED kept everywhere
    regions = torch.rand(1, 3, 8, 8, 16)
    assert torch.equal(model.postprocess(regions, ("T1ce",)), regions)  # already regions


def test_sliding_window_blend_then_postprocess_equals_predict_on_one_window() -> None:
    torch.manual_seed(0)
    model = AdaMM(config()).eval()
    image = torch.randn(1, 4, S, S, S)
    available = ("T1", "FLAIR")
    with torch.no_grad():
        window = model.predict_window(image, available)
        assert window.shape == (1, 7, S, S, S)
        blended = sliding_window_inference(
            image, (S, S, S), 1, lambda w: model.predict_window(w, available), overlap=0.25
        )
        assert torch.allclose(
            model.postprocess(blended, available), model.predict(image, available)
        )
        per_window = AdaMM(config(gate_scope="window")).eval()
        per_window.load_state_dict(model.state_dict())
        assert per_window.predict_window(image, available).shape == (1, 4, S, S, S)
        assert torch.allclose(per_window.predict(image, available), model.predict(image, available))


def test_predict_window_never_reads_absent_channels() -> None:
    torch.manual_seed(0)
    model = AdaMM(config()).eval()
    subset = Subset.parse("T1ce")
    image = batch(subset, n=1)["image"]
    noisy = image.clone()
    noisy[:, 0] = 1e4
    with torch.no_grad():
        assert torch.equal(
            model.predict_window(image, subset.available),
            model.predict_window(noisy, subset.available),
        )


# ----------------------------------------------------------------------------- variants
def test_variant_sets_every_correction_and_each_can_be_overridden() -> None:
    flags = ("fix_garm_view", "fix_garm_adjacency", "fix_gsm", "fix_disc_adam", "fix_eval_mode")
    fixed, faithful = AdaMM(config()), AdaMM(config(variant="faithful"))
    assert all(getattr(fixed, f) for f in flags) and not any(getattr(faithful, f) for f in flags)
    assert fixed.garm.transpose_nodes and fixed.garm.masked_attention
    assert not faithful.garm.transpose_nodes and not faithful.garm.masked_attention
    one = AdaMM(config(fix_gsm=False))
    assert not one.fix_gsm and one.fix_garm_view and one.garm.masked_attention


def test_faithful_and_fixed_differ_only_where_the_corrections_act() -> None:
    torch.manual_seed(0)
    fixed = AdaMM(config())
    faithful = AdaMM(config(variant="faithful", fix_eval_mode=True))
    open_gate(fixed)
    faithful.load_state_dict(fixed.state_dict())
    b = batch(Subset.parse("T1ce+FLAIR"), n=1)
    fixed.eval(), faithful.eval()  # no dropout: the only differences are the variants'
    with torch.no_grad():
        ft = fixed.teacher(b["image_full"])
        t_fixed = fixed.loss_terms(
            ft, fixed.student_forward(b["image"], b["subset"]), b["compartments"], 5
        )
        fs = faithful.student_forward(b["image"], b["subset"])
        t_faith = faithful.loss_terms(ft, fs, b["compartments"], 5)
        assert t_faith["gsm"].item() > 0 and t_fixed["gsm"].item() > 0  # batch 1: both non-zero
        assert t_faith["gsm"].item() != pytest.approx(t_fixed["gsm"].item())
        # distillation reads the shared path, which GARM does not touch
        assert t_faith["content"].item() == pytest.approx(t_fixed["content"].item(), rel=1e-6)
        assert not torch.allclose(
            fixed.predict(b["image"], b["available"]), faithful.predict(b["image"], b["available"])
        )
        full = batch(FULL, n=1)
        assert torch.equal(  # the full subset uses neither adapters nor GARM
            fixed.predict(full["image"], FULL.available),
            faithful.predict(full["image"], FULL.available),
        )


def test_faithful_evaluates_in_train_mode_without_touching_running_statistics() -> None:
    torch.manual_seed(0)
    faithful = AdaMM(config(variant="faithful")).eval()
    fixed = AdaMM(config()).eval()
    fixed.load_state_dict(faithful.state_dict())
    image = torch.randn(2, 4, S, S, S)
    available = ("T2",)
    buffers = {k: v.clone() for k, v in faithful.state_dict().items()}
    with torch.no_grad():
        a, b = faithful.predict(image, available), faithful.predict(image, available)
        assert not torch.equal(a, b)  # dropout is active, as in the released test loop
        assert torch.equal(fixed.predict(image, available), fixed.predict(image, available))
        # BatchNorm on batch statistics of one volume at a time: volume 0 ignores volume 1
        torch.manual_seed(1)
        alone = faithful.predict_window(image[:1], available)
        torch.manual_seed(1)
        with_other = faithful.predict_window(image, available)[:1]
        assert torch.allclose(alone, with_other, atol=1e-6)
    assert all(torch.equal(v, buffers[k]) for k, v in faithful.state_dict().items())
    assert not faithful.training and all(not m.training for m in faithful.modules())


# ----------------------------------------------------------------------------- optimisers
def test_discriminator_adam_persists_across_steps_and_faithful_recreates_it() -> None:
    b = batch(Subset.parse("T2"), n=1)
    for variant, expected_step in [("fixed", 2.0), ("faithful", 1.0)]:
        torch.manual_seed(0)
        model = AdaMM(config(variant=variant)).train()
        opts = model.configure_optimizers(1e-3, 1e-5)
        assert set(opts) == {"main", "disc"}
        group = opts["disc"].param_groups[0]
        assert group["betas"] == (0.9, 0.99) and group["weight_decay"] == 0.0
        assert group["lr"] == 1e-3 and model.lr_factor("disc", ctx(50)) == 1.0
        disc_ids = {id(p) for p in model.disc.parameters()}
        main_ids = {id(p) for g in opts["main"].param_groups for p in g["params"]}
        assert not disc_ids & main_ids
        train_steps(model, opts, b, 2)
        state = opts["disc"].state_dict()["state"]
        assert state and all(float(s["step"]) == expected_step for s in state.values()), variant


def test_published_recipe_uses_the_released_optimiser_and_epoch_schedule() -> None:
    shared = AdaMM(config(total_steps=400))
    assert shared.lr_factor("main", ctx(1, 400)) is None  # the loop's poly
    assert shared.configure_optimizers(3e-3, 0.0)["main"].param_groups[0]["lr"] == 3e-3
    model = AdaMM(config(total_steps=400, recipe="published"))
    opts = model.configure_optimizers(3e-3, 0.0)  # the preset's values are ignored
    assert opts["main"].param_groups[0]["lr"] == 1e-4
    assert opts["main"].param_groups[0]["weight_decay"] == 1e-5
    assert opts["disc"].param_groups[0]["lr"] == 1e-4
    # 400 steps over 200 epochs: 2 steps per epoch; PolyLR is stepped at each epoch's start
    assert model.epoch_of(ctx(1, 400)) == 0 and model.epoch_of(ctx(2, 400)) == 0
    assert model.epoch_of(ctx(3, 400)) == 1 and model.epoch_of(ctx(400, 400)) == 199
    assert model.lr_factor("main", ctx(1, 400)) == pytest.approx((1 - 1 / 200) ** 0.9)
    assert model.lr_factor("main", ctx(3, 400)) == pytest.approx((1 - 2 / 200) ** 0.9)
    assert model.lr_factor("main", ctx(400, 400)) == 0.0
    assert model.lr_factor("disc", ctx(400, 400)) == 1.0


def test_consistency_weight_follows_the_epoch_ramp() -> None:
    torch.manual_seed(0)
    model = AdaMM(config(total_steps=200)).train()
    b = batch(Subset.parse("T1"), n=1)
    weights = {
        step: float(model.training_step(b, ctx(step, 200))["log/consistency_weight"])
        for step in (1, 11, 21, 150)
    }
    # 200 steps = 200 epochs: step s is epoch s − 1; full weight from epoch 20 on
    assert weights[1] == pytest.approx(10 * math.exp(-5))
    assert weights[11] == pytest.approx(10 * math.exp(-5 * 0.5**2))
    assert weights[21] == weights[150] == pytest.approx(10.0)


def test_loss_terms_add_up_to_the_released_totals() -> None:
    torch.manual_seed(0)
    model = AdaMM(config()).train()
    b = batch(Subset.parse("T1+T2"))
    ft = model.teacher(b["image_full"])
    fs = model.student_forward(b["image"], b["subset"])
    t = model.loss_terms(ft, fs, b["compartments"], epoch=7)
    co = (
        0.4 * t["dice_teacher_sum"]
        + 0.6 * t["dice_student_sum"]
        + t["consistency_weight"] * t["consistency"]
        + 0.2 * t["content"]
        + t["style_gram"]
        + t["presence_bce_teacher"]
        + t["presence_bce_student"]
    )
    assert torch.allclose(t["loss_co_without_gsm"], co)
    assert torch.allclose(t["loss_co"], co + t["gsm"])
    assert torch.allclose(t["total_generator"], t["loss_co"] + 2e-4 * t["adv_generator"])
    dice = (t["dice_unweighted_student"] * t["reliability_w_student"]).mean(0)
    assert torch.allclose(dice.sum(), t["dice_student_sum"])


def test_losses_go_to_their_optimisers_only() -> None:
    torch.manual_seed(0)
    model = AdaMM(config()).train()
    losses = model.training_step(batch(Subset.parse("T1")), ctx(1))
    disc_params = list(model.disc.parameters())
    # the generator's adversarial term reaches the student through D, but D is not in "main"
    grads = torch.autograd.grad(losses["main"], disc_params, retain_graph=True, allow_unused=True)
    assert any(g is not None for g in grads)
    teacher_params = list(model.teacher.parameters())
    grads = torch.autograd.grad(losses["disc"], teacher_params, allow_unused=True)
    assert all(g is None for g in grads)  # D's loss reads detached style tensors
    # distillation also trains the teacher (online mutual learning, as released)
    grads = torch.autograd.grad(losses["main"], teacher_params, allow_unused=True)
    assert all(g is not None for g in grads)


def test_toy_problem_loss_decreases() -> None:
    torch.manual_seed(0)
    model = AdaMM(config()).train()
    opts = model.configure_optimizers(3e-3, 0.0)
    b = batch(Subset.parse("T1ce+FLAIR"), n=1)
    logs = train_steps(model, opts, b, 24)
    first = sum(log["log/dice_student_sum"] for log in logs[:3]) / 3
    last = sum(log["log/dice_student_sum"] for log in logs[-3:]) / 3
    assert last < 0.8 * first, (first, last)
