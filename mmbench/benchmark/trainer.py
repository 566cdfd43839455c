"""The one training loop every strategy runs in.

The loop owns the device, precision (bf16/fp16 autocast on CUDA), optimiser steps, gradient
clipping, the poly learning-rate schedule, the per-step modality subset, validation-based
checkpoint selection (on the **val** split only), atomic checkpoints, exact resume, the CSV
training log and progress bars. Strategies only compute losses (:meth:`Strategy.training_step`).

Exact resume: every random choice of step ``t`` (cases in the batch, crop and flips, the subset,
and torch's global generator used by dropout or sampling inside a strategy) is seeded from
``(seed, t)``. A run resumed from the checkpoint of step ``t`` therefore replays steps ``t+1…``
exactly as the uninterrupted run would have. With a ``batch_stream`` (worker processes building
batches ahead), the loop hands the workers each step's generator state at the point where the
batch is drawn (:mod:`mmbench.datasets.loader`), so the batches are the same as without workers.
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from mmbench.atomic import atomic_torch_save, read_csv_rows, write_csv_rows_atomic
from mmbench.benchmark.checkpoint import load_checkpoint, numpy_state, set_numpy_state
from mmbench.benchmark.runtime import pick_device
from mmbench.benchmark.schema import (
    CHECKPOINT_BEST,
    CHECKPOINT_DIR,
    CHECKPOINT_LAST,
    TRAIN_LOG_FILE,
)
from mmbench.config import TrainSection
from mmbench.methods.base import Stage, StepContext, Strategy, validate_losses
from mmbench.subsets import ALL_SUBSETS, FULL, Subset, as_subset, zero_absent


def interruption_point(where: str, index: int) -> None:
    """Test hook: ``MMBENCH_KILL_AT=train:5`` or ``eval:1`` kills the process at that point.

    ``os._exit`` skips every cleanup handler, as a SIGKILL would; it lets the resume tests
    interrupt a run at an exact place instead of racing a timer.
    """
    target = os.environ.get("MMBENCH_KILL_AT")
    if target and target == f"{where}:{index}":
        os._exit(137)


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``train.amp`` (``auto``: bf16 on CUDA when supported, else off)."""
    if device.type != "cuda" or amp == "off":
        return None
    if amp == "fp16":
        return torch.float16
    if amp in ("bf16", "auto"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    raise ValueError(f"train.amp must be auto, bf16, fp16 or off, got {amp!r}")


def poly_factor(step: int, total: int, power: float) -> float:
    """Poly decay ``(1 - step/total) ** power``, the factor applied to each base lr."""
    return max(0.0, 1.0 - step / max(1, total)) ** power


class SubsetSampler:
    """Draws the training subset of a step: uniform over the 15, or weighted by name."""

    def __init__(self, weights: str | dict[str, float] | None = "uniform") -> None:
        self.subsets: list[Subset] = list(ALL_SUBSETS)
        if weights in (None, "uniform"):
            p = np.ones(len(self.subsets))
        elif isinstance(weights, dict):
            by_name = {as_subset(k).name: float(v) for k, v in weights.items()}
            p = np.array([by_name.get(s.name, 0.0) for s in self.subsets])
        else:
            raise ValueError(
                f"train.subset_weights must be 'uniform' or a mapping, got {weights!r}"
            )
        if p.sum() <= 0 or (p < 0).any():
            raise ValueError("train.subset_weights must be non-negative with a positive sum")
        self.p = p / p.sum()

    def draw(self, rng: np.random.Generator) -> Subset:
        return self.subsets[int(rng.choice(len(self.subsets), p=self.p))]


def step_rng(seed: int, step: int) -> np.random.Generator:
    return np.random.default_rng([seed, step, 0x6D6D62])


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


@dataclass
class TrainerState:
    step: int = 0  # gradient steps completed over the whole run
    stage_index: int = 0
    stage_step: int = 0  # steps completed in the current stage
    fitted: list[str] = field(default_factory=list)  # fit stages done
    best_score: float = -math.inf
    best_step: int = -1
    best_stage: int = -1  # stage index the best weights were saved in
    train_seconds: float = 0.0  # wall time in fit() over every invocation, up to the checkpoint

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


BatchSource = Callable[[np.random.Generator, int], dict[str, torch.Tensor]]
"""``(rng, batch_size) → {"image": N×4×…, "regions": N×3×…, "compartments": N×3×…}``, full
modalities; the loop applies the subset. A compact batch has a float16 image and, instead of the
masks, ``targets``: the uint8 N×D×H×W bit field of :mod:`mmbench.datasets.arrays`; both are
converted on the device."""

BatchStream = Callable[[Iterable[tuple[int, dict[str, Any]]]], Iterator[tuple[int, dict]]]
"""``keys → (step, batch)`` for keys ``(step, generator state at the batch draw)``, in order
(:func:`mmbench.datasets.loader.make_batch_stream`)."""

Validator = Callable[[Strategy], float]
"""Scores the strategy on the val split (higher is better)."""


class Trainer:
    """Runs a strategy's stages with one shared loop.

    Args:
        strategy: the model to train (moved to ``device``).
        train_config: the configuration's ``train`` section (:class:`~mmbench.config.TrainSection`).
        run_dir: where ``checkpoints/`` and ``train_log.csv`` go.
        batches: draws a training batch (see :data:`BatchSource`).
        fit_batches: yields full-modality training batches for ``fit`` stages.
        validator: scores the model on the val split; ``None`` disables selection.
        seed: the run's seed.
        batch_stream: builds the batches of a stage ahead (worker processes); ``None`` draws
            each from ``batches`` in the loop.
    """

    def __init__(
        self,
        strategy: Strategy,
        train_config: TrainSection,
        run_dir: Path,
        batches: BatchSource,
        fit_batches: Callable[[], Any] | None = None,
        validator: Validator | None = None,
        seed: int = 0,
        device: torch.device | None = None,
        progress: bool = True,
        log: Callable[[str], None] = print,
        batch_stream: BatchStream | None = None,
    ) -> None:
        self.strategy = strategy
        self.batch_stream = batch_stream
        self.cfg = train_config
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / CHECKPOINT_DIR
        self.log_path = self.run_dir / TRAIN_LOG_FILE
        self.batches = batches
        self.fit_batches = fit_batches
        self.validator = validator
        self.seed = int(seed)
        self.device = device or pick_device()
        self.progress = progress
        self.log = log
        self.total_steps = int(round(train_config.steps * strategy.step_budget))
        self.sampler = SubsetSampler(train_config.subset_weights)
        self.amp_dtype = autocast_dtype(train_config.amp, self.device)
        self.stages: list[Stage] = strategy.stages()
        self._check_stages()
        self.stage_steps = self._split_steps()
        strategy.to(self.device)
        self.optimizers = strategy.configure_optimizers(
            lr=train_config.lr, weight_decay=train_config.weight_decay
        )
        self.base_lrs = {
            name: [g["lr"] for g in opt.param_groups] for name, opt in self.optimizers.items()
        }
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=self.amp_dtype == torch.float16 and self.device.type == "cuda"
        )
        self.state = TrainerState()
        self._log_fields: list[str] | None = None
        self.step_seconds: list[float] = []  # wall time of each step this invocation ran
        self._clock: float | None = None  # when fit() time was last added to the state

    # ------------------------------------------------------------------------------ set-up
    def _check_stages(self) -> None:
        names = set()
        for stage in self.stages:
            if stage.name in names:
                raise ValueError(f"{self.strategy.name}: duplicate stage name {stage.name!r}")
            names.add(stage.name)
        if not any(s.kind == "gradient" for s in self.stages):
            raise ValueError(f"{self.strategy.name}: no gradient stage")

    def _split_steps(self) -> list[int]:
        grad = [s for s in self.stages if s.kind == "gradient"]
        total_frac = sum(s.fraction for s in grad)
        counts, assigned = [], 0
        grad_seen = 0
        for stage in self.stages:
            if stage.kind != "gradient":
                counts.append(0)
                continue
            grad_seen += 1
            if grad_seen == len(grad):
                n = self.total_steps - assigned
            else:
                n = int(round(self.total_steps * stage.fraction / total_frac))
            counts.append(max(0, n))
            assigned += counts[-1]
        return counts

    # ------------------------------------------------------------------------ checkpoints
    def _add_elapsed(self) -> None:
        # Fit time goes into the state with every checkpoint, so a killed run's time up to its
        # last checkpoint survives the kill and a resumed run keeps adding to it.
        if self._clock is not None:
            now = time.perf_counter()
            self.state.train_seconds += now - self._clock
            self._clock = now

    def _checkpoint(self) -> dict[str, Any]:
        self._add_elapsed()
        rng = {
            "python": random.getstate(),
            "numpy": numpy_state(),
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "model": self.strategy.state_dict(),
            "optimizers": {n: o.state_dict() for n, o in self.optimizers.items()},
            "scaler": self.scaler.state_dict(),
            "state": self.state.as_dict(),
            "rng": rng,
            "method": self.strategy.name,
        }

    def save(self, name: str = CHECKPOINT_LAST) -> Path:
        return atomic_torch_save(self._checkpoint(), self.ckpt_dir / name)

    def resume(self) -> bool:
        """Load ``last.pt`` if present; returns whether a checkpoint was found."""
        path = self.ckpt_dir / CHECKPOINT_LAST
        if not path.exists():
            return False
        ckpt = load_checkpoint(path, self.device)
        self.strategy.load_state_dict(ckpt["model"])
        for name, opt in self.optimizers.items():
            opt.load_state_dict(ckpt["optimizers"][name])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.state = TrainerState(**ckpt["state"])
        rng = ckpt["rng"]
        random.setstate(rng["python"])
        set_numpy_state(rng["numpy"])
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        self._truncate_log(self.state.step)
        self.log(f"resumed {self.strategy.name} at step {self.state.step}/{self.total_steps}")
        return True

    def load_best(self) -> None:
        """Load the weights selected on the val split, if any were selected.

        Fit stages that ran after the selected weights were saved (e.g. a retrieval bank built
        after training) are fitted again on those weights, so that what they fitted matches them.
        """
        path = self.ckpt_dir / CHECKPOINT_BEST
        if not path.exists():
            return
        ckpt = load_checkpoint(path, self.device)
        self.strategy.load_state_dict(ckpt["model"])
        best_stage = int(ckpt["state"].get("best_stage", -1))
        for stage in self.stages[best_stage + 1 :]:
            if stage.kind == "fit":
                self._run_fit(stage, record=False)

    # --------------------------------------------------------------------------- logging
    def _truncate_log(self, step: int) -> None:
        # Rows past the checkpoint were written by the interrupted run and will be replayed.
        if not self.log_path.exists():
            return
        rows = [r for r in read_csv_rows(self.log_path) if int(r["step"]) <= step]
        if rows:
            write_csv_rows_atomic(self.log_path, rows, list(rows[0].keys()))
        else:
            self.log_path.unlink()

    def _write_log(self, row: dict[str, Any]) -> None:
        new_file = not self.log_path.exists()
        if new_file:
            self._log_fields = list(row.keys())
        elif self._log_fields is None:
            with self.log_path.open() as f:
                self._log_fields = next(csv.reader(f))
        fields = self._log_fields
        for key in row:
            if key not in fields:  # a loss first seen in a later stage
                rows = read_csv_rows(self.log_path) if not new_file else []
                fields.append(key)
                write_csv_rows_atomic(self.log_path, rows, fields)
                new_file = False
        with self.log_path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields, restval="")
            if new_file:
                writer.writeheader()
            writer.writerow(row)

    # ------------------------------------------------------------------------------- loop
    def _make_batch(self, raw: dict[str, torch.Tensor], subset: Subset) -> dict[str, Any]:
        if "targets" in raw:  # a compact batch: the masks as one bit field, decoded here
            from mmbench.datasets.arrays import decode_targets_tensor

            bits = raw["targets"].to(self.device, non_blocking=True)
            raw = {**raw, **decode_targets_tensor(bits)}
        full = raw["image"].to(self.device, non_blocking=True).float()
        return {
            "image": zero_absent(full, subset),
            "image_full": full,
            "regions": raw["regions"].to(self.device, non_blocking=True).float(),
            "compartments": raw["compartments"].to(self.device, non_blocking=True).float(),
            "available": subset.available,
            "subset": subset,
        }

    def _lr_factor(self, stage: Stage, name: str, ctx: StepContext) -> float:
        custom = self.strategy.lr_factor(name, ctx)
        if custom is not None:
            return float(custom)
        power = self.cfg.poly_power
        if stage.schedule == "stage":
            # poly over the stage's own steps, from the stage's first step at the full rate
            return poly_factor(ctx.stage_step - 1, ctx.stage_steps, power)
        return poly_factor(ctx.step, self.total_steps, power)

    def _optimizer_step(
        self, stage: Stage, losses: dict[str, torch.Tensor], ctx: StepContext
    ) -> None:
        active = [n for n in stage.optimizers if n in losses]
        for name in active:
            opt = self.optimizers[name]
            factor = self._lr_factor(stage, name, ctx)
            for group, base in zip(opt.param_groups, self.base_lrs[name]):
                group["lr"] = base * factor
            opt.zero_grad(set_to_none=True)
        # Back-propagate every loss into its own optimiser's parameters before any step, so a
        # generator loss through a discriminator neither updates nor reads stale weights.
        for i, name in enumerate(active):
            params = [
                p
                for g in self.optimizers[name].param_groups
                for p in g["params"]
                if p.requires_grad
            ]
            retain = i < len(active) - 1
            self.scaler.scale(losses[name]).backward(inputs=params, retain_graph=retain)
        clip = self.cfg.grad_clip
        for name in active:
            opt = self.optimizers[name]
            if clip:
                self.scaler.unscale_(opt)
                params = [p for g in opt.param_groups for p in g["params"]]
                torch.nn.utils.clip_grad_norm_(params, float(clip))
            self.scaler.step(opt)
        self.scaler.update()

    def _validate(self, stage: Stage) -> None:
        if self.validator is None or not stage.select_on_val:
            return
        for later in self.stages[self.state.stage_index + 1 :]:
            if later.kind == "fit" and later.fit_before_val:
                self._run_fit(later, record=False)
        self.strategy.eval()
        score = float(self.validator(self.strategy))
        self.strategy.train()
        improved = score > self.state.best_score
        if improved:
            self.state.best_score, self.state.best_step = score, self.state.step
            self.state.best_stage = self.state.stage_index
        self.log(
            f"{self.strategy.name} step {self.state.step}: val score {score:.4f}"
            + (" (best)" if improved else f" (best {self.state.best_score:.4f})")
        )
        if improved:
            self.save(CHECKPOINT_BEST)

    def fit(self) -> TrainerState:
        """Run (or finish) every stage; returns the final state. Resumes from ``last.pt``."""
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        seed_everything(self.seed, self.cfg.deterministic)
        self.resume()
        self._clock = time.perf_counter()
        val_every = self.cfg.val_every
        log_every = self.cfg.log_every
        bar = tqdm(
            total=self.total_steps,
            initial=self.state.step,
            disable=not self.progress,
            desc=f"train {self.strategy.name}",
            leave=False,
            dynamic_ncols=True,
        )
        try:
            while self.state.stage_index < len(self.stages):
                stage = self.stages[self.state.stage_index]
                n_steps = self.stage_steps[self.state.stage_index]
                if stage.kind == "fit":
                    if stage.name not in self.state.fitted:
                        self._run_fit(stage)
                    self._next_stage()
                    continue
                self.strategy.train()
                stream = self._stream(stage, n_steps)
                try:
                    while self.state.stage_step < n_steps:
                        t_step = time.perf_counter()
                        self._train_step(stage, n_steps, log_every, stream)
                        self.step_seconds.append(time.perf_counter() - t_step)
                        bar.update(1)
                        interruption_point("train", self.state.step)
                        end_of_stage = self.state.stage_step == n_steps
                        if (val_every and self.state.stage_step % val_every == 0) or end_of_stage:
                            self._validate(stage)
                            self.save()
                finally:
                    close = getattr(stream, "close", None)
                    if close is not None:
                        close()  # stops the worker processes
                self._next_stage()
        finally:
            bar.close()
            self._add_elapsed()
            self._clock = None
        return self.state

    def _next_stage(self) -> None:
        self.state.stage_index += 1
        self.state.stage_step = 0
        self.save()

    def _run_fit(self, stage: Stage, record: bool = True) -> None:
        if self.fit_batches is None:
            raise RuntimeError(f"{self.strategy.name} has a fit stage but no fit data was given")
        ctx = StepContext(self.state.step, self.total_steps, stage.name, 0, 0, FULL)
        self.strategy.eval()
        with torch.no_grad():
            self.strategy.fit(self.fit_batches(), ctx)
        self.strategy.train()
        if record:
            self.state.fitted.append(stage.name)
        self.log(f"{self.strategy.name}: fitted stage {stage.name!r}")

    def _step_draws(self, stage: Stage, step: int) -> tuple[np.random.Generator, int, Subset]:
        """Step ``step``'s generator (positioned at the batch draw), torch seed and subset."""
        rng = step_rng(self.seed, step)
        torch_seed = int(rng.integers(2**62))
        if stage.subset is not None:
            subset = as_subset(stage.subset)
        elif self.strategy.train_subsets == "full":
            subset = FULL
        else:
            subset = self.sampler.draw(rng)
        return rng, torch_seed, subset

    def _stream(self, stage: Stage, n_steps: int) -> Iterator[tuple[int, dict]] | None:
        """The batches of the rest of ``stage`` from :attr:`batch_stream`, if one was given."""
        if self.batch_stream is None:
            return None
        first = self.state.step + 1
        last = self.state.step + n_steps - self.state.stage_step

        def keys() -> Iterator[tuple[int, dict[str, Any]]]:
            for step in range(first, last + 1):
                yield step, self._step_draws(stage, step)[0].bit_generator.state

        return iter(self.batch_stream(keys()))

    def _train_step(
        self,
        stage: Stage,
        n_steps: int,
        log_every: int,
        stream: Iterator[tuple[int, dict]] | None = None,
    ) -> None:
        step = self.state.step + 1
        rng, torch_seed, subset = self._step_draws(stage, step)
        if stream is None:
            raw = self.batches(rng, self.cfg.batch_size)
        else:
            got, raw = next(stream)
            if got != step:
                raise RuntimeError(f"the batch stream gave step {got}'s batch at step {step}")
        # After the batch: starting a DataLoader draws from torch's global generator.
        torch.manual_seed(torch_seed)
        batch = self._make_batch(raw, subset)
        ctx = StepContext(
            step, self.total_steps, stage.name, self.state.stage_step + 1, n_steps, subset
        )
        t0 = time.perf_counter()
        autocast = (
            torch.autocast(self.device.type, dtype=self.amp_dtype)
            if self.amp_dtype is not None
            else contextlib.nullcontext()
        )
        with autocast:
            losses = self.strategy.training_step(batch, ctx)
        validate_losses(losses, stage.optimizers)
        grads = {k: v for k, v in losses.items() if not k.startswith("log/")}
        for name, value in grads.items():
            if not torch.isfinite(value.detach()).all():
                raise FloatingPointError(
                    f"{self.strategy.name}: loss {name!r} is {value.item()} at step {step} "
                    f"(stage {stage.name}, subset {subset.name})"
                )
        self._optimizer_step(stage, grads, ctx)
        self.state.step = step
        self.state.stage_step += 1
        if step % log_every == 0 or self.state.stage_step == n_steps:
            row: dict[str, Any] = {
                "step": step,
                "stage": stage.name,
                "subset": subset.name,
                "lr": self.optimizers[stage.optimizers[0]].param_groups[0]["lr"],
                "seconds": round(time.perf_counter() - t0, 4),
            }
            for key, value in losses.items():
                row[key.removeprefix("log/")] = float(
                    value.detach() if torch.is_tensor(value) else value
                )
            self._write_log(row)
