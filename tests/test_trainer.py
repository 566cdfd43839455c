"""The shared loop: stages, optimiser isolation, subsets, schedule, checkpoints and resume."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from mmbench.benchmark.trainer import SubsetSampler, Trainer, poly_factor
from mmbench.config import TrainSection, build_section
from mmbench.methods.base import MethodConfig, Stage, Strategy
from mmbench.subsets import FULL

TRAIN = build_section(
    TrainSection,
    {
        "steps": 6,
        "batch_size": 2,
        "lr": 0.1,
        "weight_decay": 0.0,
        "poly_power": 0.9,
        "grad_clip": None,
        "val_every": 2,
        "log_every": 1,
        "amp": "off",
        "deterministic": True,
    },
)


def batches(rng: np.random.Generator, n: int) -> dict[str, torch.Tensor]:
    x = torch.as_tensor(rng.standard_normal((n, 4, 4, 4, 4)), dtype=torch.float32)
    y = (x[:, :3] > 0).float()
    return {"image": x, "regions": y, "compartments": y}


class TwoPlayer(Strategy):
    """A generator ``g`` and a discriminator ``d``; the generator's loss reads ``d``."""

    def __init__(self, config: MethodConfig) -> None:
        super().__init__(config)
        self.g = nn.Parameter(torch.ones(1))
        self.d = nn.Parameter(torch.ones(1))
        self.seen: list[tuple[str, str]] = []

    def stages(self) -> list[Stage]:
        return [
            Stage("warm", ("main",), fraction=1, select_on_val=False),
            Stage("bank", (), kind="fit"),
            Stage("adv", ("main", "disc"), fraction=2),
        ]

    def configure_optimizers(self, lr: float, weight_decay: float):
        return {"main": torch.optim.SGD([self.g], lr=lr), "disc": torch.optim.SGD([self.d], lr=lr)}

    def training_step(self, batch, ctx):
        self.seen.append((ctx.stage, batch["subset"].name))
        assert torch.equal(
            batch["image"],
            batch["image"]
            * torch.tensor(batch["subset"].mask, dtype=torch.float32).view(1, 4, 1, 1, 1),
        )
        losses = {"main": (self.g * self.d).sum()}
        if ctx.stage == "adv":
            losses["disc"] = (3 * self.d).sum()
        return losses

    def fit(self, batches, ctx):
        self.seen.append(("bank", "fit:" + str(sum(1 for _ in batches))))

    def predict(self, image, available):
        return torch.sigmoid(image[:, :3] * self.g)


def test_stages_run_in_order_and_losses_reach_only_their_optimiser(tmp_path) -> None:
    model = TwoPlayer(MethodConfig())
    trainer = Trainer(
        model,
        TRAIN,
        tmp_path,
        batches,
        fit_batches=lambda: iter([1, 2, 3]),
        progress=False,
        log=lambda s: None,
    )
    assert trainer.stage_steps == [2, 0, 4]
    g_before, d_before = model.g.item(), model.d.item()
    trainer.fit()
    stages = [s for s, _ in model.seen]
    assert stages == ["warm", "warm", "bank", "adv", "adv", "adv", "adv"]
    assert ("bank", "fit:3") in model.seen
    # d only moves by its own loss (gradient 3 per step) during the 4 adversarial steps:
    # the generator loss g·d must not have leaked a gradient into d.
    lrs = [0.1 * poly_factor(s, 6, 0.9) for s in range(3, 7)]
    assert model.d.item() == pytest.approx(d_before - 3 * sum(lrs), rel=1e-5)
    assert model.g.item() < g_before


def test_subsets_vary_per_step_and_absent_channels_are_zero(tmp_path) -> None:
    model = TwoPlayer(MethodConfig())
    Trainer(
        model,
        replace(TRAIN, steps=30),
        tmp_path,
        batches,
        fit_batches=lambda: iter([]),
        progress=False,
        log=lambda s: None,
    ).fit()
    subsets = {name for _, name in model.seen if not name.startswith("fit")}
    assert len(subsets) > 5  # uniform over 15, one per step


