"""Equal-budget tuning on the val split: ``mmbench tune``.

For each method, every point of a declared grid over ``train`` keys (e.g. ``train.lr=0.003,0.006``)
trains with the same budget (the preset's ``train.steps`` and ``train.batch_size``, which a grid
may not change) and is scored by the val-split score that selects checkpoints
(:func:`mmbench.benchmark.validation.make_validator`: mean Dice over the val cases ×
``train.val_subsets`` × WT, TC, ET, at the best checkpoint), averaged over the seeds. The highest
mean wins (the first grid point on ties). The test split is never read: the data are prepared
with an empty test part, and nothing here predicts or scores a test case.

The result is an overlay YAML (``<out>/overlay.yaml``) that records the grid, every val score
and the choice, and holds the choices as ``config.methods.<name>.train``;
``mmbench run --overlay <file>`` applies them (:func:`mmbench.config.load_overlay`). Tuning runs
live in ``<out>/<dataset>/<method>/<grid point>/seed<S>/`` and resume like ordinary runs.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mmbench.atomic import atomic_write_json, atomic_write_text
from mmbench.benchmark.run import build_strategy
from mmbench.benchmark.rundir import RunDir
from mmbench.benchmark.runner import resolve_config
from mmbench.benchmark.runtime import pick_device
from mmbench.benchmark.trainer import Trainer
from mmbench.benchmark.validation import make_validator
from mmbench.config import METHOD_TRAIN_KEY, OVERLAY_CONFIG_KEY, Config, TrainSection, build_section
from mmbench.datasets.prepare import PreparedData, prepare_data
from mmbench.datasets.sampling import make_batch_source, make_fit_batches
from mmbench.datasets.splits import Split, split_name, split_sha256
from mmbench.errors import ConfigError, RunError
from mmbench.methods import resolve_methods

BUDGET_KEYS: tuple[str, ...] = ("train.steps", "train.batch_size")
"""Keys a grid may not vary: every candidate gets the same training budget."""
OVERLAY_FILE = "overlay.yaml"
CANDIDATE_FILE = "candidate.json"
OVERLAY_VERSION = 1
SELECTION = (
    "highest mean over seeds of the val score (mean Dice over val cases x train.val_subsets x "
    "WT, TC, ET at the best checkpoint); the first grid point on ties; the test split is "
    "never read"
)


@dataclass
class TuneResult:
    """What :func:`tune` found.

    Attributes:
        overlay: the overlay file written.
        scores: method → one ``{"point", "val_scores", "mean"}`` per grid point.
        choices: method → the chosen point (``{"train.lr": 0.003}``).
    """

    overlay: Path
    scores: dict[str, list[dict[str, Any]]]
    choices: dict[str, dict[str, Any]]


def parse_grid(items: Sequence[str]) -> dict[str, list[Any]]:
    """``["train.lr=0.003,0.006"]`` → ``{"train.lr": [0.003, 0.006]}``, each value checked.

    Values are YAML scalars separated by commas. Keys must be ``train.<key>``, not a budget key
    (:data:`BUDGET_KEYS`), each given once, with at least one value.

    Raises:
        ConfigError: a malformed item, a key outside ``train``, a budget key or a bad value.
    """
    if not items:
        raise ConfigError("--grid is required, e.g. --grid train.lr=0.003,0.006")
    grid: dict[str, list[Any]] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--grid takes key=v1,v2,..., got {item!r}")
        key, raw = (s.strip() for s in item.split("=", 1))
        if not key.startswith("train.") or key.count(".") != 1:
            raise ConfigError(
                f"--grid key {key!r}: tuning searches train keys (e.g. train.lr, "
                "train.weight_decay)"
            )
        if key in BUDGET_KEYS:
            raise ConfigError(
                f"--grid key {key!r} changes the training budget; every candidate trains with "
                f"the preset's {', '.join(BUDGET_KEYS)} (set them with --set)"
            )
        if key in grid:
            raise ConfigError(f"--grid key {key!r} is given twice")
        try:
            values = [yaml.safe_load(v) for v in raw.split(",") if v.strip()]
        except yaml.YAMLError as exc:
            raise ConfigError(f"cannot parse the values of --grid {key}: {raw!r}") from exc
        if not values:
            raise ConfigError(f"--grid {key} has no values")
        name = key.split(".", 1)[1]
        # An unknown key or a bad value raises here, naming the valid keys or the allowed range.
        grid[key] = [
            getattr(build_section(TrainSection, {name: v}, "train."), name) for v in values
        ]
    return grid


def grid_points(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, in the order given (last key fastest)."""
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def point_label(point: Mapping[str, Any]) -> str:
    """A folder name for a grid point: ``lr=0.003`` (``_`` for unsafe characters)."""
    text = ",".join(f"{k.split('.', 1)[1]}={v}" for k, v in point.items())
    return re.sub(r"[^A-Za-z0-9=,.+-]", "_", text)


