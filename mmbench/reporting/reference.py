"""Published numbers beside ours (``--compare reference``).

The published values ship as package data (``mmbench/reporting/data/``, copied byte-identical from
``shared/reference/``, source column kept). A comparison is made only where the dataset name and
the metric match one of our tables; every comparison carries its caveats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from importlib import resources
from io import StringIO

import numpy as np
import pandas as pd

from mmbench.reporting.tables import AVG, ResultTable, table_policy
from mmbench.subsets import SUBSET_NAMES

MSTKDNET_FILE = "mstkdnet_tables.csv"
FIG9_FILE = "adamm_fig9_approx.csv"
RECOMPUTED_AVG = "Avg. (recomputed)"

MSTKDNET_CAVEATS: tuple[str, ...] = (
    "Published rows come from the MST-KDNet README (see the source column); their pipeline uses a "
    "160×192×128 centre crop, min–max normalisation, their own split and HD95 with empty masks "
    "scored 0 (our policy `zero`). Their cases are not ours: differences are not paired and carry "
    "no test.",
    "In the BraTS 2024 WT Dice rows of the source the full-modality value equals the printed "
    "average for every baseline (a likely copy error); a few rows do not average to their printed "
    "mean — the row 'Avg. (recomputed)' is the mean of the printed subset values.",
)
FIG9_CAVEAT = (
    "AdaMM figure 9 values were read by eye (±0.5 for percentages, ±1 mm for HD95); its dataset "
    "and averaging are not stated and its HD95 uses AdaMM's empty-mask penalty, so it is shown as "
    "context only and matched to none of our datasets."
)


def _read(name: str) -> pd.DataFrame:
    text = resources.files("mmbench.reporting").joinpath("data", name).read_text(encoding="utf-8")
    return pd.read_csv(StringIO(text))


def load_mstkdnet() -> pd.DataFrame:
    """The per-subset published table rows (``source, dataset, metric, region, method, subset,
    value``)."""
    return _read(MSTKDNET_FILE)


def load_fig9() -> pd.DataFrame:
    """AdaMM figure 9 values (``method, params_m, dice, hd95, iou, sensitivity, note``)."""
    return _read(FIG9_FILE)


@dataclass
class Comparison:
    """Our table and the published rows for one dataset and metric, side by side."""

    dataset: str
    metric: str
    frame: pd.DataFrame  # index: subsets, Avg., Avg. (recomputed); columns: (region, column label)
    caveats: list[str] = field(default_factory=list)

    def flat(self) -> pd.DataFrame:
        """Frame with one string column per (region, label) and the subset as first column."""
        out = self.frame.copy()
        out.columns = [f"{r} {c}" for r, c in out.columns]
        return out.reset_index()


def compare_table(table: ResultTable, reference: pd.DataFrame | None = None) -> Comparison | None:
    """Set the published values for ``table``'s dataset and metric beside ours.

    Returns ``None`` when no published row matches the dataset and metric.
    """
    ref = load_mstkdnet() if reference is None else reference
    ref = ref[(ref["dataset"] == table.dataset) & (ref["metric"] == table.metric)]
    if ref.empty:
        return None
    rows = [s for s in SUBSET_NAMES if s in table.mean.index or s in set(ref["subset"])]
    index = pd.Index([*rows, AVG, RECOMPUTED_AVG], name="subset")
    cols: dict[tuple[str, str], pd.Series] = {}
    for region in table.regions:
        for m in table.methods:
            cols[(region, f"ours:{m}")] = table.mean[(region, m)].reindex(index)
        block = ref[ref["region"] == region]
        for m in dict.fromkeys(block["method"]):
            vals = block[block["method"] == m].set_index("subset")["value"]
            series = pd.Series(np.nan, index=index)
            for s, v in vals.items():
                key = AVG if str(s).lower() == "avg" else s
                if key in series.index:
                    series[key] = float(v)
            printed = [series[s] for s in SUBSET_NAMES if s in series.index]
            if printed and not any(math.isnan(x) for x in printed):
                series[RECOMPUTED_AVG] = float(np.mean(printed))
            cols[(region, f"pub:{m}")] = series
    frame = pd.DataFrame(cols, index=index)
    frame.columns = pd.MultiIndex.from_tuples(frame.columns, names=["region", "column"])
    caveats = list(MSTKDNET_CAVEATS)
    sources = "; ".join(sorted(set(ref["source"])))
    caveats.insert(0, f"Source: {sources}.")
    if table.metric == "dice":
        caveats.append("Dice in % (ours scaled the same way).")
    if table.metric == "hd95":
        rows_policy = table.policy[0] if table.policy else None
        if rows_policy and rows_policy != "zero":
            caveats.append(
                f"Our HD95 uses the `{rows_policy}` empty-mask policy, the published one `zero`: "
                "HD95 values differ by construction wherever a mask is empty (mostly ET and TC)."
            )
    return Comparison(table.dataset, table.metric, frame, caveats)


def fig9_context(df: pd.DataFrame) -> pd.DataFrame:
    """AdaMM figure 9 values with our per-dataset overall averages appended for context."""
    from mmbench.reporting.plots import overall_average

    pub = load_fig9()
    out = pd.DataFrame(
        {
            "method": "pub:" + pub["method"],
            "dataset": "not stated",
            "params (M)": pub["params_m"].astype(float),
            **{m: pub[m].astype(float) for m in ("dice", "hd95", "iou", "sensitivity")},
        }
    )
    ours = []
    for dataset in sorted(df["dataset"].unique()):
        row_params = df[df["dataset"] == dataset].groupby("method")["params"].first()
        avgs = {}
        for metric, scale in (("dice", 100), ("hd95", 1), ("iou", 100), ("sensitivity", 100)):
            sel = df[(df["dataset"] == dataset) & (df["metric"] == metric)]
            if sel.empty:
                continue
            table_policy(sel)  # refuses mixed conventions here as in the tables
            avgs[metric] = overall_average(df, dataset, metric) * scale
        for method in row_params.index:
            row = {
                "method": f"ours:{method}",
                "dataset": dataset,
                "params (M)": row_params[method] / 1e6,
            }
            for metric, series in avgs.items():
                row[metric] = float(series.get(method, np.nan))
            ours.append(row)
    return pd.concat([out, pd.DataFrame(ours)], ignore_index=True)
