"""Per-subset result tables in the field's layout, with Markdown, LaTeX and CSV renderers.

Layout: one row per subset in the published order (:data:`~mmbench.subsets.SUBSET_NAMES`)
marked ● / ○ for T1, T1ce, T2, FLAIR; column groups per region with one column per method; an
"Avg." row (mean over subsets of the per-subset means over cases) and its bootstrap 95 % interval;
the best value per row and region in bold; ``*`` where a method differs from the baseline
(Wilcoxon signed-rank over cases, Holm-corrected over the table).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from mmbench.benchmark.schema import REGIONS
from mmbench.errors import ReportError
from mmbench.reporting.stats import ALPHA, bootstrap_avg_ci, holm, paired_wilcoxon_many
from mmbench.subsets import MODALITIES, SUBSET_NAMES, as_subset

AVG = "Avg."


@dataclass(frozen=True)
class MetricInfo:
    """How a metric is shown: label, scale factor, direction and decimals."""

    label: str
    scale: float
    higher_better: bool
    decimals: int


METRICS: dict[str, MetricInfo] = {
    "dice": MetricInfo("Dice (%)", 100.0, True, 2),
    "hd95": MetricInfo("HD95 (mm)", 1.0, False, 2),
    "iou": MetricInfo("IoU (%)", 100.0, True, 2),
    "sensitivity": MetricInfo("Sensitivity (%)", 100.0, True, 2),
    "specificity": MetricInfo("Specificity (%)", 100.0, True, 3),
}


class MixedPolicyError(ReportError):
    """The rows of one table were computed under different empty-mask/HD95 conventions."""


def metric_info(metric: str) -> MetricInfo:
    """Display information of ``metric`` (unknown metrics: shown as is, higher is better)."""
    return METRICS.get(metric, MetricInfo(metric, 1.0, True, 3))


def _fmt_distance(value: float) -> str:
    return (
        "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:g}"
    )


def describe_policy(empty_policy: str, hd95_mode: str, max_distance: float) -> str:
    """One sentence naming the empty-mask policy, the HD95 mode and the distance constant."""
    try:  # the metrics module words it the same way for every output, when it is there
        from mmbench.metrics import MetricPolicy

        text = MetricPolicy(
            empty=empty_policy, hd95_mode=hd95_mode, max_distance=float(max_distance)
        ).describe()
        if text:
            text = str(text)
            if f"{float(max_distance):.2f}" not in text:
                text += f"; D = {float(max_distance):.2f} mm (not used by this policy)"
            return text
    except Exception:  # noqa: BLE001 - fall back to our own wording on any API mismatch
        pass
    rules = {
        "penalty": "one-empty pair → HD95 = D, Dice 0; both empty → HD95 0, Dice 1",
        "zero": "any empty mask → HD95 0",
        "asymmetric": "prediction empty → HD95 0; reference empty → HD95 = D; both empty → 0",
        "nan": "one-empty pair → HD95 = D, Dice 0; both empty → excluded (NaN)",
    }
    rule = rules.get(str(empty_policy), "rule unknown")
    return (
        f"Empty-mask policy `{empty_policy}` ({rule}); D = {_fmt_distance(max_distance)} mm; "
        f"HD95 mode `{hd95_mode}`."
    )


def table_policy(rows: pd.DataFrame) -> tuple[str, str, float] | None:
    """The single (empty_policy, hd95_mode, max_distance) of ``rows``.

    Raises:
        MixedPolicyError: when the rows carry more than one convention.
    """
    cols = ["empty_policy", "hd95_mode", "max_distance"]
    if rows.empty or not set(cols) <= set(rows.columns) or rows[cols].isna().all().all():
        return None
    combos = rows[cols].astype(str).drop_duplicates()
    if len(combos) > 1:
        listing = "; ".join(" / ".join(r) for r in combos.itertuples(index=False))
        raise MixedPolicyError(
            "refusing to average across metric conventions; rows mix "
            f"(empty_policy / hd95_mode / max_distance): {listing}. "
            "Re-evaluate the runs under one policy or report them separately."
        )
    first = rows.iloc[0]
    try:
        dist = float(first["max_distance"])
    except (TypeError, ValueError):
        dist = float("nan")
    return str(first["empty_policy"]), str(first["hd95_mode"]), dist


def empty_reference_counts(
    df: pd.DataFrame, dataset: str, regions: Sequence[str] = REGIONS
) -> dict[str, tuple[int, int]] | None:
    """Per region, ``(cases with an empty reference, cases)`` from the ``ref_voxels`` rows.

    Returns ``None`` when the results hold no ``ref_voxels`` rows for ``dataset``.
    """
    rv = df[(df["dataset"] == dataset) & (df["metric"] == "ref_voxels")]
    if rv.empty:
        return None
    out: dict[str, tuple[int, int]] = {}
    for region in regions:
        r = rv[rv["region"] == region]
        if r.empty:
            continue
        out[region] = (int(r.loc[r["value"] == 0, "case"].nunique()), int(r["case"].nunique()))
    return out


def format_empty_counts(counts: dict[str, tuple[int, int]] | None) -> str:
    if counts is None:
        return "Cases with an empty reference: unknown (no `ref_voxels` rows)."
    parts = ", ".join(f"{r} {e}/{n}" for r, (e, n) in counts.items())
    return f"Cases with an empty reference: {parts}."


def case_matrix(
    df: pd.DataFrame,
    dataset: str,
    metric: str,
    regions: Sequence[str] = REGIONS,
    methods: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Per-case values, averaged over seeds and folds, scaled for display.

    Returns:
        DataFrame indexed by (subset, region, case) with one column per method.
    """
    sel = (df["dataset"] == dataset) & (df["metric"] == metric) & df["region"].isin(regions)
    if methods is not None:
        sel &= df["method"].isin(methods)
    sub = df.loc[sel, ["subset", "region", "case", "method", "value"]]
    cm = sub.groupby(["subset", "region", "case", "method"], sort=True)["value"].mean()
    out = cm.unstack("method") * metric_info(metric).scale
    if methods is not None:
        out = out.reindex(columns=[m for m in methods if m in out.columns])
    return out


