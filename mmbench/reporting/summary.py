"""The text summary ``mmbench run`` prints when its runs finish."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from mmbench.benchmark.run import RunSummary
from mmbench.regions import REGIONS
from mmbench.subsets import FULL


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


__all__ = ["summary_table"]
