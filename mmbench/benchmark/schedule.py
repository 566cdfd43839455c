"""The run length in steps: ``train.steps`` as given, or ``train.epochs`` over the split.

With ``train.epochs`` the run trains ``ceil(epochs × training cases ÷ batch_size)`` gradient steps
and validates every ``ceil(val_every × training cases ÷ batch_size)`` steps (``val_every`` then
counts epochs). The poly learning-rate schedule decays over the resolved step count, since the
loop reads it from ``train.steps``. The resolved figures are recorded in the run's ``run.json``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from mmbench.config import Config, TrainSection
from mmbench.errors import ConfigError


@dataclass(frozen=True)
class Schedule:
    """The resolved run length.

    Attributes:
        steps: gradient steps of the run (before a method's ``step_budget``).
        val_every: steps between validations (0: at the end of each stage).
        epochs: ``train.epochs``, or ``None`` when the run length was given in steps.
        train_cases: training cases the epochs were counted over.
        steps_per_epoch: ``train_cases ÷ batch_size`` (a fraction when it does not divide).
    """

    steps: int
    val_every: int
    epochs: int | None
    train_cases: int
    steps_per_epoch: float

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def epoch_steps(epochs: float, train_cases: int, batch_size: int) -> int:
    """``ceil(epochs × train_cases ÷ batch_size)``: the steps of ``epochs`` passes, at least 1.

    Computed with integers where the inputs are integers, so 200 epochs of 1,000 cases at
    batch 1 are exactly 200,000 steps.
    """
    if train_cases < 1:
        raise ConfigError("train.epochs needs at least one training case; the train split is empty")
    if batch_size < 1:
        raise ConfigError(f"train.batch_size must be >= 1, got {batch_size}")
    if float(epochs).is_integer():
        return max(1, -(-int(epochs) * train_cases // batch_size))
    return max(1, math.ceil(epochs * train_cases / batch_size))


def resolve_schedule(train: TrainSection, train_cases: int) -> Schedule:
    """The :class:`Schedule` of a run with ``train_cases`` training cases."""
    per_epoch = train_cases / train.batch_size
    if train.epochs is None:
        assert train.steps is not None  # TrainSection guarantees one of the two
        return Schedule(int(train.steps), int(train.val_every), None, train_cases, per_epoch)
    steps = epoch_steps(train.epochs, train_cases, train.batch_size)
    val_every = (
        min(steps, epoch_steps(train.val_every, train_cases, train.batch_size))
        if train.val_every
        else 0
    )
    return Schedule(steps, val_every, int(train.epochs), train_cases, per_epoch)


def with_schedule(config: Config, schedule: Schedule) -> Config:
    """``config`` whose ``train.steps`` and ``train.val_every`` are the schedule's steps (what
    the loop and the strategies read). The configuration written to the run folder keeps the
    user's unit; this one is not re-validated (it holds both ``steps`` and ``epochs``)."""
    train = dataclasses.replace(config.train)
    train.steps = schedule.steps
    train.val_every = schedule.val_every
    out = dataclasses.replace(config)
    out.train = train
    return out


__all__ = ["Schedule", "epoch_steps", "resolve_schedule", "with_schedule"]