@dataclass
class ResultTable:
    """One table: a dataset, a metric, subsets as rows, (region, method) as columns.

    ``mean``/``std``/``pvalue``/``significant`` share the index (subset names, then ``"Avg."``) and
    the column MultiIndex (region, method). ``ci`` maps (region, method) to the bootstrap interval
    of the Avg. row.
    """

    dataset: str
    metric: str
    regions: list[str]
    methods: list[str]
    mean: pd.DataFrame
    std: pd.DataFrame
    pvalue: pd.DataFrame
    significant: pd.DataFrame
    ci: dict[tuple[str, str], tuple[float, float]]
    baseline: str | None
    n_cases: dict[str, int]
    notes: list[str] = field(default_factory=list)
    with_std: bool = False
    policy: tuple[str, str, float] | None = None

    @property
    def info(self) -> MetricInfo:
        return metric_info(self.metric)

    @property
    def rows(self) -> list[str]:
        return list(self.mean.index)

    @cached_property
    def _cells(self) -> tuple[dict[str, int], dict[tuple[str, str], int], np.ndarray]:
        rows = {r: i for i, r in enumerate(self.mean.index)}
        cols = {c: j for j, c in enumerate(self.mean.columns)}
        stack = np.stack(
            [
                self.mean.to_numpy(dtype=float),
                self.std.reindex_like(self.mean).to_numpy(dtype=float),
                self.best.to_numpy(dtype=float),
                self.significant.reindex_like(self.mean).to_numpy(dtype=float),
            ]
        )
        return rows, cols, stack

    def cell(self, row: str, region: str, method: str) -> tuple[float, float, bool, bool]:
        """``(mean, std, is_best, is_significant)`` of one cell (fast lookup for renderers)."""
        rows, cols, stack = self._cells
        v = stack[:, rows[row], cols[(region, method)]]
        return float(v[0]), float(v[1]), bool(v[2]), bool(v[3])

    @cached_property
    def best(self) -> pd.DataFrame:
        """Boolean frame: True where the value is the row's best within its region group,
        compared at display precision so that shown ties are all bold."""
        shown = self.mean.round(self.info.decimals)
        out = pd.DataFrame(False, index=shown.index, columns=shown.columns)
        for region in self.regions:
            block = shown[region]
            target = block.max(axis=1) if self.info.higher_better else block.min(axis=1)
            out[region] = block.eq(target, axis=0) & block.notna()
        return out


