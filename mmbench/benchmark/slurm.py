"""Runs as Slurm jobs, through submitit: one job per (method, seed, fold) run, as a job array.

``mmbench run … --executor slurm`` calls :func:`submit_runs` after preparing the data and the
split on the submitting machine (the folder must be visible from the nodes: a shared file
system). Each job runs :func:`mmbench.benchmark.runner.run_task` with the resources of
``executor.slurm.*``; a job that is preempted or reaches its time limit is requeued by submitit
(up to ``executor.slurm.max_requeue`` times) and resumes from the run's last checkpoint, since a
rerun of a run resumes it. Job logs are linked from the run folder (``slurm.out`` and
``slurm.err``; submitit keeps them under ``<out>/.slurm/``).

``executor.slurm.cluster: local`` (or ``debug``) runs the same jobs with submitit's local
executor (subprocesses on this machine; ``debug``: in this process): that is how the path is
tested without a cluster.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mmbench.benchmark.run import RunSummary, summarize
from mmbench.benchmark.rundir import STATUS_COMPLETE, RunDir
from mmbench.benchmark.status import STATUS_QUEUED
from mmbench.config import Config, SlurmSection
from mmbench.errors import MMBenchError, RunError

try:  # the optional extra: pip install 'mmbench[slurm]'
    import submitit
    from submitit.helpers import Checkpointable
except ImportError:  # pragma: no cover - exercised only without the extra
    submitit = None
    Checkpointable = object  # type: ignore[assignment,misc]


class RunJob(Checkpointable):  # type: ignore[misc,valid-type]
    """The callable a job runs: one run. On preemption or timeout submitit calls
    :meth:`checkpoint` (inherited), which resubmits the same call; the run resumes from its
    folder."""

    def __call__(self, method: str, seed: int, task: dict[str, Any]) -> RunSummary:
        from mmbench.benchmark.runner import run_task

        return run_task(method, seed, task)


def _require_submitit() -> None:
    if submitit is None:
        raise MMBenchError(
            "--executor slurm needs submitit: pip install 'mmbench[slurm]' (or: pip install "
            "submitit)"
        )


def make_executor(settings: SlurmSection, folder: Path) -> Any:
    """A submitit executor for ``settings`` writing its files under ``folder``."""
    _require_submitit()
    cluster = None if settings.cluster == "slurm" else settings.cluster
    try:
        executor = submitit.AutoExecutor(
            folder=folder / "%j",
            cluster=cluster or "slurm",
            slurm_max_num_timeout=settings.max_requeue,
        )
    except RuntimeError as exc:  # no srun on this machine
        raise MMBenchError(
            f"cannot submit Slurm jobs from here ({exc}); run on a Slurm login node, or set "
            "executor.slurm.cluster=local to run the jobs on this machine"
        ) from exc
    params: dict[str, Any] = {
        "name": "mmbench",
        "timeout_min": int(settings.timeout_min),
        "cpus_per_task": int(settings.cpus_per_task),
        "mem_gb": settings.mem_gb,
        "nodes": 1,
        "tasks_per_node": 1,
        "slurm_partition": settings.partition,
        "slurm_account": settings.account,
        "slurm_qos": settings.qos,
        "slurm_additional_parameters": dict(settings.extra) or None,
        "slurm_setup": list(settings.setup) or None,
        "slurm_array_parallelism": int(settings.array_parallelism),
    }
    if settings.cluster == "slurm" or settings.gpus_per_job == 0:
        params["gpus_per_node"] = int(settings.gpus_per_job)
    else:  # the local executor can only hand out GPUs this machine has
        from mmbench.benchmark.runtime import visible_gpus

        params["gpus_per_node"] = min(int(settings.gpus_per_job), len(visible_gpus()))
    executor.update_parameters(**params)
    return executor


def _task(data: Any, config: Config, out: Path) -> dict[str, Any]:
    settings = config.executor.slurm
    workers = min(config.train.num_workers, max(0, settings.cpus_per_task - 1))
    return {
        "dataset": data.dataset,
        "data_root": str(data.root),
        "split": data.split,
        "config": config,
        "out": str(out.resolve()),
        "threads": config.train.threads or settings.cpus_per_task,
        "workers": workers,
    }


def _link_logs(run: RunDir, job: Any) -> None:
    run.path.mkdir(parents=True, exist_ok=True)
    for name, target in (("slurm.out", job.paths.stdout), ("slurm.err", job.paths.stderr)):
        link = run.path / name
        if link.is_symlink() or link.exists():
            link.unlink()
        os.symlink(Path(target).resolve(), link)


ACTIVE_STATES = frozenset(
    {
        "PENDING",
        "RUNNING",
        "REQUEUED",
        "REQUEUE_HOLD",
        "REQUEUE_FED",
        "CONFIGURING",
        "COMPLETING",
        "SUSPENDED",
        "RESIZING",
        "SIGNALING",
        "STAGE_OUT",
    }
)
"""Slurm job states in which a run's job is still alive (rerunning the command skips it)."""


