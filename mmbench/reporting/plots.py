"""Report figures, each written as PNG and PDF.

Figures are drawn on :class:`matplotlib.figure.Figure` objects with the Agg canvas, without pyplot,
so that importing this module never changes the process-wide matplotlib backend.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import NullFormatter

from mmbench.reporting.family import family_sort_key
from mmbench.reporting.tables import AVG, ResultTable, case_matrix, metric_info
from mmbench.subsets import FULL, MODALITIES, SUBSET_NAMES, Subset

PNG_DPI = 110
REGION_COLOURS = {"WT": "#ffd60a", "TC": "#ff5a36", "ET": "#22d3ee"}


def _new_figure(width: float, height: float) -> Figure:
    # Fixed margins (set per plot), not constrained layout: layout solving dominated draw time.
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _margins(
    fig: Figure, left: float, bottom: float, right: float, top: float, **kw: float
) -> None:
    """Margins in inches, converted to the figure fractions ``subplots_adjust`` takes."""
    w, h = fig.get_size_inches()
    fig.subplots_adjust(
        left=left / w, bottom=bottom / h, right=1 - right / w, top=1 - top / h, **kw
    )


def save_figure(fig: Figure, stem: Path) -> list[Path]:
    """Write ``stem.png`` and ``stem.pdf``; return both paths."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    png, pdf = stem.with_suffix(".png"), stem.with_suffix(".pdf")
    fig.savefig(png, dpi=PNG_DPI)
    fig.savefig(pdf)
    return [png, pdf]