def build_table(
    df: pd.DataFrame,
    dataset: str,
    metric: str,
    regions: Sequence[str] = REGIONS,
    methods: Sequence[str] | None = None,
    baseline: str | None = None,
    with_std: bool = False,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = ALPHA,
    empty_counts: dict[str, tuple[int, int]] | None = None,
) -> ResultTable:
    """Build one :class:`ResultTable` from tidy results.

    Args:
        df: tidy results (see :mod:`mmbench.reporting.load`).
        dataset, metric: what the table shows.
        regions: column groups, in order (those without rows are dropped).
        methods: columns within each group, in order (default: sorted method names).
        baseline: method every other is tested against; ``None`` picks the best Avg. (mean over
            regions) of this table.
        with_std: render mean ± std.
        n_boot, seed: bootstrap resamples and seed for the Avg. interval.
        alpha: significance level after Holm correction.
        empty_counts: per-region empty-reference counts for the footnote.

    Raises:
        MixedPolicyError: the table's rows mix metric conventions.
        ValueError: no rows for ``dataset``/``metric``.
    """
    info = metric_info(metric)
    rows = df[(df["dataset"] == dataset) & (df["metric"] == metric) & df["region"].isin(regions)]
    if rows.empty:
        raise ReportError(f"no {metric} rows for dataset {dataset!r}")
    policy = table_policy(rows)
    have_methods = set(rows["method"].unique())
    have_regions = set(rows["region"].unique())
    if methods is None:
        methods = sorted(have_methods)
    methods = [m for m in methods if m in have_methods]
    regions = [r for r in regions if r in have_regions]
    cm = case_matrix(df, dataset, metric, regions, methods)

    present = set(cm.index.get_level_values("subset"))
    subsets = [s for s in SUBSET_NAMES if s in present]
    subsets += sorted(present - set(subsets))
    columns = pd.MultiIndex.from_product([regions, methods], names=["region", "method"])
    index = pd.Index(subsets + [AVG], name="subset")

    grouped = cm.groupby(level=["subset", "region"])
    sub_mean = grouped.mean().unstack("region")
    sub_std = grouped.std(ddof=1).unstack("region")
    per_case_avg = cm.groupby(level=["region", "case"]).mean()
    avg_mean = sub_mean.mean(axis=0)
    avg_std = per_case_avg.groupby(level="region").std(ddof=1).stack().swaplevel()

    def assemble(per_subset: pd.DataFrame, avg: pd.Series) -> pd.DataFrame:
        out = per_subset.swaplevel(axis=1).reindex(index=index, columns=columns)
        for (method, region), v in avg.items():
            if (region, method) in out.columns:
                out.loc[AVG, (region, method)] = v
        return out.astype(float)

    mean = assemble(sub_mean, avg_mean)
    std = assemble(sub_std, avg_std)

    scores = mean.loc[AVG].groupby(level="method").mean()
    scores = scores if info.higher_better else -scores
    if baseline is None and len(scores.dropna()):
        baseline = str(scores.idxmax())
    if baseline is not None and baseline not in methods:
        raise ReportError(f"baseline {baseline!r} is not among the methods {methods}")

    pvalue = pd.DataFrame(np.nan, index=index, columns=columns)
    if baseline is not None and len(methods) > 1:
        keys: list[tuple[str, tuple[str, str]]] = []
        pairs: list[tuple[np.ndarray, np.ndarray]] = []
        blocks = [(s, r, b) for (s, r), b in grouped]
        blocks += [(AVG, r, b) for r, b in per_case_avg.groupby(level="region")]
        for row, region, block in blocks:
            base = block[baseline].to_numpy(dtype=float)
            for m in methods:
                if m != baseline:
                    keys.append((row, (region, m)))
                    pairs.append((base, block[m].to_numpy(dtype=float)))
        adjusted = holm(paired_wilcoxon_many(pairs))
        rows_at = {r: i for i, r in enumerate(index)}
        cols_at = {c: j for j, c in enumerate(columns)}
        pv = pvalue.to_numpy(copy=True)
        for (row, col), p in zip(keys, adjusted):
            pv[rows_at[row], cols_at[col]] = p
        pvalue = pd.DataFrame(pv, index=index, columns=columns)
    significant = pvalue < alpha

    ci: dict[tuple[str, str], tuple[float, float]] = {}
    for region in regions:
        by_region = cm.xs(region, level="region")
        for m in methods:
            matrix = by_region[m].unstack("subset")
            ci[(region, m)] = bootstrap_avg_ci(matrix.to_numpy(), n_boot=n_boot, seed=seed)

    n_cases = {m: int(cm[m].dropna().index.get_level_values("case").nunique()) for m in methods}
    notes = [
        f"{info.label}: mean over cases per subset (seeds/folds averaged per case first); "
        f"{AVG} = mean over the {len(subsets)} subsets. Bold: best per row and region "
        f"({'higher' if info.higher_better else 'lower'} is better).",
        f"Cases per method: {', '.join(f'{m} {n}' for m, n in n_cases.items())}.",
    ]
    if baseline is not None and len(methods) > 1:
        notes.append(
            f"*: differs from {baseline} (two-sided Wilcoxon signed-rank test paired over cases, "
            f"Holm-corrected over this table's {int(pvalue.notna().sum().sum())} tests, "
            f"p < {alpha:g})."
        )
    notes.append(
        f"95 % CI of {AVG}: percentile bootstrap over cases ({n_boot} resamples, seed {seed})."
    )
    if policy is not None:
        notes.append(describe_policy(*policy))
    else:
        notes.append(
            "Empty-mask policy, HD95 mode and distance constant: not recorded in the rows."
        )
    if empty_counts is not None or metric == "hd95":
        notes.append(format_empty_counts(empty_counts))
    return ResultTable(
        dataset=dataset,
        metric=metric,
        regions=list(regions),
        methods=list(methods),
        mean=mean,
        std=std,
        pvalue=pvalue,
        significant=significant,
        ci=ci,
        baseline=baseline,
        n_cases=n_cases,
        notes=notes,
        with_std=with_std,
        policy=policy,
    )