def test_subset_sampler_weights() -> None:
    sampler = SubsetSampler({"T1ce": 1.0, "FLAIR": 3.0})
    rng = np.random.default_rng(0)
    draws = [sampler.draw(rng).name for _ in range(400)]
    assert set(draws) == {"T1ce", "FLAIR"}
    assert 0.65 < draws.count("FLAIR") / 400 < 0.85
    with pytest.raises(ValueError):
        SubsetSampler({"T1": 0.0})


def test_poly_schedule() -> None:
    assert poly_factor(0, 10, 0.9) == 1.0
    assert poly_factor(10, 10, 0.9) == 0.0
    assert poly_factor(5, 10, 1.0) == pytest.approx(0.5)


class Linear(Strategy):
    """Tiny conv model for resume tests; ``train_subsets`` full."""

    train_subsets = "full"

    def __init__(self, config: MethodConfig) -> None:
        super().__init__(config)
        self.conv = nn.Conv3d(4, 3, 1)
        self.drop = nn.Dropout(0.5)

    def training_step(self, batch, ctx):
        logits = self.conv(self.drop(batch["image"]))
        return {"main": nn.functional.binary_cross_entropy_with_logits(logits, batch["regions"])}

    def predict(self, image, available):
        return torch.sigmoid(self.conv(image))


def _train(tmp_path, steps_cfg, validator=None):
    torch.manual_seed(0)
    model = Linear(MethodConfig())
    trainer = Trainer(
        model,
        steps_cfg,
        tmp_path,
        batches,
        validator=validator,
        seed=3,
        progress=False,
        log=lambda s: None,
    )
    trainer.fit()
    return model, trainer