def _colours(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _short(subset: str) -> str:
    """Subset label on axes: the table's own names (T1, T1ce, T2, FLAIR), never abbreviated."""
    return subset


def axis_label(metric: str) -> str:
    """Axis label of a metric with its unit once, e.g. ``HD95 (mm)``, ``Dice (%)``."""
    return metric_info(metric).label


def change_label(metric: str) -> str:
    """Axis label of a difference of a metric: percentages differ in percentage points."""
    info = metric_info(metric)
    name = info.label.split(" (")[0]
    if info.label.endswith("(%)"):
        return f"drop in {name} (percentage points)"
    unit = info.label[len(name) :].strip()
    return f"drop in {name} {unit}".strip()


def heatmap(table: ResultTable, out_dir: Path) -> list[Path]:
    """Method × subset heatmap, one panel per region stacked vertically, for one table.

    Panels share the subset axis (full subset names, as in the tables, under the last panel);
    every cell carries its value at a size readable in print, in black on light cells and white
    on dark ones.
    """
    info = table.info
    rows = table.rows
    nm = len(table.methods)
    nr = len(table.regions)
    panel = 0.35 + 0.3 * nm
    top, bottom = 0.55, 1.35
    fig = _new_figure(10.0, nr * panel + (nr - 1) * 0.3 + top + bottom)
    axes = fig.subplots(nr, 1, squeeze=False, sharex=True)[:, 0]
    values = table.mean.to_numpy(dtype=float)
    finite = values[np.isfinite(values)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    cmap = "viridis" if info.higher_better else "viridis_r"
    annotate = nm <= 24
    _margins(fig, 1.6, bottom, 1.3, top, hspace=0.3 / panel)
    mid = (vmin + vmax) / 2
    for ax, region in zip(axes, table.regions):
        data = table.mean[region].to_numpy(dtype=float).T
        im = ax.imshow(data, aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax)
        ax.set_ylabel(region, fontsize=10, rotation=0, ha="left", va="center", labelpad=6)
        ax.yaxis.set_label_position("right")
        ax.set_yticks(range(nm), [table.header(m) for m in table.methods], fontsize=8)
        ax.axvline(len(rows) - 1.5, color="white", lw=2)
        if annotate:
            for i in range(nm):
                for j in range(len(rows)):
                    if np.isfinite(data[i, j]):
                        # dark text on the light end of the colour map, light text elsewhere
                        light = (data[i, j] > mid) == info.higher_better
                        ax.text(
                            j,
                            i,
                            f"{data[i, j]:.{1 if abs(data[i, j]) < 10 else 0}f}",
                            ha="center",
                            va="center",
                            fontsize=8,
                            color="black" if light else "white",
                        )
    axes[-1].set_xticks(range(len(rows)), [_short(r) for r in rows], rotation=60, ha="right")
    axes[-1].tick_params(axis="x", labelsize=8)
    w, h = fig.get_size_inches()
    cax = fig.add_axes((1 - 0.75 / w, bottom / h, 0.15 / w, 1 - (top + bottom) / h))
    fig.colorbar(im, cax=cax, label=info.label)
    fig.suptitle(f"{info.label} per method and subset — {table.dataset}", fontsize=10)
    return save_figure(fig, out_dir / f"heatmap_{table.dataset}_{table.metric}")


def _box_stats(values: np.ndarray) -> tuple[float, float, float, float, float, np.ndarray]:
    """Quartiles, Tukey whiskers (1.5 IQR, clipped to the data) and outliers."""
    q1, med, q3 = np.percentile(values, [25, 50, 75])
    iqr = q3 - q1
    inside = values[(values >= q1 - 1.5 * iqr) & (values <= q3 + 1.5 * iqr)]
    lo, hi = (inside.min(), inside.max()) if inside.size else (q1, q3)
    out = values[(values < lo) | (values > hi)]
    return q1, med, q3, lo, hi, out


def distributions(
    df: pd.DataFrame,
    dataset: str,
    out_dir: Path,
    metric: str = "dice",
    regions: Sequence[str] = ("WT", "TC", "ET"),
    methods: Sequence[str] | None = None,
) -> list[Path]:
    """Box plots of per-case values per subset, one colour per method, one panel per region.

    Boxes are drawn as one collection per method and panel (Tukey whiskers, outliers as dots):
    hundreds of separate ``boxplot`` artists made this the slowest figure of the report.
    """
    from matplotlib.collections import LineCollection, PolyCollection

    cm = case_matrix(df, dataset, metric, regions, methods)
    methods = list(cm.columns)
    present = set(cm.index.get_level_values("subset"))
    subsets = [s for s in SUBSET_NAMES if s in present]
    regions = [r for r in regions if r in set(cm.index.get_level_values("region"))]
    colours = _colours(len(methods))
    nm = len(methods)
    # Full subset names (as in the tables) under the last panel only: the panels share the axis.
    fig = _new_figure(max(8.0, 0.08 * nm * len(subsets) + 2.0), 2.0 * len(regions) + 2.0)
    _margins(fig, 0.8, 1.35, 0.2, 0.6, hspace=0.15)
    axes = fig.subplots(len(regions), 1, squeeze=False, sharex=True)[:, 0]
    groups = {key: block for key, block in cm.groupby(level=["region", "subset"])}
    half = 0.4
    for ax, region in zip(axes, regions):
        for j, m in enumerate(methods):
            boxes, lines, fx, fy = [], [], [], []
            for i, subset in enumerate(subsets):
                block = groups.get((region, subset))
                if block is None:
                    continue
                vals = block[m].to_numpy(dtype=float)
                vals = vals[np.isfinite(vals)]
                if not vals.size:
                    continue
                x = i * (nm + 1) + j
                q1, med, q3, lo, hi, out = _box_stats(vals)
                boxes.append([(x - half, q1), (x + half, q1), (x + half, q3), (x - half, q3)])
                lines += [
                    [(x - half, med), (x + half, med)],
                    [(x, lo), (x, q1)],
                    [(x, q3), (x, hi)],
                ]
                fx += [x] * out.size
                fy += list(out)
            ax.add_collection(
                PolyCollection(boxes, facecolors=[colours[j]], edgecolors="black", linewidths=0.4)
            )
            ax.add_collection(LineCollection(lines, colors="black", linewidths=0.5))
            if fx:
                ax.scatter(fx, fy, s=1.5, color=colours[j], alpha=0.6, linewidths=0)
        ax.autoscale_view()
        ax.set_xlim(-1, len(subsets) * (nm + 1) - 1)
        ax.set_xticks([i * (nm + 1) + (nm - 1) / 2 for i in range(len(subsets))])
        ax.tick_params(axis="x", labelbottom=ax is axes[-1])
        ax.set_ylabel(f"{region} {axis_label(metric)}", fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(axis="y", lw=0.3, alpha=0.5)
    axes[-1].set_xticklabels([_short(s) for s in subsets], rotation=45, ha="right", fontsize=8)
    handles = [Patch(facecolor=c, label=m) for m, c in zip(methods, colours)]
    fig.legend(handles=handles, loc="upper center", ncols=min(nm, 6), fontsize=7, frameon=False)
    return save_figure(fig, out_dir / f"distribution_{dataset}_{metric}")


def overall_average(df: pd.DataFrame, dataset: str, metric: str) -> pd.Series:
    """Per method: mean over regions of the Avg. (mean over subsets of means over cases)."""
    cm = case_matrix(df, dataset, metric)
    if cm.empty:
        return pd.Series(dtype=float)
    per_subset = cm.groupby(level=["subset", "region"]).mean()
    return per_subset.groupby(level="region").mean().mean(axis=0)


def seed_spread(df: pd.DataFrame, dataset: str, metric: str) -> pd.Series:
    """Per method: the std across seeds of :func:`overall_average` (NaN with one seed)."""
    rows = df[(df["dataset"] == dataset) & (df["metric"] == metric)]
    if rows.empty or "seed" not in rows.columns:
        return pd.Series(dtype=float)
    scale = metric_info(metric).scale
    per = rows.groupby(["method", "seed", "region", "subset"])["value"].mean() * scale
    overall = per.groupby(level=["method", "seed", "region"]).mean()
    overall = overall.groupby(level=["method", "seed"]).mean()
    return overall.groupby(level="method").std(ddof=1)


def performance_vs_params(
    df: pd.DataFrame,
    dataset: str,
    out_dir: Path,
    params: Mapping[str, float],
    families: Mapping[str, str],
    metrics: Sequence[str] = ("dice", "hd95", "iou", "sensitivity"),
    cost_label: str = "parameters (M)",
    scale: float = 1e-6,
    stem: str | None = None,
) -> list[Path]:
    """Avg. over regions and subsets against a cost per method (AdaMM paper, figure 9); with
    several seeds, error bars of ± the std across seeds.

    Args:
        params: cost per method (default use: inference parameters); multiplied by ``scale``
            for the axis, which is logarithmic.
        cost_label: x-axis label.
        stem: file name stem (default ``params_<dataset>``).

    Returns no paths when no method has a positive cost.
    """
    metrics = [m for m in metrics if (df["metric"] == m).any()]
    known = {m: p for m, p in params.items() if p is not None and math.isfinite(p) and p > 0}
    if not metrics or not known:
        return []
    fams = sorted({families.get(m, "unknown") for m in known}, key=family_sort_key)
    colour = dict(zip(fams, _colours(len(fams))))
    fig = _new_figure(3.4 * len(metrics), 3.8)
    _margins(fig, 0.7, 0.6, 0.6, 0.8, wspace=0.5)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics):
        avg = overall_average(df[df["method"].isin(list(known))], dataset, metric)
        spread = seed_spread(df, dataset, metric)
        for method, value in avg.items():
            if not np.isfinite(value):
                continue
            x = known[method] * scale
            c = colour[families.get(method, "unknown")]
            ax.scatter(x, value, s=30, color=c, zorder=3)
            err = float(spread.get(method, float("nan")))
            if np.isfinite(err):  # ± std across seeds
                ax.errorbar(x, value, yerr=err, color=c, lw=0.8, capsize=2, zorder=2)
            ax.annotate(method, (x, value), fontsize=6, xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(cost_label, fontsize=8)
        ax.set_ylabel(axis_label(metric), fontsize=8)
        ax.set_title(f"{AVG} over regions and subsets", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(lw=0.3, alpha=0.5)
    handles = [Line2D([], [], ls="", marker="o", color=colour[f], label=f) for f in fams]
    fig.legend(handles=handles, loc="upper center", ncols=min(len(fams), 4), fontsize=7)
    return save_figure(fig, out_dir / (stem or f"params_{dataset}"))


def modality_drop(table: ResultTable, out_dir: Path) -> list[Path]:
    """Change of the full-set value when each single modality is removed, per method and region.

    Drop = value(full set) − value(full set without the modality); for HD95 a negative drop is a
    worsening. Returns no paths when the table lacks the full set or the triples.
    """
    full = FULL.name
    if full not in table.mean.index:
        return []
    triples = {
        mod: Subset(tuple(m != mod for m in MODALITIES)).name  # type: ignore[arg-type]
        for mod in MODALITIES
    }
    mods = [m for m in MODALITIES if triples[m] in table.mean.index]
    if not mods:
        return []
    nm = len(table.methods)
    colours = _colours(nm)
    fig = _new_figure(3.6 * len(table.regions) + 0.5, 3.8)
    _margins(fig, 0.8, 0.5, 0.2, 0.9, wspace=0.4)
    axes = fig.subplots(1, len(table.regions), squeeze=False)[0]
    width = 0.8 / nm
    for ax, region in zip(axes, table.regions):
        for j, method in enumerate(table.methods):
            base = table.mean.loc[full, (region, method)]
            drops = [base - table.mean.loc[triples[m], (region, method)] for m in mods]
            xs = np.arange(len(mods)) + (j - (nm - 1) / 2) * width
            ax.bar(xs, drops, width=width, color=colours[j], label=table.header(method))
        ax.axhline(0, color="black", lw=0.6)
        ax.set_xticks(range(len(mods)), [f"−{m}" for m in mods], fontsize=8)
        ax.set_title(region, fontsize=10)
        ax.set_ylabel(change_label(table.metric), fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(axis="y", lw=0.3, alpha=0.5)
    handles = [Patch(facecolor=c, label=table.header(m)) for m, c in zip(table.methods, colours)]
    fig.legend(handles=handles, loc="upper center", ncols=min(nm, 6), fontsize=7, frameon=False)
    return save_figure(fig, out_dir / f"modality_drop_{table.dataset}_{table.metric}")


def synthesis_plot(df: pd.DataFrame, dataset: str, out_dir: Path) -> list[Path]:
    """Mean synthesis PSNR/SSIM per modality (rows with region = a modality name), if any."""
    rows = df[
        (df["dataset"] == dataset)
        & df["metric"].isin(["psnr", "ssim"])
        & df["region"].isin(MODALITIES)
    ]
    if rows.empty:
        return []
    metrics = sorted(rows["metric"].unique())
    fig = _new_figure(4.0 * len(metrics), 3.2)
    _margins(fig, 0.6, 0.5, 0.2, 0.4, wspace=0.3)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics):
        m = rows[rows["metric"] == metric].groupby(["method", "region"])["value"].mean().unstack()
        m = m.reindex(columns=[c for c in MODALITIES if c in m.columns])
        colours = _colours(len(m.index))
        width = 0.8 / max(len(m.index), 1)
        for j, (method, vals) in enumerate(m.iterrows()):
            xs = np.arange(len(m.columns)) + (j - (len(m.index) - 1) / 2) * width
            ax.bar(xs, vals.to_numpy(), width=width, color=colours[j], label=method)
        ax.set_xticks(range(len(m.columns)), list(m.columns))
        ax.set_title(metric.upper(), fontsize=10)
        ax.legend(fontsize=7)
    return save_figure(fig, out_dir / f"synthesis_{dataset}")


FIGURE_CAPTIONS: dict[str, str] = {
    "heatmap": "{label} of every method (rows) on every modality subset and the {avg} "
    "(columns), one panel per region.",
    "distribution": "Per-case {label} per modality subset: box = quartiles, whiskers = 1.5 IQR, "
    "dots = outliers; one colour per method, one panel per region.",
    "params": "{avg} over regions and subsets against the number of parameters used at inference "
    "(log axis); colour = family; error bars (with several seeds): ± std across seeds.",
    "cost": "{avg} over regions and subsets against a cost (log axis); colour = family; "
    "error bars (with several seeds): ± std across seeds.",
    "modality_drop": "Drop of the full-set {label} when one modality is removed "
    "(full set minus the set without it), per method and region.",
    "qualitative": "One test case, axial slice with the largest tumour area, on its T1ce image: "
    "reference contours dashed, predictions solid (WT yellow, TC red, ET cyan).",
    "synthesis": "Mean PSNR and SSIM of the synthesised modalities.",
}


def figure_caption(path: str | Path) -> str:
    """A sentence describing a report figure, from its file name."""
    stem = Path(path).stem
    metric = stem.rsplit("_", 1)[-1]
    for key, text in FIGURE_CAPTIONS.items():
        if stem.startswith(key + "_"):
            dataset = stem[len(key) + 1 :]
            if key in ("heatmap", "distribution", "modality_drop"):
                dataset = dataset.rsplit("_", 1)[0]
            label = metric_info(metric).label if metric in _KNOWN_METRICS else "value"
            return f"{dataset}: " + text.format(label=label, avg=AVG)
    return stem


_KNOWN_METRICS = ("dice", "hd95", "iou", "sensitivity", "specificity")
