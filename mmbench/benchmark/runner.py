"""Scheduling the runs of one invocation: methods × seeds, one after another or in parallel.

``run_benchmark`` is what ``mmbench run`` calls; everything it does can be done from Python::

    from mmbench.benchmark.runner import run_benchmark
    summaries = run_benchmark(["dropout-unet"], dataset="synthetic", preset="quick")

Each run (:func:`mmbench.benchmark.run.run_one`) lives in its own folder
(``<out>/<dataset>/<method>/seed<S>-fold<F>/``, see :mod:`mmbench.benchmark.schema`) that holds
everything needed to resume: rerunning the same command continues training from the last
checkpoint and evaluation from the last finished case, and skips finished runs.
"""

from __future__ import annotations

import contextlib
import copy
import multiprocessing
import os
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from mmbench.benchmark.run import RunSummary, run_one
from mmbench.benchmark.rundir import RunDir
from mmbench.benchmark.runtime import (
    available_cores,
    pick_device,
    plan_jobs,
    resolve_jobs,
    visible_gpus,
)
from mmbench.benchmark.status import recording_failure
from mmbench.config import Config, apply_overlay, apply_overrides, load_overlay, load_preset
from mmbench.datasets.prepare import prepare_data
from mmbench.datasets.splits import check_split_file
from mmbench.errors import ConfigError, RunError
from mmbench.methods import method_options, resolve_methods


def resolve_config(
    preset: str | Path,
    overrides: Sequence[str] | None,
    methods: Sequence[str],
    overlay: str | Path | None = None,
) -> Config:
    """The validated configuration of an invocation: the preset, then a tuning overlay's
    ``methods.<name>.train`` choices (:func:`~mmbench.config.load_overlay`), then the
    overrides; every method section checked against that method's declared options (and its
    ``train`` overrides), before any data work.

    Raises:
        ConfigError: a bad key or value anywhere (the message names it and what is allowed).
    """
    data = load_preset(preset)
    if overlay is not None:
        data = apply_overlay(data, load_overlay(overlay))
    config = Config.from_dict(apply_overrides(data, overrides))
    check_split_file(config.split.file)
    for name in methods:
        method_options(name, config.method_options(name))
        config.for_method(name)
    return config