def test_resume_replays_exactly(tmp_path) -> None:
    cfg = replace(TRAIN, steps=8, val_every=3)
    full, _ = _train(tmp_path / "a", cfg)

    calls = {"n": 0}

    def crashing(rng, n):
        calls["n"] += 1
        if calls["n"] == 8:  # dies while drawing step 8; the last checkpoint is step 6
            raise KeyboardInterrupt
        return batches(rng, n)

    torch.manual_seed(0)
    t1 = Trainer(
        Linear(MethodConfig()),
        cfg,
        tmp_path / "b",
        crashing,
        seed=3,
        progress=False,
        log=lambda s: None,
    )
    with pytest.raises(KeyboardInterrupt):
        t1.fit()
    ckpt = torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["state"]["step"] == 6

    torch.manual_seed(99)  # the resumed process starts from another init and RNG state
    resumed = Linear(MethodConfig())
    t2 = Trainer(resumed, cfg, tmp_path / "b", batches, seed=3, progress=False, log=lambda s: None)
    t2.fit()
    assert t2.state.step == 8
    for a, b in zip(full.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    log = (tmp_path / "b" / "train_log.csv").read_text().splitlines()
    steps = [int(line.split(",")[0]) for line in log[1:]]
    assert steps == list(range(1, 9))  # rows of the replayed step 7 are not duplicated


def test_checkpoint_selection_uses_the_validator(tmp_path) -> None:
    scores = iter([0.2, 0.9, 0.1, 0.3])
    _, trainer = _train(
        tmp_path, replace(TRAIN, steps=8, val_every=2), validator=lambda m: next(scores)
    )
    assert trainer.state.best_score == pytest.approx(0.9)
    assert trainer.state.best_step == 4
    best = torch.load(tmp_path / "checkpoints" / "best.pt", weights_only=True)
    assert best["state"]["step"] == 4


def test_non_finite_loss_is_a_clear_error(tmp_path) -> None:
    class Broken(Linear):
        def training_step(self, batch, ctx):
            return {"main": torch.tensor(float("nan"), requires_grad=True)}

    trainer = Trainer(
        Broken(MethodConfig()), TRAIN, tmp_path, batches, progress=False, log=lambda s: None
    )
    with pytest.raises(FloatingPointError, match="step 1"):
        trainer.fit()


def test_full_only_strategies_train_on_the_full_set(tmp_path) -> None:
    seen = []

    class Spy(Linear):
        def training_step(self, batch, ctx):
            seen.append(batch["subset"])
            return super().training_step(batch, ctx)

    Trainer(Spy(MethodConfig()), TRAIN, tmp_path, batches, progress=False, log=lambda s: None).fit()
    assert seen and all(s == FULL for s in seen)


def test_fit_stage_after_selection_is_refitted_on_the_best_weights(tmp_path) -> None:
    class Banked(Linear):
        def __init__(self, config):
            super().__init__(config)
            self.register_buffer("bank", torch.zeros(3))

        def stages(self):
            return [Stage("train", ("main",)), Stage("bank", (), kind="fit")]

        def fit(self, batches, ctx):
            self.bank.copy_(self.conv.bias.detach())  # what fit builds depends on the weights

    scores = iter([0.9, 0.1])  # the best weights are the early ones
    model = Banked(MethodConfig())
    trainer = Trainer(
        model,
        replace(TRAIN, steps=4, val_every=2),
        tmp_path,
        batches,
        fit_batches=lambda: iter([]),
        validator=lambda m: next(scores),
        progress=False,
        log=lambda s: None,
    )
    trainer.fit()
    trainer.load_best()
    best = torch.load(tmp_path / "checkpoints" / "best.pt", weights_only=True)["model"]
    assert torch.equal(model.conv.bias, best["conv.bias"])
    assert torch.equal(model.bank, best["conv.bias"])  # refitted, not the pre-fit zeros


def test_checkpoints_load_with_weights_only_and_a_crafted_pickle_is_refused(tmp_path) -> None:
    import pickle

    from mmbench.benchmark.checkpoint import load_checkpoint
    from mmbench.errors import CheckpointError

    trainer = Trainer(
        TwoPlayer(MethodConfig()),
        TRAIN,
        tmp_path,
        batches,
        fit_batches=lambda: iter([]),
        validator=lambda m: 0.5,
        progress=False,
        log=print,
    )
    trainer.fit()
    for name in ("last.pt", "best.pt"):
        ckpt = torch.load(tmp_path / "checkpoints" / name, weights_only=True)
        assert {"model", "optimizers", "state", "rng"} <= set(ckpt)

    class Payload:  # unpickling this would run os.system
        def __reduce__(self):
            import os

            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    crafted = tmp_path / "crafted.pt"
    crafted.write_bytes(pickle.dumps({"model": Payload()}, protocol=2))
    with pytest.raises(CheckpointError, match="refused to load"):
        load_checkpoint(crafted)
    assert not (tmp_path / "pwned").exists()
    torch.save({"model": Payload()}, tmp_path / "crafted2.pt")
    (tmp_path / "pwned").unlink(missing_ok=True)
    with pytest.raises(CheckpointError, match="crafted2.pt"):
        load_checkpoint(tmp_path / "crafted2.pt")
    assert not (tmp_path / "pwned").exists()


def test_workers_give_the_same_run_and_resume_exactly(tmp_path) -> None:
    from mmbench.datasets.loader import make_batch_stream

    cfg = replace(TRAIN, steps=8, val_every=3)
    plain, _ = _train(tmp_path / "plain", cfg)

    def with_workers(path, validator=None, seed_init=0):
        torch.manual_seed(seed_init)
        model = Linear(MethodConfig())
        trainer = Trainer(
            model,
            cfg,
            path,
            batches,
            validator=validator,
            seed=3,
            progress=False,
            log=lambda s: None,
            batch_stream=make_batch_stream(batches, cfg.batch_size, num_workers=2, prefetch=3),
        )
        trainer.fit()
        return model, trainer

    workers, _ = with_workers(tmp_path / "workers")
    for a, b in zip(plain.parameters(), workers.parameters()):
        assert torch.equal(a, b)

    calls = {"n": 0}

    def stop_at_third_validation(model) -> float:
        calls["n"] += 1
        if calls["n"] == 3:  # at step 8, before its checkpoint: the last one is step 6
            raise KeyboardInterrupt
        return 0.0

    with pytest.raises(KeyboardInterrupt):
        with_workers(tmp_path / "cut", stop_at_third_validation)
    ckpt = torch.load(tmp_path / "cut" / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["state"]["step"] == 6
    resumed, trainer = with_workers(tmp_path / "cut", seed_init=99)
    assert trainer.state.step == 8
    for a, b in zip(plain.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
