"""One run: a method × seed on prepared data, in its own folder: prepare → train → evaluate.

Rerunning resumes: training continues from the last checkpoint, evaluation from the last scored
case, and a complete run is only read back.

``run.json`` records, beside the status: ``train_seconds`` and ``eval_seconds`` (summed over
every invocation of an interrupted and resumed run: training time travels in the checkpoints,
evaluation time is written as each test case is stored), ``val_score`` (the best val-split mean
Dice, the score that selected the checkpoint), ``split_name`` and ``split_sha256`` (which split, by
content), and ``costs`` (:mod:`mmbench.benchmark.costs`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from mmbench.benchmark import costs, schema
from mmbench.benchmark.evaluator import EvalSettings, Evaluator
from mmbench.benchmark.results import ResultsStore
from mmbench.benchmark.rundir import (
    STATUS_COMPLETE,
    STATUS_EVALUATING,
    STATUS_TRAINING,
    RunDir,
)
from mmbench.benchmark.runtime import environment_info, keep_freed_memory, pick_device
from mmbench.benchmark.schedule import resolve_schedule, with_schedule
from mmbench.benchmark.status import process_info
from mmbench.benchmark.trainer import Trainer
from mmbench.benchmark.validation import make_validator
from mmbench.config import Config
from mmbench.datasets.loader import make_training_stream
from mmbench.datasets.prepare import PreparedData
from mmbench.datasets.sampling import make_batch_source, make_fit_batches
from mmbench.datasets.splits import split_name, split_sha256
from mmbench.methods import create as create_method
from mmbench.methods import method_info
from mmbench.methods.base import Strategy
from mmbench.subsets import ALL_SUBSETS


@dataclass
class RunSummary:
    """What one finished run reports back."""

    method: str
    family: str
    seed: int
    fold: int
    run_dir: Path
    params: int
    train_seconds: float
    eval_seconds: float
    metrics: pd.DataFrame = field(repr=False)


def summarize(run: RunDir, info: dict[str, Any]) -> RunSummary:
    return RunSummary(
        str(info.get("method")),
        str(info.get("family")),
        int(info.get("seed", 0)),
        int(info.get("fold", 0)),
        run.path,
        int(info.get("params") or 0),
        float(info.get("train_seconds", 0.0)),
        float(info.get("eval_seconds", 0.0)),
        run.results().frame(),
    )


def open_run(
    method: str, data: PreparedData, config: Config, seed: int, out: Path
) -> tuple[RunDir, Config]:
    """The run folder of ``method`` × ``seed``, with its configuration and split written or
    checked, its environment and left-out cases recorded."""
    config = config.for_method(method)
    run = RunDir.for_run(out, data.dataset, method, seed, config.split.fold)
    run.check_config(config)
    run.check_split(data.split)
    run.write_json(schema.INVALID_FILE, [p.as_dict() for p in data.problems])
    run.write_json(schema.ENVIRONMENT_FILE, environment_info(pick_device(config.train.device)))
    return run, config


def build_strategy(method: str, config: Config, seed: int) -> Strategy:
    """The strategy of a run, initialised from ``seed``."""
    torch.manual_seed(seed)
    return create_method(method, preset=config)


def run_info(method: str, data: PreparedData, config: Config, seed: int, s: Strategy) -> dict:
    info = method_info(method)
    return {
        "dataset": data.dataset,
        "method": method,
        "family": info.family,
        "paper": info.paper,
        "params": s.parameter_count(),
        "params_training_only": s.training_only_parameter_count(),
        "seed": seed,
        "fold": config.split.fold,
        "preset": config.preset,
        "data_root": str(data.root),
        "split_name": split_name(
            config.split.file, config.split.seed, config.split.k_folds, config.split.fold
        ),
        "split_sha256": split_sha256(data.split),
    }


class _TimedStore(ResultsStore):
    """A results store that calls ``after_rows()`` once each batch of rows is stored."""

    def __init__(self, path: Path, after_rows: Callable[[], None]) -> None:
        super().__init__(path)
        self._after_rows = after_rows

    def add_rows(self, rows: Any) -> None:
        super().add_rows(rows)
        self._after_rows()


def evaluate_run(
    run: RunDir,
    strategy: Strategy,
    data: PreparedData,
    config: Config,
    seed: int,
    progress: bool = True,
    on_case: Callable[[float], None] | None = None,
) -> float:
    """Score every test case × the 15 subsets not already in the run's results; seconds.

    ``on_case(seconds so far)`` is called each time a case's rows are stored, so that an
    interrupted evaluation leaves the time of its finished cases on record.
    """
    keep_freed_memory()
    t0 = time.perf_counter()
    store = run.results()
    if on_case is not None:
        store = _TimedStore(run.metrics_path, lambda: on_case(time.perf_counter() - t0))
    evaluator = Evaluator(
        strategy,
        EvalSettings.from_config(config),
        store,
        key={
            "dataset": data.dataset,
            "method": strategy.name,
            "seed": seed,
            "fold": config.split.fold,
        },
        region_labels=data.spec.regions,
        predictions_dir=run.predictions_dir,
        progress=progress,
    )
    evaluator.run(list(data.split.test), data.test_item)
    return time.perf_counter() - t0


def measure_costs(
    strategy: Strategy,
    data: PreparedData,
    config: Config,
    step_seconds: list[float],
    previous: dict[str, Any],
    device: torch.device,
) -> dict[str, Any]:
    """The run's ``costs`` (:mod:`mmbench.benchmark.costs`), after evaluation. Step time and
    peak memory of an earlier invocation of the same run are kept where this one did not train
    or used less."""
    first_test = data.test_item(data.split.test[0]) if len(data.split.test) else None
    per_step = costs.median_step_seconds(step_seconds)
    peak = costs.peak_memory_mb(device)
    return {
        "params_inference": strategy.parameter_count(),
        "params_training": strategy.training_only_parameter_count(),
        "gflops_forward": costs.forward_gflops(strategy, config.model.patch_size),
        "train_s_per_step": per_step if per_step is not None else previous.get("train_s_per_step"),
        "infer_s_per_case": (
            costs.inference_seconds(strategy, first_test, config) if first_test else None
        ),
        "peak_memory_mb": max(peak, float(previous.get("peak_memory_mb") or 0.0)),
    }


def is_complete(run: RunDir, data: PreparedData) -> bool:
    """Whether the folder's run is complete with every test unit scored."""
    expected = {(c, s.name) for c in data.split.test for s in ALL_SUBSETS}
    return run.status == STATUS_COMPLETE and expected <= run.results().finished_units()