def candidate_config(base: Config, point: Mapping[str, Any]) -> Config:
    """``base`` with the point's ``train`` keys set."""
    data = base.to_dict()
    for key, value in point.items():
        data["train"][key.split(".", 1)[1]] = value
    return Config.from_dict(data)


def validation_only(data: PreparedData) -> PreparedData:
    """The same data with the test part removed, so tuning cannot read it."""
    return PreparedData(
        dataset=data.dataset,
        root=data.root,
        spec=data.spec,
        split=Split(list(data.split.train), list(data.split.val), []),
        problems=data.problems,
        train=data.train,
        val=data.val,
        test=[],
    )


def train_candidate(
    method: str,
    data: PreparedData,
    config: Config,
    seed: int,
    run_dir: Path,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> float:
    """Train one candidate (or resume it, or read back its finished score); its val score."""
    run = RunDir(run_dir)
    run.check_config(config)
    record = run.path / CANDIDATE_FILE
    done = _read_json(record)
    if done.get("status") == "complete":
        return float(done["val_score"]) if done.get("val_score") is not None else math.nan
    strategy = build_strategy(method, config, seed)
    validator = make_validator(data.val, config)
    if validator is None:
        raise ConfigError("tuning selects on the val split, and the val split is empty")
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
        validator=validator,
        seed=seed,
        device=pick_device(config.train.device),
        progress=progress,
        log=log,
    )
    failure = None
    try:
        trainer.fit()
        score = trainer.state.best_score
    except FloatingPointError as exc:  # a diverged candidate scores nothing, the others go on
        failure, score = str(exc), -math.inf
    value = float(score) if math.isfinite(score) else math.nan
    atomic_write_json(
        record,
        {
            "status": "complete",
            "method": method,
            "seed": seed,
            "val_score": None if math.isnan(value) else value,
            "failure": failure,
            "train_seconds": trainer.state.train_seconds,
        },
    )
    return value


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def tune(
    methods: str | Sequence[str],
    grid: Mapping[str, Sequence[Any]] | Sequence[str],
    dataset: str = "synthetic",
    data_root: str | Path | None = None,
    preset: str | Path = "quick",
    seeds: Sequence[int] | None = None,
    out: str | Path = "results/tuning",
    overrides: Sequence[str] | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> TuneResult:
    """Tune each method over ``grid`` on the val split and write ``<out>/overlay.yaml``.

    Args:
        methods: names or groups, as for :func:`mmbench.benchmark.runner.run_benchmark`.
        grid: ``{"train.lr": [0.003, 0.006]}`` or ``["train.lr=0.003,0.006"]``.
        seeds: seeds per candidate (default: the preset's); the val scores are averaged.
        out: folder of the tuning runs and the overlay. An overlay already there for the same
            preset, dataset and split keeps its other methods.

    Raises:
        MMBenchError: a bad grid, method, configuration or data root; an empty val split; every
            candidate of a method failing.
    """
    from mmbench.datasets import get_dataset

    names = resolve_methods(methods)
    get_dataset(dataset)
    points_grid = dict(grid) if isinstance(grid, Mapping) else parse_grid(list(grid))
    base = resolve_config(preset, overrides, names)
    for key in BUDGET_KEYS:
        if key in points_grid:
            raise ConfigError(f"--grid key {key!r} changes the training budget")
    seeds = [int(s) for s in (seeds if seeds is not None else base.seeds)]
    out = Path(out)
    # The split alone first (nothing preprocessed), then the data with its test part removed.
    full_split = prepare_data(
        dataset,
        base,
        data_root,
        log=lambda _: None,
        progress=progress,
        cache_dir=out / ".cache" / dataset,
        cache="none",
    ).split
    data = validation_only(
        prepare_data(
            dataset,
            base,
            data_root,
            split=Split(list(full_split.train), list(full_split.val), []),
            log=log,
            progress=progress,
            cache_dir=out / ".cache" / dataset,
        )
    )
    points = grid_points(points_grid)
    scores: dict[str, list[dict[str, Any]]] = {}
    choices: dict[str, dict[str, Any]] = {}
    for name in names:
        method_base = base.for_method(name)
        rows = []
        for point in points:
            config = candidate_config(method_base, point)
            values = []
            for seed in seeds:
                run_dir = out / dataset / name / point_label(point) / f"seed{seed}"
                values.append(train_candidate(name, data, config, seed, run_dir, progress, log))
            finite = [v for v in values if not math.isnan(v)]
            mean = sum(finite) / len(finite) if len(finite) == len(values) else None
            rows.append({"point": dict(point), "val_scores": _nullable(values), "mean": mean})
            log(f"tune {name} {point_label(point)}: val score {_fmt(mean)}")
        ranked = [r for r in rows if r["mean"] is not None]
        if not ranked:
            raise RunError(f"tune {name}: every grid point failed to train; see {out}")
        best = max(ranked, key=lambda r: r["mean"])  # max keeps the first of equal means
        scores[name], choices[name] = rows, dict(best["point"])
    overlay = write_overlay(
        out / OVERLAY_FILE, base, dataset, full_split, points_grid, seeds, scores, choices
    )
    return TuneResult(overlay, scores, choices)


def _nullable(values: Sequence[float]) -> list[float | None]:
    return [None if math.isnan(v) else float(v) for v in values]


def _fmt(value: float | None) -> str:
    return "failed" if value is None else f"{value:.4f}"


def write_overlay(
    path: Path,
    base: Config,
    dataset: str,
    split: Split,
    grid: Mapping[str, Sequence[Any]],
    seeds: Sequence[int],
    scores: Mapping[str, list[dict[str, Any]]],
    choices: Mapping[str, dict[str, Any]],
) -> Path:
    """Write (or extend) the overlay file; see the module docstring."""
    header = {
        "mmbench_overlay": OVERLAY_VERSION,
        "preset": base.preset,
        "dataset": dataset,
        "split": {
            "name": split_name(
                base.split.file, base.split.seed, base.split.k_folds, base.split.fold
            ),
            "sha256": split_sha256(split),
        },
        "budget": {key: base.get(key) for key in BUDGET_KEYS},
        "selection": SELECTION,
    }
    existing: dict[str, Any] = {}
    if path.exists():
        existing = yaml.safe_load(path.read_text()) or {}
        if {k: existing.get(k) for k in header} != header:
            raise RunError(
                f"{path} holds an overlay of another preset, dataset, split or budget; "
                "choose another --out"
            )
    evidence = dict(existing.get("methods") or {})
    config_methods = dict((existing.get(OVERLAY_CONFIG_KEY) or {}).get("methods") or {})
    for name, rows in scores.items():
        evidence[name] = {
            "grid": {k: list(v) for k, v in grid.items()},
            "seeds": list(seeds),
            "scores": rows,
            "choice": choices[name],
        }
        config_methods[name] = {
            METHOD_TRAIN_KEY: {k.split(".", 1)[1]: v for k, v in choices[name].items()}
        }
    doc = {**header, "methods": evidence, OVERLAY_CONFIG_KEY: {"methods": config_methods}}
    text = (
        "# Written by `mmbench tune`: equal-budget search on the val split. Apply it with\n"
        "# `mmbench run --overlay <this file>` (only the `config` section is applied).\n"
        + yaml.safe_dump(doc, sort_keys=False)
    )
    return atomic_write_text(path, text)


__all__ = [
    "BUDGET_KEYS",
    "TuneResult",
    "candidate_config",
    "grid_points",
    "parse_grid",
    "point_label",
    "train_candidate",
    "tune",
    "validation_only",
    "write_overlay",
]