# ---------------------------------------------------------------- rendering

_TEX_ESCAPE = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def tex_escape(text: str) -> str:
    """Escape LaTeX special characters in free text."""
    return "".join(_TEX_ESCAPE.get(c, c) for c in str(text))


def _num(value: float, decimals: int) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.{decimals}f}"


def cell_text(table: ResultTable, row: str, region: str, method: str, style: str) -> str:
    """Text of one cell in ``style`` ``"md"``, ``"tex"``, ``"html"`` or ``"plain"``."""
    d = table.info.decimals
    v, s, best, sig = table.cell(row, region, method)
    text = _num(v, d)
    if table.with_std and not math.isnan(v):
        pm = {"tex": r" $\pm$ ", "md": " ± ", "html": " ± "}.get(style, " ± ")
        text += pm + _num(s, d)
    if style == "plain":
        return text
    if style == "md":
        text = f"**{text}**" if best else text
        return text + ("\\*" if sig else "")
    if style == "tex":
        text = rf"\textbf{{{text}}}" if best else text
        return text + (r"$^{*}$" if sig else "")
    text = f"<b>{text}</b>" if best else text
    return text + ("<sup>*</sup>" if sig else "")


def modality_marks(row: str, style: str) -> list[str]:
    """● / ○ per modality of a subset row (blank for the Avg. row)."""
    if row == AVG:
        return [""] * len(MODALITIES)
    try:
        mask = as_subset(row).mask
    except ValueError:
        return ["?"] * len(MODALITIES)
    on, off = (r"$\bullet$", r"$\circ$") if style == "tex" else ("●", "○")
    return [on if m else off for m in mask]


def ci_text(table: ResultTable, region: str, method: str, style: str = "md") -> str:
    lo, hi = table.ci.get((region, method), (float("nan"), float("nan")))
    if math.isnan(lo):
        return "–"
    d = table.info.decimals
    return f"[{lo:.{d}f}, {hi:.{d}f}]"


def title(table: ResultTable) -> str:
    return f"{table.info.label} on {table.dataset}"


def to_markdown(table: ResultTable) -> str:
    """GitHub-flavoured Markdown table with notes below."""
    head = list(MODALITIES) + [f"{r} {m}" for r in table.regions for m in table.methods]
    lines = [f"### {title(table)}", ""]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join([":-:"] * len(MODALITIES) + ["--:"] * (len(head) - 4)) + "|")
    for row in table.rows:
        marks = modality_marks(row, "md")
        if row == AVG:
            marks = ["**Avg.**", "", "", ""]
        cells = [cell_text(table, row, r, m, "md") for r in table.regions for m in table.methods]
        lines.append("| " + " | ".join(marks + cells) + " |")
    ci_cells = [ci_text(table, r, m) for r in table.regions for m in table.methods]
    lines.append("| " + " | ".join(["95 % CI", "", "", ""] + ci_cells) + " |")
    lines.append("")
    lines.extend(f"- {n}" for n in table.notes)
    lines.append("")
    return "\n".join(lines)


