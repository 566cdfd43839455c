"""Contract checks for strategies: what the engine relies on, runnable on any registered method.

Plug-in authors run them on their own method::

    from mmbench.testing import check_strategy
    check_strategy("my-unet")          # raises StrategyCheckError listing what failed

The checks build the method at a tiny size (16³ crops, width 4, depth 2) with its declared
option defaults and test:

- the registry entry (family, paper, a docstring that says what the method is);
- ``predict``'s shape and range on the full set;
- that an absent modality never changes ``predict`` (noise, huge values and an Inf in absent
  channels give bit-identical outputs), for every one of the 14 incomplete subsets;
- one training step per stage gives finite scalar losses, one per active optimiser, each with a
  gradient on its own optimiser's parameters;
- a state-dict round trip through ``torch.load(weights_only=True)`` reproduces ``predict``;
- a positive inference parameter count.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from typing import Any

import torch

from mmbench.methods import MethodConfig, StepContext, method_info, method_options
from mmbench.methods.base import Strategy
from mmbench.subsets import ALL_SUBSETS, FULL, Subset, zero_absent

PATCH: tuple[int, int, int] = (16, 16, 16)


class StrategyCheckError(AssertionError):
    """One or more contract checks failed; the message lists each with its reason."""


def tiny_config(name: str, **options: Any) -> MethodConfig:
    """The tiny configuration the checks build ``name`` with (declared option defaults)."""
    return MethodConfig(
        width=4,
        depth=2,
        patch_size=PATCH,
        total_steps=10,
        options=method_options(name, options),
    )


def build(name: str, seed: int = 0, **options: Any) -> Strategy:
    """Method ``name`` at the tiny size, initialised from ``seed``."""
    torch.manual_seed(seed)
    return method_info(name).cls(tiny_config(name, **options))


def make_batch(subset: Subset, n: int = 2, seed: int = 0) -> dict[str, Any]:
    """A training batch of random images with a nested tumour (oedema ⊃ ET ⊃ necrosis)."""
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
    return {
        "image": zero_absent(full, subset),
        "image_full": full,
        "regions": torch.stack([wt, tc, comp[:, 2]], 1),
        "compartments": comp,
        "available": subset.available,
        "subset": subset,
    }


# ----------------------------------------------------------------------------------- checks
def check_registry_entry(name: str) -> None:
    info = method_info(name)
    assert info.family and info.paper, "registered without family or paper"
    assert (info.cls.__doc__ or "").strip(), "no docstring saying what it is and how it departs"


def check_predict_shape_and_range(name: str) -> None:
    model = build(name).eval()
    with torch.inference_mode():
        out = model.predict(make_batch(FULL)["image"], FULL.available)
    assert out.shape == (2, 3, *PATCH), f"predict returned shape {tuple(out.shape)}"
    assert torch.isfinite(out).all(), "predict returned non-finite values"
    assert out.min() >= 0 and out.max() <= 1, "predict returned values outside [0, 1]"


def check_absent_modality_never_changes_predict(name: str, subset: Subset) -> None:
    model = build(name).eval()
    image = make_batch(subset)["image"]
    noisy = image.clone()
    absent = [i for i, present in enumerate(subset.mask) if not present]
    for i in absent:
        noisy[:, i] = torch.randn_like(noisy[:, i]) * 50 + 7
    noisy[0, absent[0], 0, 0, 0] = float("inf")
    with torch.inference_mode():
        a = model.predict(image, subset.available)
        b = model.predict(noisy, subset.available)
    assert torch.equal(a, b), f"an absent modality changed predict on {subset.name}"


def one_step_per_stage(model: Strategy, subset: Subset) -> None:
    """One training step of every stage (a ``fit`` stage fits on two full batches)."""
    optimizers = model.configure_optimizers(lr=1e-3, weight_decay=0.0)
    for stage in model.stages():
        ctx = StepContext(
            step=0, total_steps=10, stage=stage.name, stage_step=0, stage_steps=5, subset=subset
        )
        if stage.kind == "fit":
            model.fit(iter([make_batch(FULL, seed=s) for s in range(2)]), ctx)
            continue
        model.train()
        stage_subset = Subset.parse(stage.subset) if stage.subset else subset
        batch = make_batch(stage_subset)
        ctx.subset = stage_subset
        losses = model.training_step(batch, ctx)
        for opt in stage.optimizers:
            assert opt in losses, f"stage {stage.name} gives no loss for optimiser {opt}"
        for key, loss in losses.items():
            if key.startswith("log/"):
                continue
            assert key in stage.optimizers, f"stage {stage.name} returned a loss for {key}"
            assert loss.ndim == 0 and torch.isfinite(loss), f"loss {key} is {loss}"
            params = [p for g in optimizers[key].param_groups for p in g["params"]]
            for p in params:
                p.grad = None
            loss.backward(inputs=params, retain_graph=True)
            assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in params), (
                f"loss {key} gives no gradient to its optimiser's parameters"
            )
            optimizers[key].step()


def check_training_step(name: str, subset: Subset) -> None:
    one_step_per_stage(build(name), subset)


def check_state_dict_round_trip(name: str) -> None:
    model = build(name)
    one_step_per_stage(model, FULL)
    model.eval()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    clone = build(name, seed=123)  # a different init: predict must depend on the state only
    clone.load_state_dict(torch.load(buffer, weights_only=True))
    clone.eval()
    subset = Subset.parse("T1+T2")
    image = make_batch(subset, seed=3)["image"]
    with torch.inference_mode():
        a = model.predict(image, subset.available)
        b = clone.predict(image, subset.available)
    assert torch.allclose(a, b, atol=1e-6), "a state-dict round trip changed predict"


def check_parameter_count(name: str) -> None:
    model = build(name)
    total = sum(p.numel() for p in model.parameters())
    assert 0 < model.parameter_count() <= total, "inference parameter count out of range"
    assert model.parameter_count() + model.training_only_parameter_count() == total


def contract_checks(name: str) -> list[tuple[str, Callable[[], None]]]:
    """``(check id, zero-argument check)`` for every contract check of method ``name``."""
    checks: list[tuple[str, Callable[[], None]]] = [
        ("registry-entry", lambda: check_registry_entry(name)),
        ("predict-shape", lambda: check_predict_shape_and_range(name)),
    ]
    for subset in ALL_SUBSETS:
        if not subset.is_full:
            checks.append(
                (
                    f"no-leak[{subset.name}]",
                    lambda s=subset: check_absent_modality_never_changes_predict(name, s),
                )
            )
    for subset in TRAINING_SUBSETS:
        checks.append(
            (f"training-step[{subset.name}]", lambda s=subset: check_training_step(name, s))
        )
    checks += [
        ("state-dict-round-trip", lambda: check_state_dict_round_trip(name)),
        ("parameter-count", lambda: check_parameter_count(name)),
    ]
    return checks


TRAINING_SUBSETS: Sequence[Subset] = (FULL, Subset.parse("T1ce+FLAIR"), Subset.parse("T2"))


def check_strategy(name: str) -> None:
    """Run every contract check on method ``name``.

    Raises:
        StrategyCheckError: the failed checks, each with its reason.
    """
    failures = []
    for check_id, check in contract_checks(name):
        try:
            check()
        except Exception as exc:  # every failure is collected, then reported together
            failures.append(f"{check_id}: {type(exc).__name__}: {exc}")
    if failures:
        raise StrategyCheckError(f"{name} fails {len(failures)} check(s):\n" + "\n".join(failures))


__all__ = [
    "PATCH",
    "StrategyCheckError",
    "build",
    "check_strategy",
    "contract_checks",
    "make_batch",
    "one_step_per_stage",
    "tiny_config",
]
