"""The runner: dataset → split → transforms → training loop → evaluator, one run folder per method.

``run_benchmark`` is what ``mmbench run`` calls; everything it does can be done from Python::

    from mmbench.benchmark.runner import run_benchmark
    summaries = run_benchmark(["dropout-unet"], dataset="synthetic", preset="quick")

A run folder (``<out>/<dataset>/<method>/seed<S>-fold<F>/``, see :mod:`mmbench.benchmark.schema`)
holds everything needed to resume: rerunning the same command continues training from the last
checkpoint and evaluation from the last finished case, and skips finished runs.
"""

from __future__ import annotations

import multiprocessing
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

from mmbench.atomic import atomic_write_json, atomic_write_text
from mmbench.benchmark import schema
from mmbench.benchmark.config import (
    ConfigError,
    apply_overrides,
    config_for_method,
    load_config,
    method_config,
)
from mmbench.benchmark.evaluator import EvalSettings, Evaluator, predict_volume
from mmbench.benchmark.results import ResultsStore
from mmbench.benchmark.schema import REGIONS
from mmbench.benchmark.trainer import Trainer, collate, pick_device
from mmbench.methods import create as create_method
from mmbench.methods import method_info, resolve_methods
from mmbench.metrics import dice
from mmbench.subsets import ALL_SUBSETS, FULL, Subset, as_subset

TARGET_KEYS = ("image", "regions", "compartments")


class RunError(ValueError):
    """A run cannot start or continue (e.g. its folder holds a different configuration)."""


@dataclass
class DataBundle:
    """Everything the runs of one invocation share: the dataset, its split and cached items."""

    dataset: str
    root: Path
    spec: Any
    split: Any
    problems: list[Any]
    train: Any  # MONAI dataset of preprocessed items
    val: Any
    test: Any
    patch_size: tuple[int, int, int]

    def test_item(self, case_id: str) -> Mapping[str, Any]:
        return self.test[self.split.test.index(case_id)]


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


def _data_root(
    dataset: str,
    data_root: str | Path | None,
    config: Mapping[str, Any],
    log: Callable[[str], None],
    progress: bool = True,
) -> Path:
    from mmbench.datasets import resolve_root
    from mmbench.datasets.synthetic_cache import default_cache_root, ensure_synthetic

    if dataset == "synthetic" and data_root is None:
        syn = config["dataset"]["synthetic"]
        t0 = time.perf_counter()
        root = ensure_synthetic(
            default_cache_root(),
            int(syn["cases"]),
            tuple(syn["shape"]),
            str(syn["mode"]),
            int(syn["seed"]),
            progress=progress,
        )
        log(f"synthetic phantoms ready in {root} ({time.perf_counter() - t0:.1f} s)")
        return root
    return resolve_root(dataset, data_root)


def prepare_data(
    dataset: str,
    config: Mapping[str, Any],
    data_root: str | Path | None = None,
    split_path: Path | None = None,
    log: Callable[[str], None] = print,
    progress: bool = True,
    cache_dir: Path | None = None,
    split: Any = None,
    cache: str | None = None,
) -> DataBundle:
    """Discover, validate, split and (lazily) preprocess a dataset for a set of runs.

    ``split``: a :class:`mmbench.datasets.Split` to use as is; otherwise ``split_path``, an
    existing ``split.json`` to reuse (resume); otherwise ``split.file`` from the config,
    otherwise a seeded split from ``split.*``. ``cache`` overrides ``dataset.cache``.
    """
    from mmbench.datasets import (
        Split,
        build_preprocess,
        load_dataset,
        load_split,
        make_cached_dataset,
        make_split,
    )

    root = _data_root(dataset, data_root, config, log, progress)
    ds = config["dataset"]
    index = load_dataset(dataset, root, strict=bool(ds.get("strict", False)))
    for problem in index.problems:
        log(f"warning: left out {problem.case}: {problem.file}: {problem.problem}")
    sp = config["split"]
    if split is not None:
        split.check(index.case_ids)
    elif split_path is not None and Path(split_path).exists():
        split = Split.from_json(split_path)
        split.check(index.case_ids)
    elif sp.get("file"):
        split = load_split(sp["file"], index.cases)
    else:
        split = make_split(
            index.cases,
            index.spec,
            fractions=tuple(sp["fractions"]),
            seed=int(sp["seed"]),
            k_folds=sp.get("k_folds"),
            fold=int(sp.get("fold") or 0),
        )
    by_id = {c.id: c for c in index.cases}

    def items(ids: Sequence[str]) -> list[dict[str, Any]]:
        out = []
        for cid in ids:
            case = by_id[cid]
            out.append(
                {
                    "id": cid,
                    "image": [str(case.images[m]) for m in ("T1", "T1ce", "T2", "FLAIR")],
                    "label": str(case.label),
                    "label_path": str(case.label),
                }
            )
        return out

    pre = build_preprocess(index.spec, normalization=str(ds.get("normalization", "zscore")))
    cache = cache or str(ds.get("cache", "memory"))
    # The disk cache goes beside the results: a downloaded data root may be read-only.
    if cache == "disk" and cache_dir is None:
        cache_dir = Path("results") / ".cache" / dataset
    workers = int(config["train"].get("num_workers") or 0)

    def cached(ids: Sequence[str]) -> Any:
        return make_cached_dataset(
            items(ids), pre, cache=cache, cache_dir=cache_dir, num_workers=workers
        )

    t0 = time.perf_counter()
    bundle = DataBundle(
        dataset=dataset,
        root=root,
        spec=index.spec,
        split=split,
        problems=list(index.problems),
        train=cached(split.train),
        val=cached(split.val),
        test=cached(split.test),
        patch_size=tuple(int(v) for v in config["model"]["patch_size"]),  # type: ignore[arg-type]
    )
    log(
        f"{dataset}: {len(index.cases)} valid cases ({len(split.train)} train, "
        f"{len(split.val)} val, {len(split.test)} test), {len(index.problems)} left out; "
        f"preprocessed in {time.perf_counter() - t0:.1f} s"
    )
    return bundle