def to_latex(table: ResultTable, label: str | None = None) -> str:
    """A booktabs ``table`` environment, ready to paste (needs ``booktabs`` and ``graphicx``)."""
    nm = len(table.methods)
    ncol = len(MODALITIES) + nm * len(table.regions)
    spec = "c" * len(MODALITIES) + ("r" * nm) * len(table.regions)
    label = label or f"tab:{table.dataset}-{table.metric}".replace("_", "-")
    out = [
        "% requires \\usepackage{booktabs,graphicx}",
        "\\begin{table}[t]",
        "\\centering",
        f"\\caption{{{tex_escape(title(table))}}}",
        f"\\label{{{label}}}",
        "\\resizebox{\\textwidth}{!}{%",
        f"\\begin{{tabular}}{{{spec}}}",
        "\\toprule",
    ]
    group = [f"\\multicolumn{{{len(MODALITIES)}}}{{c}}{{Modalities}}"]
    group += [f"\\multicolumn{{{nm}}}{{c}}{{{tex_escape(r)}}}" for r in table.regions]
    out.append(" & ".join(group) + " \\\\")
    rules = [f"\\cmidrule(lr){{1-{len(MODALITIES)}}}"]
    for i in range(len(table.regions)):
        start = len(MODALITIES) + i * nm + 1
        rules.append(f"\\cmidrule(lr){{{start}-{start + nm - 1}}}")
    out.append(" ".join(rules))
    head = list(MODALITIES) + [tex_escape(m) for _ in table.regions for m in table.methods]
    out.append(" & ".join(head) + " \\\\")
    out.append("\\midrule")
    for row in table.rows:
        cells = [cell_text(table, row, r, m, "tex") for r in table.regions for m in table.methods]
        if row == AVG:
            out.append("\\midrule")
            lead = [f"\\multicolumn{{{len(MODALITIES)}}}{{c}}{{Avg.}}"]
        else:
            lead = modality_marks(row, "tex")
        out.append(" & ".join(lead + cells) + " \\\\")
    ci_cells = [ci_text(table, r, m) for r in table.regions for m in table.methods]
    out.append(
        " & ".join([f"\\multicolumn{{{len(MODALITIES)}}}{{c}}{{95\\,\\% CI}}"] + ci_cells) + " \\\\"
    )
    out += ["\\bottomrule", "\\end{tabular}%", "}"]
    notes = " ".join(tex_escape(n) for n in table.notes)
    out.append(f"\\par\\smallskip{{\\footnotesize {notes}\\par}}")
    out.append("\\end{table}")
    assert ncol == len(head)
    return "\n".join(out) + "\n"


def to_frame(table: ResultTable) -> pd.DataFrame:
    """Wide numeric frame for CSV: modality flags, ``<region>/<method>`` means, optional
    ``/std``, ``/p_holm``, and the Avg. interval as two extra rows."""
    data: dict[str, list] = {"subset": list(table.rows)}
    for i, mod in enumerate(MODALITIES):
        data[mod] = [
            "" if row == AVG else int(as_subset(row).mask[i]) if row in SUBSET_NAMES else ""
            for row in table.rows
        ]
    for r in table.regions:
        for m in table.methods:
            data[f"{r}/{m}"] = list(table.mean[(r, m)])
            if table.with_std:
                data[f"{r}/{m}/std"] = list(table.std[(r, m)])
            data[f"{r}/{m}/p_holm"] = list(table.pvalue[(r, m)])
    frame = pd.DataFrame(data)
    extra = []
    for k, name in ((0, "Avg. 95% CI low"), (1, "Avg. 95% CI high")):
        row = {"subset": name, **{mod: "" for mod in MODALITIES}}
        for r in table.regions:
            for m in table.methods:
                row[f"{r}/{m}"] = table.ci[(r, m)][k]
        extra.append(row)
    return pd.concat([frame, pd.DataFrame(extra)], ignore_index=True)


def write_table(table: ResultTable, out_dir: str | Path, formats: Sequence[str]) -> list[Path]:
    """Write ``table`` as ``<dataset>_<metric>.{md,tex,csv}`` for each of ``formats``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{table.dataset}_{table.metric}"
    written = []
    for fmt in formats:
        suffix = {"markdown": "md", "latex": "tex"}.get(fmt, fmt)
        path = out_dir / f"{stem}.{suffix}"
        if path.suffix == ".md":
            path.write_text(to_markdown(table), encoding="utf-8")
        elif path.suffix == ".tex":
            path.write_text(to_latex(table), encoding="utf-8")
        elif path.suffix == ".csv":
            to_frame(table).to_csv(path, index=False)
        else:
            raise ReportError(f"unknown table format {fmt!r}; use md, tex, csv")
        written.append(path)
    return written
