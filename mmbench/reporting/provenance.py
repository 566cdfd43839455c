"""What a report was made from: run settings, seeds, cases, commits, versions, date; and the
run-level records (``run.json``) the costs table and the family view read.

Every report states its provenance in ``report.md``, ``report.html`` and as comment lines at the
top of each ``.tex`` file, so a table pasted into a paper can be traced back to its runs.
"""

from __future__ import annotations

import json
import math
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from mmbench.benchmark.schema import RUN_INFO_FILE

COST_COLUMNS: tuple[str, ...] = (
    "params_inference",
    "params_training",
    "gflops_forward",
    "train_s_per_step",
    "infer_s_per_case",
    "peak_memory_mb",
)
"""Keys of ``run.json["costs"]``, in the costs table's order."""

COST_LABELS: dict[str, str] = {
    "params_inference": "parameters at inference (M)",
    "params_training": "training-only parameters (M)",
    "gflops_forward": "GFLOPs of one forward pass",
    "train_s_per_step": "seconds per training step",
    "infer_s_per_case": "inference seconds per case",
    "peak_memory_mb": "peak memory (MB)",
}
"""Axis labels of the accuracy-vs-cost figure (parameters shown in millions)."""


@dataclass
class RunRecord:
    """One run folder's ``run.json``, ``config.yaml`` and ``environment.json``."""

    run_dir: Path
    info: dict
    config: dict = field(default_factory=dict)
    environment: dict = field(default_factory=dict)

    @property
    def method(self) -> str:
        return str(self.info.get("method", self.run_dir.parent.name))

    @property
    def dataset(self) -> str:
        return str(self.info.get("dataset", ""))


def _read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        import yaml

        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except Exception:  # noqa: BLE001 - a broken config must not stop a report
        return {}


def read_runs(df: pd.DataFrame) -> list[RunRecord]:
    """A :class:`RunRecord` for every run folder of loaded results (column ``run_dir``)."""
    if "run_dir" not in df.columns:
        return []
    out = []
    for run_dir in sorted(df["run_dir"].dropna().unique()):
        path = Path(run_dir)
        out.append(
            RunRecord(
                path,
                _read_json(path / RUN_INFO_FILE),
                _read_yaml(path / "config.yaml"),
                _read_json(path / "environment.json"),
            )
        )
    return out


def _number(value: object) -> float:
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")
    return v if math.isfinite(v) else float("nan")


def val_scores(records: Sequence[RunRecord], dataset: str) -> dict[str, float]:
    """Per method, the mean over its runs of ``run.json["val_score"]`` (methods without: absent)."""
    per: dict[str, list[float]] = {}
    for r in records:
        if r.dataset == dataset:
            v = _number(r.info.get("val_score"))
            if not math.isnan(v):
                per.setdefault(r.method, []).append(v)
    return {m: sum(v) / len(v) for m, v in per.items()}


def costs_frame(
    records: Sequence[RunRecord],
    dataset: str,
    methods: Sequence[str],
    families: Mapping[str, str],
) -> pd.DataFrame:
    """The costs table: one row per method, :data:`COST_COLUMNS` averaged over its runs.

    Values come from ``run.json["costs"]``; where a run has none, ``params_inference`` falls back
    to ``params`` and ``params_training`` to ``params_training_only``, the rest stays blank (NaN).
    """
    rows = []
    for method in methods:
        runs = [r for r in records if r.dataset == dataset and r.method == method]
        values: dict[str, list[float]] = {c: [] for c in COST_COLUMNS}
        for r in runs:
            costs = r.info.get("costs") if isinstance(r.info.get("costs"), dict) else {}
            fallback = {
                "params_inference": r.info.get("params"),
                "params_training": r.info.get("params_training_only"),
            }
            for c in COST_COLUMNS:
                v = _number(costs.get(c, fallback.get(c)))
                if not math.isnan(v):
                    values[c].append(v)
        row: dict[str, object] = {"method": method, "family": families.get(method, "unknown")}
        for c in COST_COLUMNS:
            row[c] = sum(values[c]) / len(values[c]) if values[c] else float("nan")
        rows.append(row)
    frame = pd.DataFrame(rows, columns=["method", "family", *COST_COLUMNS])
    for c in COST_COLUMNS:
        frame[c] = frame[c].astype(float)
    for c in ("params_inference", "params_training"):  # counts print as integers
        frame[c] = frame[c].round().astype("Int64")
    return frame