def make_batch_source(
    bundle: DataBundle, patch_size: Sequence[int], intensity_jitter: bool = False
) -> Callable[[np.random.Generator, int], Any]:
    """Training batches from the cached training items, fully determined by ``rng``."""
    from mmbench.datasets import build_train_augment

    augment = build_train_augment(patch_size, intensity_jitter=intensity_jitter, keys=TARGET_KEYS)
    n = len(bundle.train)
    if n == 0:
        raise RunError(f"{bundle.dataset}: the training split is empty")

    def draw(rng: np.random.Generator, batch_size: int) -> dict[str, torch.Tensor]:
        samples = []
        for idx in rng.choice(n, size=batch_size, replace=n < batch_size):
            augment.set_random_state(seed=int(rng.integers(2**31 - 1)))
            item = bundle.train[int(idx)]
            samples.append(augment({k: item[k] for k in TARGET_KEYS}))
        return collate(samples, TARGET_KEYS)

    return draw


def make_fit_batches(
    bundle: DataBundle, patch_size: Sequence[int], seed: int, batch_size: int
) -> Callable[[], Iterator[dict[str, Any]]]:
    """Full-modality training batches for non-gradient fitting, one pass over the training cases."""
    source = make_batch_source(bundle, patch_size)

    def batches() -> Iterator[dict[str, Any]]:
        n = len(bundle.train)
        for start in range(0, n, batch_size):
            rng = np.random.default_rng([seed, start, 0xF17])
            raw = source(rng, min(batch_size, n - start))
            yield {**raw, "image_full": raw["image"], "available": FULL.available, "subset": FULL}

    return batches


def make_validator(bundle: DataBundle, config: Mapping[str, Any]) -> Callable[[Any], float] | None:
    """Mean Dice over val cases × val subsets × (WT, TC, ET) on the preprocessed grid."""
    if len(bundle.val) == 0:
        return None
    which = config["train"].get("val_subsets", "all")
    if which == "all":
        subsets: list[Subset] = list(ALL_SUBSETS)
    elif which == "full":
        subsets = [FULL]
    else:
        subsets = [as_subset(s) for s in which]
    settings = EvalSettings.from_config(config)

    def validate(strategy: Any) -> float:
        device = next(strategy.parameters()).device
        scores = []
        with torch.inference_mode():
            for i in range(len(bundle.val)):
                item = bundle.val[i]
                image = torch.as_tensor(np.asarray(item["image"]), dtype=torch.float32)[None]
                ref = np.asarray(item["regions"]).astype(bool)
                for subset in subsets:
                    prob = predict_volume(
                        strategy,
                        image.to(device),
                        subset,
                        settings.patch_size,
                        settings.sw_batch_size,
                        settings.sw_overlap,
                    )
                    pred = (prob[0] > settings.threshold).cpu().numpy()
                    scores += [dice(pred[r], ref[r]) for r in range(len(REGIONS))]
        return float(np.mean(scores))

    return validate