def run_benchmark(
    methods: str | Sequence[str],
    dataset: str = "synthetic",
    data_root: str | Path | None = None,
    preset: str | Path = "quick",
    seeds: Sequence[int] | None = None,
    out: str | Path = "results",
    overrides: Sequence[str] | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    jobs: int | str | None = None,
    overlay: str | Path | None = None,
    executor: str | None = None,
    wait: bool = True,
) -> list[RunSummary]:
    """Train and evaluate each method (× seed) in its own run folder; see the module docstring.

    ``methods``: names and groups (:data:`mmbench.methods.METHOD_GROUPS`). ``overlay``: a
    tuning overlay (``mmbench tune``) whose per-method choices apply. ``jobs``: runs
    trained at once in separate processes (default: the config's ``jobs``, see
    :func:`~mmbench.benchmark.runtime.plan_jobs`: ``auto`` is one run per visible GPU, each
    process pinned to its GPU, or one per core on a CPU); with more than one, each process gets
    ``train.threads`` torch threads, by default the cores divided among the jobs, a share of the
    data workers, and progress bars give way to one line per finished run. Summaries come back
    in the order of ``methods`` × ``seeds`` either way.

    ``executor``: ``local`` (this machine) or ``slurm`` (one job per run through submitit,
    :mod:`mmbench.benchmark.slurm`; default: ``executor.name``). With Slurm and ``wait=False``
    the jobs are submitted and their ids logged; the runs finished before come back.

    Raises:
        MMBenchError: unknown method or dataset, invalid configuration, missing data root, a
            run folder holding another configuration.
    """
    from mmbench.datasets import get_dataset

    names = resolve_methods(methods)
    get_dataset(dataset)
    config = resolve_config(preset, overrides, names, overlay)
    seeds = [int(s) for s in (seeds if seeds is not None else config.seeds)]
    units = [(name, seed) for seed in seeds for name in names]
    device = pick_device(config.train.device)
    plan = plan_jobs(
        jobs if jobs is not None else config.jobs,
        len(units),
        device.type,
        visible_gpus() if device.type == "cuda" else [],
        available_cores(),
        config.train.num_workers,
        config.train.threads,
    )
    n_jobs, threads = plan.jobs, plan.threads
    if threads:
        torch.set_num_threads(int(threads))
    out = Path(out)
    # Reuse a split already written by an earlier (interrupted) invocation of the same runs.
    existing = [RunDir.for_run(out, dataset, m, s, config.split.fold).split_path for m, s in units]
    split_path = next((p for p in existing if p.exists()), None)
    data = prepare_data(
        dataset,
        config,
        data_root,
        split_path=split_path,
        log=log,
        progress=progress,
        cache_dir=out / ".cache" / dataset,
        # Parallel runs preprocess in their own processes; this one only splits.
        # (mmap arrays are written once here, in parallel, and shared by the runs).
        cache="none"
        if (n_jobs > 1 or (executor or config.executor.name) == "slurm")
        and config.dataset.cache != "mmap"
        else None,
    )
    if overlay is not None:
        _check_overlay_split(Path(overlay), data.split, log)
    executor = executor or config.executor.name
    if executor == "slurm":
        from mmbench.benchmark.slurm import submit_runs

        return submit_runs(units, data, config, out, wait=wait, log=log)
    if executor != "local":
        raise ConfigError(f"--executor takes local or slurm, got {executor!r}")
    if n_jobs == 1:
        return [run_recorded(m, data, config, s, out, progress, log) for m, s in units]
    pinned = [d for d in plan.devices if d is not None]
    log(
        f"running {len(units)} runs, {n_jobs} at a time, {threads} torch thread(s) each"
        + (f", {plan.workers} data worker(s) each" if plan.workers else "")
        + (f", one GPU each (CUDA_VISIBLE_DEVICES {', '.join(pinned)})" if pinned else "")
    )
    task = {
        "dataset": dataset,
        "data_root": str(data.root),
        "split": data.split,
        "config": config,
        "out": str(out),
        "threads": int(threads or 1),
        "workers": plan.workers,
    }
    return run_parallel(units, task, n_jobs, log, devices=plan.devices)


