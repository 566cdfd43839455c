"""AdaMM / SMU-Net strategies: adapter selection, gate, variants, optimisers, toy training."""

from __future__ import annotations

import pytest
import torch

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


def config(**options) -> MethodConfig:
    return MethodConfig(width=4, patch_size=(S, S, S), total_steps=100, options=dict(options))


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


def train_steps(model, opts, b, steps: int, start: int = 0) -> list[dict]:
    """What the loop does: every loss into its own optimiser's parameters, then all steps."""
    logs = []
    for i in range(start, start + steps):
        ctx = StepContext(i, 100, "train", i, 100, b["subset"])
        losses = model.training_step(b, ctx)
        for name, opt in opts.items():
            params = [p for g in opt.param_groups for p in g["params"]]
            for p in params:
                p.grad = None
            losses[name].backward(inputs=params, retain_graph=True)
        for opt in opts.values():
            opt.step()
        logs.append({k: float(torch.as_tensor(v).detach()) for k, v in losses.items()})
    return logs


def test_registered_names_and_family() -> None:
    for name, cls in [
        ("adamm", AdaMM),
        ("adamm-no-garm", AdaMMNoGARM),
        ("adamm-no-bbdm", AdaMMNoBBDM),
        ("adamm-no-lgrm", AdaMMNoLGRM),
        ("smunet", SMUNet),
    ]:
        info = method_info(name)
        assert info.cls is cls and info.family == "knowledge-distillation"


def test_ablations_drop_their_components() -> None:
    torch.manual_seed(0)
    assert AdaMMNoGARM(config()).garm is None
    no_bbdm = AdaMMNoBBDM(config())
    assert no_bbdm.disc is None and [s.optimizers for s in no_bbdm.stages()] == [("main",)]
    no_lgrm = AdaMMNoLGRM(config())
    assert no_lgrm.presence_s is None and no_lgrm.presence_t is None
    smu = SMUNet(config())
    assert smu.adapters is None and smu.garm is None and smu.presence_s is None
    assert smu.disc is not None
    logs = train_steps(smu, smu.configure_optimizers(1e-3, 0.0), batch(Subset.parse("T2")), 1)
    assert "log/gsm" not in logs[0] and "log/presence_bce" not in logs[0]
    with pytest.raises(ValueError):
        AdaMM(config(variant="nonsense"))


def test_parameter_count_is_the_student_at_width_16() -> None:
    model = AdaMM(MethodConfig(width=16))
    # backbone 4,778,195 + 14 × 134,288 + GARM 120,320 + presence head 7,011
    assert model.parameter_count() == 4_778_195 + 14 * 134_288 + 120_320 + 7_011
    assert SMUNet(MethodConfig(width=16)).parameter_count() == 4_778_195


def test_predict_uses_the_adapter_of_the_given_subset_only() -> None:
    torch.manual_seed(0)
    model = AdaMM(config()).eval()
    image = torch.randn(1, 4, S, S, S)
    subsets = [Subset.parse("T1ce+FLAIR"), Subset.parse("T2"), Subset.parse("T1+T1ce+T2"), FULL]
    with torch.no_grad():
        model.presence_s.body[-1].bias.fill_(10.0)  # gate open: compare raw outputs
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
    image = torch.randn(1, 4, S, S, S)
    with torch.no_grad():
        model.presence_s.body[-1].bias.fill_(10.0)
        before = model.predict(image, FULL.available)
        for p in list(model.adapters.parameters()) + list(model.garm.parameters()):
            p.add_(1.0)
        assert torch.equal(before, model.predict(image, FULL.available))