def environment_info() -> dict[str, Any]:
    """Package versions, device and git commit, for ``environment.json``."""
    versions = {}
    for pkg in (
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
    ):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    commit = None
    try:
        here = Path(__file__).resolve().parent
        commit = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        pass
    device = pick_device()
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        "packages": versions,
        "git_commit": commit,
        "command": " ".join(sys.argv),
    }


def run_dir_for(out: Path, dataset: str, method: str, seed: int, fold: int) -> Path:
    return Path(out) / dataset / method / f"seed{seed}-fold{fold}"


def _comparable(config: Mapping[str, Any]) -> dict[str, Any]:
    # Keys that change results; output-only settings (progress, save_predictions) may differ.
    c = yaml.safe_load(yaml.safe_dump(dict(config)))
    c.get("eval", {}).pop("save_predictions", None)
    c.get("eval", {}).pop("n_jobs", None)
    c.pop("seeds", None)
    # How the work is spread over processes and threads does not change what is computed.
    c.pop("jobs", None)
    c.get("train", {}).pop("threads", None)
    c.get("eval", {}).pop("sw_batch_size", None)
    return c


def _check_config(run_dir: Path, config: Mapping[str, Any]) -> None:
    path = run_dir / schema.CONFIG_FILE
    if not path.exists():
        atomic_write_text(path, yaml.safe_dump(dict(config), sort_keys=False))
        return
    old = yaml.safe_load(path.read_text())
    if _comparable(old) != _comparable(config):
        from mmbench.benchmark.config import flatten_keys

        a, b = _comparable(old), _comparable(config)
        diff = [
            k
            for k in sorted(set(flatten_keys(a)) | set(flatten_keys(b)))
            if _get(a, k) != _get(b, k)
        ]
        raise RunError(
            f"{run_dir} holds a run with a different configuration (differs in: "
            f"{', '.join(diff)}); choose another --out or delete that folder to start afresh"
        )


