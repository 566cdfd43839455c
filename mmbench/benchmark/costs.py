"""What a run costs, recorded beside its scores in ``run.json`` under ``costs``.

Keys (:data:`COST_KEYS`; reports read them by these names):

* ``params_inference``: parameters used at inference (:meth:`Strategy.parameter_count`).
* ``params_training``: parameters used **only** in training (teachers, discriminators,
  auxiliary decoders: :meth:`Strategy.training_only_parameter_count`); the parameters trained
  are the sum of both.
* ``gflops_forward``: GFLOPs (10⁹ floating-point operations, a multiply-add counted as 2) of one
  inference forward pass (:meth:`Strategy.predict_window`) on one full-modality crop of the
  preset's ``model.patch_size``, batch 1, counted by
  :class:`torch.utils.flop_counter.FlopCounterMode` (convolutions, matrix
  products, attention; element-wise operations are not counted).
* ``train_s_per_step``: median wall seconds of one training step (batch, forward, backward,
  optimiser) over the steps this run timed.
* ``infer_s_per_case``: wall seconds of one whole-volume sliding-window prediction (one subset,
  all four modalities) of the first test case, scoring excluded.
* ``peak_memory_mb``: on CUDA, the peak memory allocated by torch
  (``torch.cuda.max_memory_allocated``); on CPU, the peak resident set size of the process
  during the run (Linux ``VmHWM``, reset when the run starts; where it cannot be reset,
  ``getrusage`` gives the process's lifetime peak). MiB.
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from mmbench.benchmark.evaluator import predict_volume
from mmbench.methods.base import Strategy
from mmbench.subsets import FULL, MODALITIES

COST_KEYS: tuple[str, ...] = (
    "params_inference",
    "params_training",
    "gflops_forward",
    "train_s_per_step",
    "infer_s_per_case",
    "peak_memory_mb",
)

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def forward_gflops(strategy: Strategy, patch_size: Sequence[int]) -> float:
    """GFLOPs of one :meth:`Strategy.predict_window` on a 1×4×D×H×W full-modality input.

    The strategy is left in eval mode on its device; the input is random (the count does not
    depend on values).
    """
    device = _device(strategy)
    x = torch.randn(1, len(MODALITIES), *(int(p) for p in patch_size), device=device)
    strategy.eval()
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        strategy.predict_window(x, FULL.available)
    return counter.get_total_flops() / 1e9


def inference_seconds(strategy: Strategy, item: Mapping[str, Any], config: Any) -> float:
    """Wall seconds of one full-modality sliding-window prediction of a preprocessed item."""
    device = _device(strategy)
    image = torch.as_tensor(np.asarray(item["image"]), dtype=torch.float32)[None].to(device)
    strategy.eval()
    _sync(device)
    t0 = time.perf_counter()
    with torch.inference_mode():
        predict_volume(
            strategy,
            image,
            FULL,
            config.window,
            config.eval.sw_batch_size,
            config.eval.sw_overlap,
        )
    _sync(device)
    return time.perf_counter() - t0


def median_step_seconds(seconds: Sequence[float]) -> float | None:
    """Median of per-step wall times; ``None`` when no step was timed."""
    return float(statistics.median(seconds)) if seconds else None


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak-memory window for the run (CUDA statistics, Linux ``VmHWM``)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        _CLEAR_REFS.write_text("5")  # Linux ≥ 4.0: resets the peak RSS (VmHWM) of this process
    except OSError:
        pass


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory since :func:`reset_peak_memory`, MiB (see the module docstring)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, else kB


def _device(strategy: Strategy) -> torch.device:
    try:
        return next(strategy.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


__all__ = [
    "COST_KEYS",
    "forward_gflops",
    "inference_seconds",
    "median_step_seconds",
    "peak_memory_mb",
    "reset_peak_memory",
]
