"""Where every run under a results folder stands, read from the runs' ``run.json``.

States: ``finished`` (complete), ``running`` (training or evaluating), ``failed`` (stopped by an
error, recorded with it), ``stopped`` (interrupted: Ctrl-C, or its process is gone from this
host), ``queued`` (submitted to Slurm, not started). Rerunning the command resumes a failed,
stopped or running-but-killed run from its last checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mmbench.benchmark import schema
from mmbench.benchmark.rundir import STATUS_COMPLETE, RunDir

STATUS_FAILED = "failed"
STATUS_STOPPED = "stopped"
STATUS_QUEUED = "queued"
STATES: tuple[str, ...] = ("finished", "running", "failed", "stopped", "queued")


def process_info() -> dict[str, Any]:
    """``host`` and ``pid`` of this process, recorded in ``run.json`` so that ``mmbench
    status`` can tell a running run from one whose process was killed."""
    info: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid()}
    job = os.environ.get("SLURM_JOB_ID")
    if job:
        array = os.environ.get("SLURM_ARRAY_TASK_ID")
        info["slurm_job_id"] = (
            f"{os.environ.get('SLURM_ARRAY_JOB_ID', job)}_{array}" if array else job
        )
    return info


@contextlib.contextmanager
def recording_failure(run: RunDir) -> Iterator[None]:
    """Record in ``run.json`` how the body stopped, if it raised: ``outcome`` ``stopped`` on
    Ctrl-C, ``failed`` with the ``error`` otherwise (the exception propagates). ``status`` keeps
    where the run was (training, evaluating); the next invocation rewrites ``run.json`` without
    the outcome."""
    try:
        yield
    except KeyboardInterrupt:
        _mark(run, STATUS_STOPPED, "interrupted")
        raise
    except BaseException as exc:
        _mark(run, STATUS_FAILED, f"{type(exc).__name__}: {exc}")
        raise


def _mark(run: RunDir, status: str, error: str) -> None:
    if not run.info_path.exists() or run.status == STATUS_COMPLETE:
        return
    with contextlib.suppress(OSError):
        run.update_info(outcome=status, error=error, stopped_at=time.time())


@dataclass
class RunState:
    """One run folder's state (see the module docstring)."""

    dataset: str
    method: str
    seed: int
    fold: int
    state: str
    step: int | None
    steps: int | None
    path: str
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _alive(info: dict[str, Any]) -> bool | None:
    """Whether the run's process is alive; ``None`` when that cannot be told from here."""
    if info.get("host") != socket.gethostname() or not info.get("pid"):
        return None
    try:
        os.kill(int(info["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _last_step(run: RunDir) -> int | None:
    try:
        with run.log_path.open("rb") as f:
            f.seek(max(0, run.log_path.stat().st_size - 4096))
            lines = f.read().decode(errors="replace").strip().splitlines()
        return int(lines[-1].split(",")[0]) if lines else None
    except (OSError, ValueError):
        return None


def run_state(run: RunDir) -> RunState:
    """The state of one run folder."""
    info = run.read_info()
    status = info.get("status")
    outcome = info.get("outcome")
    detail = ""
    if status == STATUS_COMPLETE:
        state = "finished"
    elif outcome == STATUS_FAILED:
        state, detail = "failed", f"{status}: {info.get('error', '')}"
    elif outcome == STATUS_STOPPED:
        state, detail = "stopped", f"{status}: {info.get('error', '')}"
    elif status == STATUS_QUEUED:
        state, detail = "queued", f"slurm job {info.get('slurm_job_id', '?')}"
    elif _alive(info) is False:
        state, detail = "stopped", f"process {info.get('pid')} on {info.get('host')} is gone"
    else:
        state = "running"
        detail = str(status or "")
        if info.get("slurm_job_id"):
            detail += f" (slurm job {info['slurm_job_id']})"
    schedule = info.get("schedule") or {}
    return RunState(
        dataset=str(info.get("dataset", run.path.parent.parent.name)),
        method=str(info.get("method", run.path.parent.name)),
        seed=int(info.get("seed", 0)),
        fold=int(info.get("fold", 0)),
        state=state,
        step=_last_step(run),
        steps=schedule.get("steps"),
        path=str(run.path),
        detail=detail,
    )


def run_states(out: str | Path) -> list[RunState]:
    """Every run folder under ``out`` (a folder holding a ``run.json``), sorted by path."""
    return [run_state(RunDir(p.parent)) for p in sorted(Path(out).rglob(schema.RUN_INFO_FILE))]


def format_states(states: list[RunState]) -> str:
    """A table: one line per run, then the count per state."""
    if not states:
        return "no runs found"
    rows = [("dataset", "method", "seed", "fold", "state", "step", "detail")]
    for s in states:
        step = "" if s.step is None else f"{s.step}" + (f"/{s.steps}" if s.steps else "")
        rows.append((s.dataset, s.method, str(s.seed), str(s.fold), s.state, step, s.detail))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows]
    counts = {k: sum(s.state == k for s in states) for k in STATES}
    lines.append(", ".join(f"{n} {k}" for k, n in counts.items() if n))
    return "\n".join(line.rstrip() for line in lines)


__all__ = [
    "STATES",
    "RunState",
    "format_states",
    "process_info",
    "recording_failure",
    "run_state",
    "run_states",
]
