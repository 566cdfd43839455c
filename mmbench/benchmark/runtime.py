"""Where runs execute: the device, CPU cores and threads, and the environment record."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
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
    "available_cores",
    "environment_info",
    "git_commit",
    "pick_device",
    "resolve_jobs",
]
