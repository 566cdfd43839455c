"""Where runs execute: the device, CPU cores and threads, and the environment record."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from mmbench.errors import ConfigError

RECORDED_PACKAGES: tuple[str, ...] = (
    "mmbench",
    "torch",
    "monai",
    "numpy",
    "scipy",
    "nibabel",
    "pandas",
    "scikit-learn",
    "nilearn",
    "joblib",
)


#: glibc's ``mallopt`` parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_MALLOC_TUNED = False


def keep_freed_memory() -> bool:
    """Make glibc's allocator keep freed memory for reuse instead of returning it to the OS.

    Full-size 3-D volumes make every layer allocate and free buffers of hundreds of MB. By
    default glibc serves each from a fresh ``mmap`` and unmaps it on free, so every forward pass
    touches its memory page by page again: at the paper crop this is most of a CPU evaluation's
    system time (minor page faults). Serving large requests from the heap and never trimming it
    removes that cost; the process keeps its peak memory until it exits.

    Applied once per process (``mmbench run`` calls it); a no-op returning ``False`` off glibc
    or when the environment sets ``MMBENCH_MALLOC=default``.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return True
    if os.environ.get("MMBENCH_MALLOC", "") == "default" or not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1 and libc.mallopt(_M_MMAP_MAX, 0) == 1
    except (OSError, AttributeError):
        return False
    _MALLOC_TUNED = bool(ok)
    return _MALLOC_TUNED


def pick_device(requested: str | None = None) -> torch.device:
    """``requested`` (``cpu``, ``cuda``, ``cuda:1``), or with ``auto``/``None`` CUDA when
    present, else CPU."""
    if requested and requested != "auto":
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def available_cores() -> int:
    """CPU cores this process may use (the affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def resolve_jobs(jobs: int | str | None, n_runs: int, device: torch.device) -> int:
    """How many runs train at once: ``auto`` is one on a GPU (the runs would share it) and, on
    a CPU, one per core up to the number of runs; an integer is taken as is."""
    if jobs is None or jobs == "auto":
        if device.type != "cpu":
            return 1
        return max(1, min(n_runs, available_cores()))
    try:
        value = int(jobs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"jobs takes a positive integer or 'auto', got {jobs!r}") from exc
    if value < 1:
        raise ConfigError(f"jobs takes a positive integer or 'auto', got {jobs!r}")
    return value


@dataclass(frozen=True)
class JobPlan:
    """How the runs of one invocation share a host.

    Attributes:
        jobs: runs trained at once (each in its own process when more than one).
        devices: per slot, the ``CUDA_VISIBLE_DEVICES`` its processes get (one GPU each), or
            ``None`` to leave the environment alone (CPU, or a single run).
        threads: torch CPU threads per run (``None``: torch's default).
        workers: data-loading processes per run.
    """

    jobs: int
    devices: tuple[str | None, ...]
    threads: int | None
    workers: int


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` entries (ids or UUIDs)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


def plan_jobs(
    jobs: int | str | None,
    n_runs: int,
    device_type: str,
    gpus: list[str],
    cores: int,
    num_workers: int,
    threads: int | None = None,
) -> JobPlan:
    """Share a host among ``n_runs`` runs.

    On CUDA with several visible GPUs, ``auto`` trains one run per GPU, each process pinned to
    its GPU; an integer ``jobs`` shares the GPUs round-robin among its slots. On a CPU ``auto``
    is one run per core. With more than one run at a time, each run gets an equal share of the
    cores: ``threads`` torch threads (unless given) and at most ``share - 1`` of its
    ``num_workers`` data workers (one core drives the loop).
    """
    on_gpu = device_type == "cuda" and bool(gpus)
    if jobs is None or jobs == "auto":
        n = len(gpus) if on_gpu else (1 if device_type != "cpu" else cores)
    else:
        n = resolve_jobs(jobs, n_runs, torch.device("cpu"))
    n = max(1, min(n, n_runs))
    if n == 1:
        return JobPlan(1, (None,), threads, num_workers)
    share = max(1, cores // n)
    devices = tuple(gpus[i % len(gpus)] if on_gpu else None for i in range(n))
    return JobPlan(n, devices, threads or share, min(num_workers, max(0, share - 1)))


def git_commit() -> str | None:
    """The commit of the mmbench source tree, where it is a git checkout."""
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment_info(device: torch.device | None = None) -> dict[str, Any]:
    """Package versions, device and git commit, for a run's ``environment.json``."""
    versions: dict[str, str | None] = {}
    for pkg in RECORDED_PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    device = device or pick_device()
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "packages": versions,
        "git_commit": git_commit(),
        "command": " ".join(sys.argv),
    }


__all__ = [
    "JobPlan",
    "available_cores",
    "environment_info",
    "git_commit",
    "pick_device",
    "plan_jobs",
    "resolve_jobs",
    "visible_gpus",
]
