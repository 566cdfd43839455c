"""Contract tests run against every registered strategy.

These are the properties the engine relies on: predict's shape and range, absent-modality
invariance (changing an absent channel never changes the output), a training step per stage that
gives finite losses and gradients only where they belong, and a state-dict round trip that
reproduces predict exactly (retrieval banks and other buffers included).
"""

from __future__ import annotations

import io

import pytest
import torch

from mmbench.methods import MethodConfig, StepContext, list_methods, method_info
from mmbench.subsets import ALL_SUBSETS, FULL, Subset, zero_absent

PATCH = (16, 16, 16)


def tiny_config() -> MethodConfig:
    return MethodConfig(width=4, patch_size=PATCH, total_steps=10, options={"depth": 2})


def make_batch(subset: Subset, n: int = 2, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    full = torch.randn(n, 4, *PATCH, generator=g)
    comp = torch.zeros(n, 3, *PATCH)
    comp[:, 1, 4:12, 4:12, 4:12] = 1  # oedema block
    comp[:, 1, 6:10, 6:10, 6:10] = 0
    comp[:, 2, 6:10, 6:10, 6:10] = 1  # enhancing core inside it
    comp[:, 2, 7:9, 7:9, 7:9] = 0
    comp[:, 0, 7:9, 7:9, 7:9] = 1  # necrosis at the centre
    wt = comp.amax(1)
    tc = torch.maximum(comp[:, 0], comp[:, 2])
    regions = torch.stack([wt, tc, comp[:, 2]], 1)
    return {
        "image": zero_absent(full, subset),
        "image_full": full,
        "regions": regions,
        "compartments": comp,
        "available": subset.available,
        "subset": subset,
    }


def build(name: str):
    torch.manual_seed(0)
    return method_info(name).cls(tiny_config())


@pytest.fixture(params=list_methods())
def method_name(request) -> str:
    return request.param


def test_registry_entry_is_complete(method_name: str) -> None:
    info = method_info(method_name)
    assert info.family and info.paper
    assert (info.cls.__doc__ or "").strip(), "the docstring must say what it is and how it departs"


def test_predict_shape_and_range(method_name: str) -> None:
    model = build(method_name).eval()
    with torch.inference_mode():
        out = model.predict(make_batch(FULL)["image"], FULL.available)
    assert out.shape == (2, 3, *PATCH)
    assert torch.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("subset", [s for s in ALL_SUBSETS if not s.is_full], ids=str)
def test_absent_modality_never_changes_predict(method_name: str, subset: Subset) -> None:
    model = build(method_name).eval()
    image = make_batch(subset)["image"]
    noisy = image.clone()
    for i, present in enumerate(subset.mask):
        if not present:
            noisy[:, i] = torch.randn_like(noisy[:, i]) * 50 + 7
    noisy[0, [i for i, p in enumerate(subset.mask) if not p][0], 0, 0, 0] = float("inf")
    with torch.inference_mode():
        a = model.predict(image, subset.available)
        b = model.predict(noisy, subset.available)
    assert torch.equal(a, b)


def _one_step_per_stage(model, subset: Subset) -> None:
    optimizers = model.configure_optimizers(lr=1e-3, weight_decay=0.0)
    for stage in model.stages():
        ctx = StepContext(
            step=0, total_steps=10, stage=stage.name, stage_step=0, stage_steps=5, subset=subset
        )
        if stage.kind == "fit":
            model.fit(iter([make_batch(FULL, seed=s) for s in range(2)]), ctx)
            continue
        model.train()
        losses = model.training_step(make_batch(subset), ctx)
        for name in stage.optimizers:
            assert name in losses, f"stage {stage.name} gives no loss for optimiser {name}"
        for name, loss in losses.items():
            if name.startswith("log/"):
                continue
            assert name in stage.optimizers
            assert loss.ndim == 0 and torch.isfinite(loss), f"{name}: {loss}"
            params = [p for g in optimizers[name].param_groups for p in g["params"]]
            for p in params:
                p.grad = None
            loss.backward(inputs=params, retain_graph=True)
            assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in params), (
                f"loss {name} gives no gradient to its optimiser's parameters"
            )
            optimizers[name].step()


@pytest.mark.parametrize("subset", [FULL, Subset.parse("T1ce+FLAIR"), Subset.parse("T2")], ids=str)
def test_training_step_gives_finite_losses_and_gradients(method_name: str, subset: Subset) -> None:
    _one_step_per_stage(build(method_name), subset)


def test_state_dict_round_trip_reproduces_predict(method_name: str) -> None:
    model = build(method_name)
    _one_step_per_stage(model, FULL)
    model.eval()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(123)  # a different init: everything predict needs must come from the state
    clone = method_info(method_name).cls(tiny_config())
    clone.load_state_dict(torch.load(buffer, weights_only=True))
    clone.eval()
    subset = Subset.parse("T1+T2")
    image = make_batch(subset, seed=3)["image"]
    with torch.inference_mode():
        assert torch.allclose(
            model.predict(image, subset.available),
            clone.predict(image, subset.available),
            atol=1e-6,
        )


def test_parameter_count_is_positive(method_name: str) -> None:
    model = build(method_name)
    assert 0 < model.parameter_count() <= sum(p.numel() for p in model.parameters())