def run_recorded(
    method: str,
    data: Any,
    config: Config,
    seed: int,
    out: Path,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> RunSummary:
    """:func:`run_one`, recording in ``run.json`` a failure or an interruption
    (:mod:`mmbench.benchmark.status`)."""
    run = RunDir.for_run(out, data.dataset, method, seed, config.split.fold)
    with recording_failure(run):
        return run_one(method, data, config, seed, out, progress, log)


def _check_overlay_split(overlay: Path, split: Any, log: Callable[[str], None]) -> None:
    """Warn when an overlay was tuned on another split (its val cases were other cases)."""
    import yaml

    from mmbench.datasets.splits import split_sha256

    tuned = ((yaml.safe_load(overlay.read_text()) or {}).get("split") or {}).get("sha256")
    if tuned and tuned != split_sha256(split):
        log(
            f"warning: {overlay} was tuned on another split (sha256 {tuned[:12]}…, this run "
            f"{split_sha256(split)[:12]}…): its choices were not selected on this run's val cases"
        )


def run_parallel(
    units: Sequence[tuple[str, int]],
    task: Mapping[str, Any],
    n_jobs: int,
    log: Callable[[str], None] = print,
    devices: Sequence[str | None] | None = None,
) -> list[RunSummary]:
    """Run ``(method, seed)`` units in at most ``n_jobs`` spawned processes at a time.

    ``devices[i]`` (when not ``None``) is the ``CUDA_VISIBLE_DEVICES`` of every process started
    in slot ``i``: one run per GPU, each seeing only its own (as ``cuda:0``).

    Each process runs :func:`~mmbench.benchmark.run.run_one` (no progress bars) and sends back
    its summary or its error. The first error stops the other processes and is raised here with
    the worker's traceback as its cause; a process that dies without reporting (killed, out of
    memory) raises :class:`~mmbench.errors.RunError`. Runs write checkpoints and results
    atomically, so stopping them loses at most the steps since their last checkpoint and a rerun
    resumes them.
    """
    ctx = multiprocessing.get_context("spawn")
    queue = list(units)
    running: dict[tuple[str, int], tuple[Any, Any]] = {}
    results: dict[tuple[str, int], RunSummary] = {}
    slots = list(devices) if devices is not None else [None] * n_jobs
    free = list(range(n_jobs))
    slot_of: dict[tuple[str, int], int] = {}
    try:
        while queue or running:
            while queue and len(running) < n_jobs:
                unit = queue.pop(0)
                slot = free.pop(0)
                slot_of[unit] = slot
                log(
                    f"starting {unit[0]} seed {unit[1]} "
                    f"({len(units) - len(queue)}/{len(units)}; preparing data in its process)"
                )
                receive, send = ctx.Pipe(duplex=False)
                process = ctx.Process(
                    target=_worker, args=(unit[0], unit[1], task, send), name=f"mmbench-{unit[0]}"
                )
                with _visible_devices(slots[slot] if slot < len(slots) else None):
                    process.start()  # a spawned process takes the environment at its start
                send.close()
                running[unit] = (process, receive)
            for unit, (process, receive) in list(running.items()):
                alive = process.is_alive()
                if not receive.poll():
                    if alive:
                        continue
                    message = None
                else:
                    try:
                        message = receive.recv()
                    except EOFError:  # the process closed its end without reporting
                        message = None
                process.join()
                del running[unit]
                free.append(slot_of.pop(unit))
                if message is None:
                    raise RunError(
                        f"{unit[0]} seed {unit[1]}: its process stopped with exit code "
                        f"{process.exitcode} before finishing; rerun the command to resume"
                    )
                status, payload, trace = message
                if status == "error":
                    raise payload from RuntimeError(f"in the run of {unit[0]}:\n{trace}")
                results[unit] = payload
                log(
                    f"finished {unit[0]} seed {unit[1]} ({len(results)}/{len(units)}): "
                    f"train {payload.train_seconds:.0f} s, evaluate {payload.eval_seconds:.0f} s"
                )
            time.sleep(0.1)
    finally:
        for process, _ in running.values():
            process.terminate()
            process.join()
    return [results[u] for u in units]


@contextlib.contextmanager
def _visible_devices(value: str | None) -> Iterator[None]:
    """``CUDA_VISIBLE_DEVICES=value`` in this process for the body (nothing when ``None``)."""
    if value is None:
        yield
        return
    old = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = old


def run_task(method: str, seed: int, task: Mapping[str, Any]) -> RunSummary:
    """One run in a process of its own (a :func:`run_parallel` worker or a Slurm job):
    ``task`` holds the invocation's dataset, data root, split, configuration, results folder,
    torch threads and data workers."""
    torch.set_num_threads(int(task["threads"]))
    config = copy.deepcopy(task["config"])
    if "workers" in task:
        config.train.num_workers = int(task["workers"])
    data = prepare_data(
        task["dataset"],
        config,
        task["data_root"],
        split=task["split"],
        log=lambda _: None,
        progress=False,
        cache_dir=Path(task["out"]) / ".cache" / task["dataset"],
    )
    return run_recorded(
        method,
        data,
        config,
        seed,
        Path(task["out"]),
        progress=False,
        log=lambda message: print(message, flush=True),
    )


def _worker(method: str, seed: int, task: Mapping[str, Any], send: Any) -> None:
    """Body of a :func:`run_parallel` process: one run, then ``(status, payload, traceback)``."""
    try:
        send.send(("ok", run_task(method, seed, task), ""))
    except BaseException as exc:  # reported to the parent, which decides what to raise
        trace = traceback.format_exc()
        try:
            send.send(("error", exc, trace))
        except Exception:  # an exception that cannot be pickled
            send.send(("error", RuntimeError(f"{type(exc).__name__}: {exc}"), trace))
    finally:
        send.close()


__all__ = [
    "RunSummary",
    "available_cores",
    "resolve_config",
    "resolve_jobs",
    "run_benchmark",
    "run_one",
    "run_parallel",
    "run_recorded",
    "run_task",
]