def run_one(
    method: str,
    data: PreparedData,
    config: Config,
    seed: int,
    out: Path,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> RunSummary:
    """Train (or resume) and evaluate one method with one seed, in its own run folder.

    ``config`` is the invocation's; the run trains with :meth:`Config.for_method` of it and
    writes that to its folder.
    """
    keep_freed_memory()
    run, config = open_run(method, data, config, seed, Path(out))
    previous = run.read_info()
    if is_complete(run, data):
        log(f"{method} seed {seed}: already complete in {run.path}")
        return summarize(run, previous)

    schedule = resolve_schedule(config.train, len(data.train))
    config = with_schedule(config, schedule)
    device = pick_device(config.train.device)
    costs.reset_peak_memory(device)
    strategy = build_strategy(method, config, seed)
    info = {
        **run_info(method, data, config, seed, strategy),
        "schedule": schedule.as_dict(),
        **process_info(),
    }
    timings = {
        "train_seconds": float(previous.get("train_seconds", 0.0)),
        "eval_seconds": float(previous.get("eval_seconds", 0.0)),
    }
    status = previous.get("status")
    if status not in (STATUS_EVALUATING, STATUS_COMPLETE):
        status = STATUS_TRAINING
    run.write_info({**info, "status": status, **timings})
    trainer = Trainer(
        strategy,
        config.train,
        run.path,
        batches=make_batch_source(
            data.train, config.model.patch_size, config.train.intensity_jitter
        ),
        fit_batches=make_fit_batches(
            data.train, config.model.patch_size, seed, config.train.batch_size
        ),
        validator=make_validator(data.val, config),
        seed=seed,
        device=device,
        progress=progress,
        log=log,
        batch_stream=make_training_stream(
            data.train,
            config.model.patch_size,
            config.train.intensity_jitter,
            config.train.batch_size,
            config.train.num_workers,
            pin_memory=device.type == "cuda",
        ),
    )
    if status == STATUS_TRAINING:
        trainer.fit()
    else:
        trainer.resume()
    # The checkpoint carries the fit time of every invocation (run.json's may predate it).
    timings["train_seconds"] = max(trainer.state.train_seconds, timings["train_seconds"])
    best = trainer.state.best_score
    info["val_score"] = float(best) if math.isfinite(best) else None
    trainer.load_best()
    run.write_info({**info, "status": STATUS_EVALUATING, **timings})
    eval_before = timings["eval_seconds"]

    def record_eval_time(seconds: float) -> None:
        timings["eval_seconds"] = eval_before + seconds
        run.write_info({**info, "status": STATUS_EVALUATING, **timings})

    timings["eval_seconds"] = eval_before + evaluate_run(
        run, strategy, data, config, seed, progress, on_case=record_eval_time
    )
    info["costs"] = measure_costs(
        strategy, data, config, trainer.step_seconds, previous.get("costs") or {}, device
    )
    final = {**info, "status": STATUS_COMPLETE, **timings}
    run.write_info(final)
    return summarize(run, final)


__all__ = ["RunSummary", "build_strategy", "evaluate_run", "open_run", "run_one", "summarize"]
