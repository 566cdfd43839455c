"""The runner: dataset → split → transforms → training loop → evaluator, one run folder per method.

``run_benchmark`` is what ``mmbench run`` calls; everything it does can be done from Python::

    from mmbench.benchmark.runner import run_benchmark
    summaries = run_benchmark(["dropout-unet"], dataset="synthetic", preset="quick")

A run folder (``<out>/<dataset>/<method>/seed<S>-fold<F>/``, see :mod:`mmbench.benchmark.schema`)
holds everything needed to resume: rerunning the same command continues training from the last
checkpoint and evaluation from the last finished case, and skips finished runs.
"""

from __future__ import annotations

import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

from mmbench.benchmark import schema
from mmbench.benchmark.config import ConfigError, apply_overrides, load_config, method_config
from mmbench.benchmark.evaluator import EvalSettings, Evaluator, predict_volume
from mmbench.benchmark.io import atomic_write_json, atomic_write_text
from mmbench.benchmark.metrics import dice
from mmbench.benchmark.results import ResultsStore
from mmbench.benchmark.schema import REGIONS
from mmbench.benchmark.subsets import ALL_SUBSETS, FULL, Subset, as_subset
from mmbench.benchmark.trainer import Trainer, collate, pick_device
from mmbench.methods import create as create_method
from mmbench.methods import list_methods, method_info

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


def resolve_methods(names: str | Sequence[str]) -> list[str]:
    """``"all"``, ``"a,b"`` or a list → registered names; unknown names raise ``ValueError``."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    if list(names) == ["all"]:
        return list_methods()
    for n in names:
        method_info(n)  # raises with the valid names
    return list(names)


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
) -> DataBundle:
    """Discover, validate, split and (lazily) preprocess a dataset for a set of runs.

    ``split_path``: an existing ``split.json`` to reuse (resume); otherwise ``split.file`` from
    the config, otherwise a seeded split from ``split.*``.
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
    if split_path is not None and Path(split_path).exists():
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
    cache = str(ds.get("cache", "memory"))
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
    """Train (or resume) and evaluate one method with one seed, in its own run folder."""
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
) -> list[RunSummary]:
    """Train and evaluate each method (× seed) in its own run folder; see the module docstring.

    Raises:
        ValueError: unknown method or dataset, invalid override (:class:`ConfigError`), missing
            data root (:class:`mmbench.datasets.DataRootError`).
    """
    from mmbench.datasets import get_dataset

    names = resolve_methods(methods)
    get_dataset(dataset)
    config = apply_overrides(load_config(preset), list(overrides or []))
    if seeds is None:
        seeds = [int(s) for s in config.get("seeds") or [0]]
    threads = config["train"].get("threads")
    if threads:
        torch.set_num_threads(int(threads))
    fold = int(config["split"].get("fold") or 0)
    out = Path(out)
    # Reuse a split already written by an earlier (interrupted) invocation of the same runs.
    existing = [
        run_dir_for(out, dataset, m, s, fold) / schema.SPLIT_FILE for m in names for s in seeds
    ]
    split_path = next((p for p in existing if p.exists()), None)
    bundle = prepare_data(
        dataset,
        config,
        data_root,
        split_path=split_path,
        log=log,
        progress=progress,
        cache_dir=out / ".cache" / dataset,
    )
    summaries = []
    for seed in seeds:
        for name in names:
            summaries.append(run_one(name, bundle, config, int(seed), out, preset, progress, log))
    return summaries


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
    "resolve_methods",
    "run_benchmark",
    "run_one",
    "summary_table",
    "method_config",
]