def _get(config: Mapping[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def run_one(
    method: str,
    bundle: DataBundle,
    config: Mapping[str, Any],
    seed: int,
    out: Path,
    preset: str,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> RunSummary:
    """Train (or resume) and evaluate one method with one seed, in its own run folder.

    ``config`` is the invocation's; the run trains with :func:`config_for_method` of it and
    writes that to its folder.
    """
    config = config_for_method(dict(config), method)
    fold = int(config["split"].get("fold") or 0)
    run_dir = run_dir_for(out, bundle.dataset, method, seed, fold)
    run_dir.mkdir(parents=True, exist_ok=True)
    _check_config(run_dir, config)
    split_path = run_dir / schema.SPLIT_FILE
    if split_path.exists():
        from mmbench.datasets import Split

        if Split.from_json(split_path).as_dict() != bundle.split.as_dict():
            raise RunError(
                f"{split_path} differs from this invocation's split; "
                "use the same data and split settings, or another --out"
            )
    else:
        bundle.split.to_json(split_path)
    atomic_write_json(run_dir / schema.INVALID_FILE, [p.as_dict() for p in bundle.problems])
    atomic_write_json(run_dir / schema.ENVIRONMENT_FILE, environment_info())

    info = method_info(method)
    torch.manual_seed(seed)
    strategy = create_method(method, preset=dict(config))
    run_info = {
        "dataset": bundle.dataset,
        "method": method,
        "family": info.family,
        "paper": info.paper,
        "params": strategy.parameter_count(),
        "seed": seed,
        "fold": fold,
        "preset": preset,
        "status": "training",
        "data_root": str(bundle.root),
    }
    info_path = run_dir / schema.RUN_INFO_FILE
    previous = _read_json(info_path)
    store = ResultsStore(run_dir / schema.METRICS_FILE)
    expected = {(c, s.name) for c in bundle.split.test for s in ALL_SUBSETS}
    if previous.get("status") == "complete" and expected <= store.finished_units():
        log(f"{method} seed {seed}: already complete in {run_dir}")
        return _summary(method, info.family, seed, fold, run_dir, previous, store)

    timings = {
        "train_seconds": float(previous.get("train_seconds", 0.0)),
        "eval_seconds": float(previous.get("eval_seconds", 0.0)),
    }
    atomic_write_json(info_path, {**run_info, **timings})
    device = pick_device(config["train"].get("device"))
    trainer = Trainer(
        strategy,
        config["train"],
        run_dir,
        batches=make_batch_source(
            bundle, bundle.patch_size, bool(config["train"].get("intensity_jitter", False))
        ),
        fit_batches=make_fit_batches(
            bundle, bundle.patch_size, seed, int(config["train"]["batch_size"])
        ),
        validator=make_validator(bundle, config),
        seed=seed,
        device=device,
        progress=progress,
        log=log,
    )
    if previous.get("status") not in ("evaluating", "complete"):
        t0 = time.perf_counter()
        trainer.fit()
        timings["train_seconds"] += time.perf_counter() - t0
    else:
        trainer.resume()
    trainer.load_best()
    run_info["status"] = "evaluating"
    atomic_write_json(info_path, {**run_info, **timings})

    t0 = time.perf_counter()
    settings = EvalSettings.from_config(config)
    evaluator = Evaluator(
        strategy,
        settings,
        store,
        key={"dataset": bundle.dataset, "method": method, "seed": seed, "fold": fold},
        region_labels=bundle.spec.regions,
        predictions_dir=run_dir / schema.PREDICTIONS_DIR,
        progress=progress,
    )
    evaluator.run(list(bundle.split.test), bundle.test_item)
    timings["eval_seconds"] += time.perf_counter() - t0
    run_info["status"] = "complete"
    final = {**run_info, **timings}
    atomic_write_json(info_path, final)
    return _summary(method, info.family, seed, fold, run_dir, final, store)


def _read_json(path: Path) -> dict[str, Any]:
    import json

    return json.loads(path.read_text()) if path.exists() else {}


def _summary(
    method: str,
    family: str,
    seed: int,
    fold: int,
    run_dir: Path,
    info: Mapping[str, Any],
    store: ResultsStore,
) -> RunSummary:
    return RunSummary(
        method,
        family,
        seed,
        fold,
        run_dir,
        int(info.get("params", 0)),
        float(info.get("train_seconds", 0.0)),
        float(info.get("eval_seconds", 0.0)),
        store.frame(),
    )


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


def available_cores() -> int:
    """CPU cores this process may use (the affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def run_benchmark(
    methods: str | Sequence[str],
    dataset: str = "synthetic",
    data_root: str | Path | None = None,
    preset: str = "quick",
    seeds: Sequence[int] | None = None,
    out: str | Path = "results",
    overrides: Sequence[str] | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    jobs: int | str | None = None,
) -> list[RunSummary]:
    """Train and evaluate each method (× seed) in its own run folder; see the module docstring.

    ``methods``: names and groups (:data:`mmbench.methods.METHOD_GROUPS`). ``jobs``: runs
    trained at once in separate processes (default: the config's ``jobs``, see
    :func:`resolve_jobs`); with more than one, each process gets ``train.threads`` torch threads,
    by default the cores divided among the jobs, and progress bars give way to one line per
    finished run. Summaries come back in the order of ``methods`` × ``seeds`` either way.

    Raises:
        ValueError: unknown method or dataset, invalid override (:class:`ConfigError`), missing
            data root (:class:`mmbench.datasets.DataRootError`).
    """
    from mmbench.datasets import get_dataset

    names = resolve_methods(methods)
    get_dataset(dataset)
    config = apply_overrides(load_config(preset), list(overrides or []))
    for name in names:  # a bad per-method train key fails before any work starts
        config_for_method(config, name)
    if seeds is None:
        seeds = [int(s) for s in config.get("seeds") or [0]]
    units = [(name, int(seed)) for seed in seeds for name in names]
    device = pick_device(config["train"].get("device"))
    n_jobs = min(
        resolve_jobs(jobs if jobs is not None else config.get("jobs"), len(units), device),
        len(units),
    )
    threads = config["train"].get("threads")
    if n_jobs > 1 and not threads:
        threads = max(1, available_cores() // n_jobs)
    if threads:
        torch.set_num_threads(int(threads))
    fold = int(config["split"].get("fold") or 0)
    out = Path(out)
    # Reuse a split already written by an earlier (interrupted) invocation of the same runs.
    existing = [run_dir_for(out, dataset, m, s, fold) / schema.SPLIT_FILE for m, s in units]
    split_path = next((p for p in existing if p.exists()), None)
    bundle = prepare_data(
        dataset,
        config,
        data_root,
        split_path=split_path,
        log=log,
        progress=progress,
        cache_dir=out / ".cache" / dataset,
        # Parallel runs preprocess in their own processes; this one only splits.
        cache="none" if n_jobs > 1 else None,
    )
    if n_jobs == 1:
        return [run_one(m, bundle, config, s, out, preset, progress, log) for m, s in units]
    log(f"running {len(units)} runs, {n_jobs} at a time, {threads} torch thread(s) each")
    task = {
        "dataset": dataset,
        "data_root": str(bundle.root),
        "split": bundle.split,
        "config": config,
        "out": str(out),
        "preset": preset,
        "threads": int(threads),
    }
    return run_parallel(units, task, n_jobs, log)


def run_parallel(
    units: Sequence[tuple[str, int]],
    task: Mapping[str, Any],
    n_jobs: int,
    log: Callable[[str], None] = print,
) -> list[RunSummary]:
    """Run ``(method, seed)`` units in at most ``n_jobs`` spawned processes at a time.

    Each process runs :func:`run_one` (no progress bars) and sends back its summary or its error.
    The first error stops the other processes and is raised here with the worker's traceback as
    its cause; a process that dies without reporting (killed, out of memory) raises
    :class:`RunError`. Runs write checkpoints and results atomically, so stopping them loses at
    most the steps since their last checkpoint and a rerun resumes them.
    """
    ctx = multiprocessing.get_context("spawn")
    queue = list(units)
    running: dict[tuple[str, int], tuple[Any, Any]] = {}
    results: dict[tuple[str, int], RunSummary] = {}
    try:
        while queue or running:
            while queue and len(running) < n_jobs:
                unit = queue.pop(0)
                receive, send = ctx.Pipe(duplex=False)
                process = ctx.Process(
                    target=_worker, args=(unit[0], unit[1], task, send), name=f"mmbench-{unit[0]}"
                )
                process.start()
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


def _worker(method: str, seed: int, task: Mapping[str, Any], send: Any) -> None:
    """Body of a :func:`run_parallel` process: one run, then ``(status, payload, traceback)``."""
    try:
        torch.set_num_threads(int(task["threads"]))
        config = task["config"]
        bundle = prepare_data(
            task["dataset"],
            config,
            task["data_root"],
            split=task["split"],
            log=lambda _: None,
            progress=False,
            cache_dir=Path(task["out"]) / ".cache" / task["dataset"],
        )
        summary = run_one(
            method,
            bundle,
            config,
            seed,
            Path(task["out"]),
            task["preset"],
            progress=False,
            log=lambda message: print(message, flush=True),
        )
        send.send(("ok", summary, ""))
    except BaseException as exc:  # reported to the parent, which decides what to raise
        trace = traceback.format_exc()
        try:
            send.send(("error", exc, trace))
        except Exception:  # an exception that cannot be pickled
            send.send(("error", RuntimeError(f"{type(exc).__name__}: {exc}"), trace))
    finally:
        send.close()


def summary_table(summaries: Sequence[RunSummary]) -> str:
    """Compact text table: mean Dice per region over cases and the 15 subsets, full-set WT Dice,
    parameters and time, one line per method (seeds averaged)."""
    lines = [
        f"{'method':<16} {'family':<24} {'WT':>6} {'TC':>6} {'ET':>6} {'WT full':>8} "
        f"{'params':>9} {'time (s)':>9}"
    ]
    by_method: dict[str, list[RunSummary]] = {}
    for s in summaries:
        by_method.setdefault(s.method, []).append(s)
    for method, runs in by_method.items():
        df = pd.concat([r.metrics for r in runs])
        d = df[df["metric"] == "dice"]
        per_subset = d.groupby(["region", "subset"])["value"].mean()
        avg = per_subset.groupby("region").mean()
        full = d[(d["subset"] == FULL.name) & (d["region"] == "WT")]["value"].mean()
        seconds = np.mean([r.train_seconds + r.eval_seconds for r in runs])
        lines.append(
            f"{method:<16} {runs[0].family:<24} "
            + " ".join(f"{avg.get(r, float('nan')):>6.3f}" for r in REGIONS)
            + f" {full:>8.3f} {runs[0].params:>9,d} {seconds:>9.1f}"
        )
    lines.append(
        "Dice: mean over test cases, then over the 15 modality subsets "
        "(WT full: all four modalities)."
    )
    return "\n".join(lines)


__all__ = [
    "ConfigError",
    "RunError",
    "RunSummary",
    "prepare_data",
    "resolve_jobs",
    "resolve_methods",
    "run_benchmark",
    "run_one",
    "summary_table",
    "method_config",
]
