"""Training batches built ahead of the loop by worker processes, step by step.

The loop names each step it will run with a *key*: ``(step, state)``, where ``state`` is the
bit-generator state of that step's random generator at the point where the batch is drawn
(:func:`rng_state`). A worker rebuilds the generator from the state and draws the batch, so
step ``t``'s batch depends only on ``(seed, t)`` whichever process builds it and whenever: a run
resumed at step ``t`` with workers replays the batches of an uninterrupted run exactly.

:func:`batch_stream` runs a torch :class:`~torch.utils.data.DataLoader` whose sampler is the
lazy sequence of keys (``batch_size=None``: each key is one batch); it keeps at most
``prefetch × workers`` batches in flight, so memory is bounded whatever the run length.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

StepKey = tuple[int, dict[str, Any]]
"""``(step, bit-generator state)``."""

BatchSource = Callable[[np.random.Generator, int], dict[str, torch.Tensor]]


def rng_state(rng: np.random.Generator) -> dict[str, Any]:
    """The picklable state of ``rng`` (small: two 128-bit integers for PCG64)."""
    return rng.bit_generator.state


def rng_from_state(state: dict[str, Any]) -> np.random.Generator:
    """A generator that continues exactly where the one :func:`rng_state` read stood."""
    bit_generator = getattr(np.random, state["bit_generator"])()
    bit_generator.state = state
    return np.random.Generator(bit_generator)


class StepBatches(Dataset):
    """Map-style dataset whose index is a :data:`StepKey`; item = ``(step, batch)``."""

    def __init__(self, source: BatchSource, batch_size: int) -> None:
        self.source = source
        self.batch_size = int(batch_size)

    def __getitem__(self, key: StepKey) -> tuple[int, dict[str, torch.Tensor]]:  # type: ignore[override]
        step, state = key
        return int(step), self.source(rng_from_state(state), self.batch_size)


class _Keys(Sampler):
    """The keys, read lazily (a 200,000-step stage is never listed)."""

    def __init__(self, keys: Iterable[StepKey]) -> None:
        self.keys = keys

    def __iter__(self) -> Iterator[StepKey]:
        return iter(self.keys)


def _context() -> Any:
    # fork shares the parent's cached items copy-on-write; spawn would pickle them per worker.
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def batch_stream(
    source: BatchSource,
    batch_size: int,
    keys: Iterable[StepKey],
    num_workers: int = 0,
    prefetch: int = 2,
    pin_memory: bool = False,
) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
    """``(step, batch)`` for each key, in key order.

    With ``num_workers == 0`` the batches are drawn here, one at a time; otherwise by that many
    worker processes, each holding up to ``prefetch`` batches ahead of the loop.
    """
    if num_workers <= 0:
        for step, state in keys:
            yield int(step), source(rng_from_state(state), int(batch_size))
        return
    loader = DataLoader(
        StepBatches(source, batch_size),
        batch_size=None,
        sampler=_Keys(keys),
        num_workers=int(num_workers),
        prefetch_factor=int(prefetch),
        pin_memory=pin_memory,
        multiprocessing_context=_context(),
    )
    yield from loader


def make_batch_stream(
    source: BatchSource,
    batch_size: int,
    num_workers: int = 0,
    prefetch: int = 2,
    pin_memory: bool = False,
) -> Callable[[Iterable[StepKey]], Iterator[tuple[int, dict[str, torch.Tensor]]]]:
    """:func:`batch_stream` with everything but the keys bound: what the trainer takes."""

    def stream(keys: Iterable[StepKey]) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
        return batch_stream(source, batch_size, keys, num_workers, prefetch, pin_memory)

    return stream


def make_training_stream(
    items: Any,
    patch_size: Any,
    intensity_jitter: bool,
    batch_size: int,
    num_workers: int,
    pin_memory: bool = False,
) -> Callable[[Iterable[StepKey]], Iterator[tuple[int, dict[str, torch.Tensor]]]] | None:
    """The trainer's batch stream for ``num_workers`` workers (``None`` for none: the loop then
    draws in its own process). Array-cached items travel in their stored dtypes."""
    from mmbench.datasets.sampling import make_batch_source

    if num_workers <= 0:
        return None
    source = make_batch_source(items, patch_size, intensity_jitter, compact=True)
    return make_batch_stream(source, batch_size, num_workers, pin_memory=pin_memory)


__all__ = [
    "StepBatches",
    "StepKey",
    "batch_stream",
    "make_batch_stream",
    "make_training_stream",
    "rng_from_state",
    "rng_state",
]