def test_predict_gate_erases_an_absent_label_and_keeps_a_present_one() -> None:
    torch.manual_seed(0)
    model = AdaMM(config()).eval()
    image = torch.randn(1, 4, S, S, S)
    bias = model.presence_s.body[-1].bias
    with torch.no_grad():
        bias.copy_(torch.tensor([10.0, 10.0, -10.0]))  # ET judged absent
        out = model.predict(image, ("T1ce",))
        assert (out[:, 2] == 0).all()  # ET region erased
        assert (out[:, 0] > 0).any()  # WT kept
        bias.copy_(torch.tensor([10.0, 10.0, 10.0]))
        assert (model.predict(image, ("T1ce",))[:, 2] > 0).any()


def test_faithful_and_fixed_differ_where_they_should() -> None:
    torch.manual_seed(0)
    fixed = AdaMM(config())
    faithful = AdaMM(config(variant="faithful"))
    with torch.no_grad():
        fixed.presence_s.body[-1].bias.fill_(10.0)  # gate open: compare raw outputs
    faithful.load_state_dict(fixed.state_dict())
    assert faithful.garm.faithful and not fixed.garm.faithful
    assert faithful.fresh_disc_adam and not fixed.fresh_disc_adam
    b = batch(Subset.parse("T1ce+FLAIR"), n=1)
    fixed.eval(), faithful.eval()  # no dropout: the only differences are the variants'
    ctx = StepContext(0, 100, "train", 0, 100, b["subset"])
    lf, lr = fixed.training_step(b, ctx), faithful.training_step(b, ctx)
    assert float(lr["log/gsm"]) == 0.0 and float(lf["log/gsm"]) > 0.0
    assert float(lf["log/content"]) == pytest.approx(float(lr["log/content"]), rel=1e-6)
    with torch.no_grad():
        a = fixed.predict(b["image"], b["available"])
        c = faithful.predict(b["image"], b["available"])
        assert not torch.allclose(a, c)
        full = batch(FULL, n=1)
        # the full subset uses neither adapters nor GARM: identical
        assert torch.equal(
            fixed.predict(full["image"], FULL.available),
            faithful.predict(full["image"], FULL.available),
        )


def test_discriminator_adam_persists_across_steps_and_faithful_resets_it() -> None:
    b = batch(Subset.parse("T2"), n=1)
    for variant, expected_step in [("fixed", 2.0), ("faithful", 1.0)]:
        torch.manual_seed(0)
        model = AdaMM(config(variant=variant)).train()
        opts = model.configure_optimizers(1e-3, 0.0)
        assert set(opts) == {"main", "disc"}
        disc_ids = {id(p) for p in model.disc.parameters()}
        main_ids = {id(p) for g in opts["main"].param_groups for p in g["params"]}
        assert not disc_ids & main_ids
        train_steps(model, opts, b, 2)
        state = opts["disc"].state_dict()["state"]
        assert state and all(float(s["step"]) == expected_step for s in state.values()), variant


def test_losses_go_to_their_optimisers_only() -> None:
    torch.manual_seed(0)
    model = AdaMM(config()).train()
    opts = model.configure_optimizers(1e-3, 0.0)
    losses = model.training_step(batch(Subset.parse("T1")), StepContext(0, 10, "train", 0, 10))
    disc_params = list(model.disc.parameters())
    # the generator's adversarial term reaches the student through D, but D is not in "main"
    grads = torch.autograd.grad(losses["main"], disc_params, retain_graph=True, allow_unused=True)
    assert any(g is not None for g in grads)
    teacher_params = list(model.teacher.parameters())
    grads = torch.autograd.grad(losses["disc"], teacher_params, allow_unused=True)
    assert all(g is None for g in grads)  # D's loss reads detached style tensors
    assert "main" in opts and "disc" in opts


def test_toy_problem_loss_decreases() -> None:
    torch.manual_seed(0)
    model = AdaMM(config()).train()
    opts = model.configure_optimizers(3e-3, 0.0)
    b = batch(Subset.parse("T1ce+FLAIR"), n=1)
    logs = train_steps(model, opts, b, 24)
    first = sum(log["log/seg"] for log in logs[:3]) / 3
    last = sum(log["log/seg"] for log in logs[-3:]) / 3
    assert last < 0.8 * first, (first, last)
