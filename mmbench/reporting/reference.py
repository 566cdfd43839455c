"""Published numbers beside ours (``--compare reference``).

The published values ship as package data (``mmbench/reporting/data/``, copied byte-identical from
``shared/reference/``, source column kept). A comparison is made only where the dataset name and
the metric match one of our tables; every comparison carries its caveats.

BraTS 2018 numbers (``brats2018_rfnet_splits.csv``) are the mean of RFNet's three splits: only
runs on one of those splits (``split_name`` ``rfnet-brats2018-1..3`` in ``run.json``) are set
beside them, and their published ET (post-processed, ETpp in our terms) goes under our ``ETpp``
when the table has it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from importlib import resources
from io import StringIO
from pathlib import Path

import numpy as np
import pandas as pd

from mmbench.reporting.tables import AVG, ResultTable, table_policy
from mmbench.subsets import SUBSET_NAMES

MSTKDNET_FILE = "mstkdnet_tables.csv"
BRATS2018_FILE = "brats2018_rfnet_splits.csv"
RFNET_SPLITS: tuple[str, ...] = ("rfnet-brats2018-1", "rfnet-brats2018-2", "rfnet-brats2018-3")
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
BRATS2018_CAVEATS: tuple[str, ...] = (
    "Published BraTS 2018 rows: DeMoSeg's README figure (RFNet, mmFormer, MAVP, GSS, DeMoSeg; "
    "per subset) and RFNet's README (HeMIS, U-HVED, RobustSeg; average only). Each is the mean "
    "over RFNet's three 199/29/57 splits, whose 57-case test sets overlap (137 distinct cases); "
    "ours are on the split(s) named below. Cases, training and model selection differ (RFNet "
    "reports its last epoch on the test split): differences are not paired and carry no test.",
    "Published ET is post-processed (emptied below 500 predicted voxels): compare it with our "
    "ETpp (eval.etpp, --regions WT,TC,ET,ETpp); under our raw ET it is not like for like.",
    "MAVP TC does not average to its printed mean (76.09 recomputed vs 76.00 printed; the cell "
    "T1+FLAIR 72.77 is stored as printed). No HD95 is published for these rows.",
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


def load_brats2018() -> pd.DataFrame:
    """BraTS 2018 per-subset Dice (%) on the RFNet splits (columns of :func:`load_mstkdnet`)."""
    return _read(BRATS2018_FILE)


def load_reference() -> pd.DataFrame:
    """Every per-subset published table, with a ``file`` column naming its source file."""
    return pd.concat(
        [load_mstkdnet().assign(file=MSTKDNET_FILE), load_brats2018().assign(file=BRATS2018_FILE)],
        ignore_index=True,
    )


def run_splits(runs: pd.DataFrame | None) -> dict[str, set[str]]:
    """Method → the ``split_name`` values in ``run.json`` of its run folders (``runs`` is the
    tidy frame of :func:`mmbench.reporting.load.load_results`, with ``run_dir``)."""
    from mmbench.reporting.load import read_run_info

    out: dict[str, set[str]] = {}
    if runs is None or runs.empty:
        return out
    for (method, folder), _ in runs.groupby(["method", "run_dir"], sort=True):
        name = read_run_info(Path(folder)).get("split_name") or "unknown"
        out.setdefault(str(method), set()).add(str(name))
    return out


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


def compare_table(
    table: ResultTable, reference: pd.DataFrame | None = None, runs: pd.DataFrame | None = None
) -> Comparison | None:
    """Set the published values for ``table``'s dataset and metric beside ours.

    ``runs``: the tidy frame the table was built from; on BraTS 2018 it decides which methods
    ran on an RFNet split (the others are left out of the comparison, and a caveat says so).

    Returns ``None`` when no published row matches the dataset and metric.
    """
    ref = load_reference() if reference is None else reference
    ref = ref[(ref["dataset"] == table.dataset) & (ref["metric"] == table.metric)]
    if ref.empty:
        return None
    files = set(ref["file"]) if "file" in ref.columns else {MSTKDNET_FILE}
    extra: list[str] = []
    methods = list(table.methods)
    if BRATS2018_FILE in files:
        ref = ref.copy()
        if "ETpp" in table.regions:
            ref.loc[ref["region"] == "ET", "region"] = "ETpp"
        splits = run_splits(runs)
        if runs is not None:
            methods = [m for m in methods if splits.get(m) and splits[m] <= set(RFNET_SPLITS)]
            left_out = [m for m in table.methods if m not in methods]
            if left_out:
                extra.append(
                    "Left out (not run on an RFNet split): "
                    + "; ".join(
                        f"{m} ({', '.join(sorted(splits.get(m, {'unknown'})))})" for m in left_out
                    )
                    + "."
                )
        if methods:
            used = sorted({s for m in methods for s in splits.get(m, set())})
            extra.append(
                "Ours: mean over the test cases of split(s) "
                + (", ".join(used) if used else "not recorded")
                + "; published: mean over the three splits."
            )
    rows = [s for s in SUBSET_NAMES if s in table.mean.index or s in set(ref["subset"])]
    index = pd.Index([*rows, AVG, RECOMPUTED_AVG], name="subset")
    cols: dict[tuple[str, str], pd.Series] = {}
    for region in table.regions:
        for m in methods:
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
    caveats = list(MSTKDNET_CAVEATS) if MSTKDNET_FILE in files else []
    if BRATS2018_FILE in files:
        caveats += [*BRATS2018_CAVEATS, *extra]
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