def _active_job(run: RunDir, settings: SlurmSection, folder: Path) -> str | None:
    """The Slurm job id of ``run`` if that job is still queued or running, else ``None``."""
    info = run.read_info()
    job = info.get("slurm_job_id")
    if not job or settings.cluster != "slurm" or info.get("status") == STATUS_COMPLETE:
        return None
    try:
        state = submitit.SlurmJob(folder=folder / "%j", job_id=str(job)).state
    except Exception:  # sacct unavailable: resubmit rather than wait forever
        return None
    return str(job) if str(state).split()[0] in ACTIVE_STATES else None


def submit_runs(
    units: Sequence[tuple[str, int]],
    data: Any,
    config: Config,
    out: Path,
    wait: bool = True,
    log: Callable[[str], None] = print,
) -> list[RunSummary]:
    """Submit one job per unfinished ``(method, seed)`` run (a job array) and, with ``wait``,
    wait for them all and return every run's summary in the order of ``units``.

    Raises:
        RunError: a job failed (the message names the run, the job and its log); the other
            jobs are waited for first, so one failure does not hide another's result.
    """
    _require_submitit()
    out = Path(out)
    fold = config.split.fold
    runs = {u: RunDir.for_run(out, data.dataset, u[0], u[1], fold) for u in units}
    todo = [u for u in units if runs[u].status != STATUS_COMPLETE]
    for u in units:
        if u not in todo:
            log(f"{u[0]} seed {u[1]}: already complete in {runs[u].path}")
    active = {u: _active_job(runs[u], config.executor.slurm, out / ".slurm") for u in todo}
    for u, job in active.items():
        if job:
            log(f"{u[0]} seed {u[1]}: job {job} is still queued or running; not submitted again")
    todo = [u for u in todo if not active[u]]
    jobs: dict[tuple[str, int], Any] = {}
    if todo:
        executor = make_executor(config.executor.slurm, out / ".slurm")
        task = _task(data, config, out)
        submitted = executor.map_array(
            RunJob(), [m for m, _ in todo], [s for _, s in todo], [task] * len(todo)
        )
        for unit, job in zip(todo, submitted):
            jobs[unit] = job
            run = runs[unit]
            _link_logs(run, job)
            info = run.read_info()
            run.write_info(
                {
                    **info,
                    "dataset": data.dataset,
                    "method": unit[0],
                    "seed": unit[1],
                    "fold": fold,
                    "status": STATUS_QUEUED if not info.get("status") else info["status"],
                    "slurm_job_id": str(job.job_id),
                }
            )
            log(f"submitted {unit[0]} seed {unit[1]} fold {fold}: job {job.job_id}")
    if not wait:
        log(
            f"{len(jobs)} job(s) submitted; follow them with: mmbench status --out {out}"
            if jobs
            else "nothing to submit"
        )
        return [summarize(runs[u], runs[u].read_info()) for u in units if u not in jobs]
    results: dict[tuple[str, int], RunSummary] = {}
    failures: list[str] = []
    for unit, job in jobs.items():
        try:
            results[unit] = job.result()
            log(f"finished {unit[0]} seed {unit[1]} (job {job.job_id})")
        except Exception as exc:  # submitit's FailedJobError/UncompletedJobError
            first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            failures.append(
                f"{unit[0]} seed {unit[1]}: job {job.job_id} failed ({first}); "
                f"log: {runs[unit].path / 'slurm.err'}"
            )
    if failures:
        raise RunError("; ".join(failures) + "; rerun the command to resume")
    for unit in units:
        if unit not in results:
            results[unit] = summarize(runs[unit], runs[unit].read_info())
    return [results[u] for u in units]


__all__ = ["RunJob", "make_executor", "submit_runs"]