def git_describe() -> str:
    """``git describe --always --dirty`` of the mmbench source tree, or ``"unknown"``."""
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def mmbench_version() -> str:
    from mmbench import __version__

    return str(__version__)


def _get(config: Mapping, *keys: str) -> object:
    node: object = config
    for key in keys:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node


def _fmt(value: object) -> str:
    if value is None:
        return "?"
    if isinstance(value, (list, tuple)):
        return "×".join(str(v) for v in value)
    return str(value)


def provenance_frame(df: pd.DataFrame, records: Sequence[RunRecord]) -> pd.DataFrame:
    """One row per (dataset, method): preset, steps, batch, crop, lr, split (``run.json``
    ``split_name``), seeds, test cases scored, run commits (short), with values joined by ``/``
    where the runs differ."""
    by_key: dict[tuple[str, str], list[RunRecord]] = {}
    for r in records:
        by_key.setdefault((r.dataset, r.method), []).append(r)
    rows = []
    for (dataset, method), block in df.groupby(["dataset", "method"], sort=True):
        runs = by_key.get((str(dataset), str(method)), [])

        def joined(values: list[str]) -> str:
            return "/".join(dict.fromkeys(values)) or "?"

        def commit(r: RunRecord) -> str:
            c = r.environment.get("git_commit")
            return str(c)[:10] if c else "unknown"

        rows.append(
            {
                "dataset": dataset,
                "method": method,
                "preset": joined([_fmt(r.info.get("preset")) for r in runs]),
                "steps": joined([_fmt(_get(r.config, "train", "steps")) for r in runs]),
                "batch": joined([_fmt(_get(r.config, "train", "batch_size")) for r in runs]),
                "crop": joined([_fmt(_get(r.config, "model", "patch_size")) for r in runs]),
                "lr": joined([_fmt(_get(r.config, "train", "lr")) for r in runs]),
                "split": joined([_fmt(r.info.get("split_name")) for r in runs]),
                "seeds": ",".join(str(s) for s in sorted(block["seed"].unique())),
                "cases": int(block["case"].nunique()),
                "commit": joined([commit(r) for r in runs]),
            }
        )
    return pd.DataFrame(rows)


@dataclass
class Provenance:
    """The provenance block of a report."""

    frame: pd.DataFrame
    version: str
    commit: str
    date: str

    def lines(self) -> list[str]:
        """Plain-text lines (shared by Markdown, HTML and the ``.tex`` comments)."""
        out = [
            f"Made by mmbench {self.version} (commit {self.commit}) on {self.date}.",
        ]
        for row in self.frame.itertuples(index=False):
            out.append(
                f"{row.dataset} / {row.method}: preset {row.preset}, steps {row.steps}, "
                f"batch {row.batch}, crop {row.crop}, lr {row.lr}, split {row.split}, "
                f"seeds {row.seeds}, "
                f"{row.cases} test cases, run commit {row.commit}"
            )
        return out

    def markdown(self) -> str:
        lines = ["## Provenance", ""]
        lines += [f"- {line}" for line in self.lines()]
        return "\n".join(lines) + "\n"

    def tex_comment(self) -> str:
        return "".join(f"% {line}\n" for line in ["Provenance:", *self.lines()])


def collect_provenance(df: pd.DataFrame, records: Sequence[RunRecord]) -> Provenance:
    """The provenance of a report over ``df`` (loaded results) and its run records."""
    return Provenance(
        frame=provenance_frame(df, records),
        version=mmbench_version(),
        commit=git_describe(),
        date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    )
