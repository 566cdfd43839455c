"""Read run folders (``metrics.csv`` + ``run.json``) into one tidy DataFrame.

Each row keeps :data:`~mmbench.benchmark.schema.RESULT_COLUMNS` and gains the run's ``family``,
``paper``, ``params`` and ``run_dir`` from ``run.json``. Runs whose status is not ``complete`` (or
that have no metrics yet) are skipped with a warning unless ``include_incomplete`` is set.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from mmbench.benchmark.schema import METRICS_FILE, RESULT_COLUMNS, RUN_INFO_FILE
from mmbench.errors import ReportError
from mmbench.subsets import as_subset

EXTRA_COLUMNS: tuple[str, ...] = ("family", "paper", "params", "run_dir")


class IncompleteRunWarning(UserWarning):
    """A run folder was left out of a report because it is not complete."""


def find_run_dirs(root: str | Path) -> list[Path]:
    """Return every folder under ``root`` (or ``root`` itself) that holds ``run.json`` or
    ``metrics.csv``, sorted."""
    root = Path(root)
    if not root.exists():
        raise ReportError(f"no results folder at {root}")
    found = {p.parent for p in root.rglob(RUN_INFO_FILE)} | {
        p.parent for p in root.rglob(METRICS_FILE)
    }
    return sorted(found)


def read_run_info(run_dir: str | Path) -> dict:
    """Return ``run.json`` of a run folder as a dict (empty when the file is missing)."""
    path = Path(run_dir) / RUN_INFO_FILE
    if not path.is_file():
        return {}
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _expand(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    if isinstance(paths, (str, Path)):
        paths = [paths]
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if (p / METRICS_FILE).is_file() or (p / RUN_INFO_FILE).is_file():
            out.append(p)
        else:
            out.extend(find_run_dirs(p))
    # A folder given twice (directly and via its parent) must count once.
    return list(dict.fromkeys(p.resolve() for p in out))


def _params_value(info: dict) -> float:
    value = info.get("params")
    try:
        return float(value) if value is not None else np.nan
    except (TypeError, ValueError):
        return np.nan


def load_results(
    paths: str | Path | Iterable[str | Path] = "results",
    include_incomplete: bool = False,
) -> pd.DataFrame:
    """Load and concatenate the metrics of run folders.

    Args:
        paths: run folders, or folders searched recursively for run folders (default ``results/``).
        include_incomplete: keep runs whose ``run.json`` status is not ``"complete"``.

    Returns:
        One DataFrame with :data:`RESULT_COLUMNS` plus :data:`EXTRA_COLUMNS`. Values from
        ``run.json`` fill ``dataset``/``method``/``seed``/``fold`` where ``metrics.csv`` lacks them.

    Raises:
        FileNotFoundError: when no usable run is found.
    """
    frames: list[pd.DataFrame] = []
    for run_dir in _expand(paths):
        info = read_run_info(run_dir)
        status = info.get("status", "complete" if info else "unknown")
        metrics = run_dir / METRICS_FILE
        if not metrics.is_file():
            warnings.warn(
                f"skipping {run_dir}: no {METRICS_FILE}", IncompleteRunWarning, stacklevel=2
            )
            continue
        if status != "complete" and not include_incomplete:
            warnings.warn(
                f"skipping {run_dir}: status {status!r} (pass include_incomplete to keep it)",
                IncompleteRunWarning,
                stacklevel=2,
            )
            continue
        df = pd.read_csv(metrics, dtype={"case": str, "subset": str, "region": str, "metric": str})
        for key in ("dataset", "method", "seed", "fold"):
            if key not in df.columns:
                if key not in info:
                    raise ValueError(
                        f"{metrics} has no column {key!r} and run.json does not say it"
                    )
                df[key] = info[key]
        for key in ("empty_policy", "hd95_mode", "max_distance"):
            if key not in df.columns:
                df[key] = np.nan
        df["family"] = info.get("family") or "unknown"
        df["paper"] = info.get("paper") or ""
        df["params"] = _params_value(info)
        df["run_dir"] = str(run_dir)
        frames.append(df[list(RESULT_COLUMNS) + list(EXTRA_COLUMNS)])
    if not frames:
        raise ReportError(f"no complete run with {METRICS_FILE} under {paths}")
    out = pd.concat(frames, ignore_index=True)
    out["value"] = pd.to_numeric(out["value"], errors="coerce")
    out["subset"] = out["subset"].map({s: canonical_subset(s) for s in out["subset"].unique()})
    return out


def canonical_subset(name: str) -> str:
    """Canonical subset name of a name or code; unparseable names are kept as they are."""
    try:
        return as_subset(str(name)).name
    except ValueError:
        return str(name)
