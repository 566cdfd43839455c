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
from mmbench.reporting.stats import (
    ALPHA,
    bootstrap_avg_ci,
    holm,
    min_wilcoxon_p,
    paired_wilcoxon_many,
)
from mmbench.reporting.units import PARTIAL_MARK
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
    partial: list[str] = field(default_factory=list)
    n_seeds: dict[str, int] = field(default_factory=dict)
    std_kind: str = "cases"

    def header(self, method: str) -> str:
        """Method name as a column/row header (``†`` after a method scored on fewer units)."""
        return f"{method}{PARTIAL_MARK}" if method in self.partial else method

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
        compared at display precision so that shown ties are all bold. Methods in
        :attr:`partial` (means over fewer units) are never bold and do not set the best."""
        shown = self.mean.round(self.info.decimals)
        out = pd.DataFrame(False, index=shown.index, columns=shown.columns)
        for region in self.regions:
            block = shown[region].drop(columns=self.partial, errors="ignore")
            target = block.max(axis=1) if self.info.higher_better else block.min(axis=1)
            for m in block.columns:
                out[(region, m)] = block[m].eq(target) & block[m].notna()
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
    partial: Sequence[str] = (),
    coverage_note: str | None = None,
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
        partial: methods scored on fewer units than the others (see
            :mod:`mmbench.reporting.units`): marked ``†``, never bold, never the default baseline.
        coverage_note: the sentence saying which units the table uses.

    With more than one seed for some method, the ± of a cell is the std across seeds of the
    per-seed means (always shown), not the std over cases.

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

    partial = [m for m in partial if m in methods]
    seeds_per_method = rows.groupby("method")["seed"].nunique().to_dict()
    n_seeds = {m: int(seeds_per_method.get(m, 1)) for m in methods}
    std_kind = "cases"
    if max(n_seeds.values(), default=1) > 1:
        std_kind = "seeds"
        with_std = True
        sub_std, avg_std = _seed_std(rows, info.scale)
        std = assemble(sub_std, avg_std)

    scores = mean.loc[AVG].groupby(level="method").mean()
    scores = scores.drop(index=partial, errors="ignore")
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
    ]
    if coverage_note:
        notes.append(coverage_note)
    notes.append(f"Cases per method: {', '.join(f'{m} {n}' for m, n in n_cases.items())}.")
    if std_kind == "seeds":
        notes.append(
            "±: std across seeds of the per-seed means (seeds per method: "
            + ", ".join(f"{m} {n}" for m, n in n_seeds.items())
            + ")."
        )
    elif with_std:
        notes.append(f"±: std over cases ({AVG}: of each case's mean over subsets).")
    if baseline is not None and len(methods) > 1:
        n_tests = int(pvalue.notna().sum().sum())
        notes.append(
            f"*: differs from {baseline} (two-sided Wilcoxon signed-rank test paired over cases, "
            f"Holm-corrected over this table's {n_tests} tests, p < {alpha:g})."
        )
        reach = power_note(max(n_cases.values(), default=0), n_tests, alpha)
        if reach:
            notes.append(reach)
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
        partial=partial,
        n_seeds=n_seeds,
        std_kind=std_kind,
    )


def _seed_std(rows: pd.DataFrame, scale: float) -> tuple[pd.DataFrame, pd.Series]:
    """Std across seeds of the per-seed means: per (subset, region) and of the Avg.

    Returns a frame shaped like the per-subset statistics of :func:`build_table` (index subset,
    columns (method, region)) and a Series indexed by (method, region).
    """
    per_seed = rows.groupby(["method", "seed", "subset", "region"])["value"].mean() * scale
    sub = per_seed.groupby(level=["subset", "region", "method"]).std(ddof=1)
    sub_std = sub.unstack(["method", "region"])
    seed_avg = per_seed.groupby(level=["method", "seed", "region"]).mean()
    avg_std = seed_avg.groupby(level=["method", "region"]).std(ddof=1)
    return sub_std, avg_std


def power_note(n_cases: int, n_tests: int, alpha: float = ALPHA) -> str | None:
    """A sentence when no test of the table can reach ``alpha`` after Holm, else ``None``.

    The smallest two-sided p of an exact Wilcoxon signed-rank test on ``n`` non-zero paired
    differences is ``2 / 2**n`` (all differences of one sign); Holm multiplies the smallest
    p-value of ``m`` tests by ``m``.
    """
    if n_cases <= 0 or n_tests <= 0:
        return None
    p_min = min_wilcoxon_p(n_cases)
    if p_min * n_tests < alpha:
        return None
    p_holm = min(1.0, p_min * n_tests)
    return (
        f"With {n_cases} paired cases the smallest possible two-sided Wilcoxon p is "
        f"{p_min:.3g}, and Holm over {n_tests} tests makes it at least {p_holm:.3g}"
        f": no * can appear at p < {alpha:g}, so its absence shows nothing."
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
    # OT1 fonts print these ASCII characters as other glyphs outside math ("<" as "¡")
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "|": r"\textbar{}",
    '"': r"\textquotedbl{}",
    # non-ASCII characters the notes use, in commands every LaTeX installation knows
    "–": "--",
    "—": "---",
    "−": "$-$",
    "±": r"$\pm$",
    "×": r"$\times$",
    "→": r"$\rightarrow$",
    "↔": r"$\leftrightarrow$",
    "≤": r"$\leq$",
    "≥": r"$\geq$",
    "≈": r"$\approx$",
    "·": r"$\cdot$",
    "●": r"$\bullet$",
    "○": r"$\circ$",
    "†": r"\textsuperscript{\dag}",
    "µ": r"$\mu$",
    "…": r"\ldots{}",
    "°": r"\textdegree{}",
    "³": r"\textsuperscript{3}",
    "²": r"\textsuperscript{2}",
    "’": "'",
    "‘": "`",
    "“": "``",
    "”": "''",
    "\u00a0": "~",
}


def tex_escape(text: str) -> str:
    """Escape LaTeX special characters (and the non-ASCII symbols the report uses) in free text.

    Other non-ASCII characters are passed through (``pdflatex`` reads UTF-8 since 2018 and
    stops with an error on a character it has no glyph for, so a gap shows instead of a wrong
    glyph).
    """
    return "".join(_TEX_ESCAPE.get(c, c) for c in str(text))


def _num(value: float, decimals: int) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.{decimals}f}"


def cell_text(
    table: ResultTable, row: str, region: str, method: str, style: str, std: bool | None = None
) -> str:
    """Text of one cell in ``style`` ``"md"``, ``"tex"``, ``"html"`` or ``"plain"`` (``std``:
    show the ± part, default the table's ``with_std``). In LaTeX the ± part sits under the
    mean in small type, so that a column stays as wide as its numbers."""
    d = table.info.decimals
    v, s, best, sig = table.cell(row, region, method)
    text = _num(v, d)
    show = table.with_std if std is None else std
    show = show and not math.isnan(v) and not math.isnan(s)
    if style == "tex":
        text = text.replace("–", "--")
        text = rf"\textbf{{{text}}}" if best else text
        text += r"$^{*}$" if sig else ""
        if show:
            text = (
                rf"\begin{{tabular}}[t]{{@{{}}r@{{}}}}{text}\\"
                rf"{{\scriptsize$\pm${_num(s, d)}}}\end{{tabular}}"
            )
        return text
    if show:
        text += " ± " + _num(s, d)
    if style == "plain":
        return text
    if style == "md":
        text = f"**{text}**" if best else text
        return text + ("\\*" if sig else "")
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
    """The Avg.'s interval ``[lo, hi]``; in LaTeX stacked on two lines (as wide as a value)."""
    lo, hi = table.ci.get((region, method), (float("nan"), float("nan")))
    if math.isnan(lo):
        return "--" if style == "tex" else "–"
    d = table.info.decimals
    if style == "tex":
        return rf"\begin{{tabular}}[t]{{@{{}}r@{{}}}}[{lo:.{d}f},\\ {hi:.{d}f}]\end{{tabular}}"
    return f"[{lo:.{d}f}, {hi:.{d}f}]"


def title(table: ResultTable) -> str:
    return f"{table.info.label} on {table.dataset}"


def to_markdown(table: ResultTable) -> str:
    """GitHub-flavoured Markdown table with notes below."""
    head = list(MODALITIES) + [
        f"{r} {table.header(m)}" for r in table.regions for m in table.methods
    ]
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


LATEX_LAYOUTS: tuple[str, ...] = ("auto", "columns", "rows")
"""``columns``: the field's layout (subsets as rows, one column per region and method, one table);
``rows``: one table per region with methods as rows and the subsets as columns, which stays
readable with 15+ methods; ``auto``: ``columns`` up to :data:`AUTO_MAX_COLUMNS` method columns."""

AUTO_MAX_COLUMNS = 9

TEX_PREAMBLE = r"\usepackage{booktabs,graphicx}"
"""What a document needs to ``\\input`` the generated tables."""


def fit_to_width(body: list[str]) -> list[str]:
    r"""Wrap a ``tabular`` so that it is shrunk to ``\linewidth`` when (and only when) wider.

    ``\resizebox`` with ``\width`` (the natural width, graphicx) keeps narrow tables at their
    natural size instead of blowing them up to the text width.
    """
    return [
        r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%",
        *body,
        "}",
    ]


def notes_tex(notes: Sequence[str]) -> str:
    """The notes as a small paragraph under a table."""
    sentences = [n if n.rstrip().endswith((".", ":")) else n.rstrip() + "." for n in notes]
    text = " ".join(tex_escape(n) for n in sentences)
    return rf"\par\smallskip{{\footnotesize\raggedright {text}\par}}"


def resolve_layout(table: ResultTable, layout: str = "auto") -> str:
    """``columns`` or ``rows`` for ``layout`` (see :data:`LATEX_LAYOUTS`)."""
    if layout not in LATEX_LAYOUTS:
        raise ReportError(f"latex layout must be one of {', '.join(LATEX_LAYOUTS)}; got {layout!r}")
    if layout == "auto":
        wide = len(table.methods) * len(table.regions) > AUTO_MAX_COLUMNS
        return "rows" if wide else "columns"
    return layout


def to_latex(table: ResultTable, label: str | None = None, layout: str = "auto") -> str:
    r"""``table`` environment(s) with booktabs rules, ready to paste (needs :data:`TEX_PREAMBLE`).

    Every tabular is shrunk to ``\linewidth`` only when it is wider (:func:`fit_to_width`);
    ``layout`` picks the field's layout or one table per region with methods as rows.
    """
    label = label or f"tab:{table.dataset}-{table.metric}".replace("_", "-")
    if resolve_layout(table, layout) == "rows":
        return "\n".join(
            _latex_rows(table, region, f"{label}-{region.lower()}") for region in table.regions
        )
    return _latex_columns(table, label)


def _latex_columns(table: ResultTable, label: str) -> str:
    nm = len(table.methods)
    nmod = len(MODALITIES)
    spec = "c" * nmod + ("r" * nm) * len(table.regions)
    body = [f"\\begin{{tabular}}{{{spec}}}", "\\toprule"]
    group = [f"\\multicolumn{{{nmod}}}{{c}}{{Modalities}}"]
    group += [f"\\multicolumn{{{nm}}}{{c}}{{{tex_escape(r)}}}" for r in table.regions]
    body.append(" & ".join(group) + " \\\\")
    rules = [f"\\cmidrule(lr){{1-{nmod}}}"]
    for i in range(len(table.regions)):
        start = nmod + i * nm + 1
        rules.append(f"\\cmidrule(lr){{{start}-{start + nm - 1}}}")
    body.append(" ".join(rules))
    # Method names set vertically (graphicx's \rotatebox): each column is as wide as its numbers.
    names = [rf"\rotatebox{{90}}{{{tex_escape(table.header(m))}}}" for m in table.methods]
    head = [rf"\multicolumn{{1}}{{c}}{{{m}}}" for m in MODALITIES] + names * len(table.regions)
    body.append(" & ".join(head) + " \\\\")
    body.append("\\midrule")
    for row in table.rows:
        cells = [cell_text(table, row, r, m, "tex") for r in table.regions for m in table.methods]
        if row == AVG:
            body.append("\\midrule")
            lead = [f"\\multicolumn{{{nmod}}}{{c}}{{Avg.}}"]
        else:
            lead = modality_marks(row, "tex")
        body.append(" & ".join(lead + cells) + " \\\\")
    ci_cells = [ci_text(table, r, m, "tex") for r in table.regions for m in table.methods]
    body.append(" & ".join([f"\\multicolumn{{{nmod}}}{{c}}{{95\\,\\% CI}}"] + ci_cells) + " \\\\")
    body += ["\\bottomrule", "\\end{tabular}%"]
    out = [
        f"% requires {TEX_PREAMBLE}",
        "\\begin{table}[t]",
        "\\centering",
        "\\setlength{\\tabcolsep}{3pt}",
        f"\\caption{{{tex_escape(title(table))}}}",
        f"\\label{{{label}}}",
        *fit_to_width(body),
        notes_tex(table.notes),
        "\\end{table}",
    ]
    return "\n".join(out) + "\n"


def _latex_rows(table: ResultTable, region: str, label: str) -> str:
    """One region: methods as rows, the subsets (● / ○ headers) and Avg. as columns."""
    subsets = [r for r in table.rows if r != AVG]
    ncols = len(subsets) + 2  # Avg. and its CI
    spec = "l" + "c" * len(subsets) + "rc"
    body = [f"\\begin{{tabular}}{{{spec}}}", "\\toprule"]
    marks = {s: modality_marks(s, "tex") for s in subsets}
    for i, mod in enumerate(MODALITIES):
        cells = [marks[s][i] for s in subsets]
        tail = ["", ""]
        if i == len(MODALITIES) - 1:
            tail = ["Avg.", "95\\,\\% CI"]
        body.append(" & ".join([mod, *cells, *tail]) + " \\\\")
    body.append("\\midrule")
    for m in table.methods:
        # ± only on the Avg.: 15 columns of "mean ± std" would not fit any page
        cells = [cell_text(table, s, region, m, "tex", std=False) for s in subsets]
        cells.append(cell_text(table, AVG, region, m, "tex"))
        cells.append(ci_text(table, region, m, "tex"))
        body.append(" & ".join([tex_escape(table.header(m)), *cells]) + " \\\\")
    body += ["\\bottomrule", "\\end{tabular}%"]
    assert all(line.count(" & ") == ncols for line in body if line.endswith("\\\\"))
    notes = [n.replace("best per row and region", "best per subset (column)") for n in table.notes]
    if table.with_std:
        notes.append("In this layout ± is shown for the Avg. only (per subset: .md and .csv).")
    out = [
        f"% requires {TEX_PREAMBLE}",
        "\\begin{table}[t]",
        "\\centering",
        "\\setlength{\\tabcolsep}{3pt}",
        f"\\caption{{{tex_escape(title(table))}, {tex_escape(region)}}}",
        f"\\label{{{label}}}",
        *fit_to_width(body),
        notes_tex(notes),
        "\\end{table}",
    ]
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


def write_table(
    table: ResultTable,
    out_dir: str | Path,
    formats: Sequence[str],
    latex_layout: str = "auto",
    tex_header: str = "",
    stem: str | None = None,
) -> list[Path]:
    """Write ``table`` as ``<dataset>_<metric>.{md,tex,csv}`` for each of ``formats``.

    ``tex_header`` (LaTeX comment lines, e.g. the provenance) starts the ``.tex`` file.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = stem or f"{table.dataset}_{table.metric}"
    written = []
    for fmt in formats:
        suffix = {"markdown": "md", "latex": "tex"}.get(fmt, fmt)
        path = out_dir / f"{stem}.{suffix}"
        if path.suffix == ".md":
            path.write_text(to_markdown(table), encoding="utf-8")
        elif path.suffix == ".tex":
            label = "tab:" + stem.replace("_", "-")
            text = tex_header + to_latex(table, label=label, layout=latex_layout)
            path.write_text(text, encoding="utf-8")
        elif path.suffix == ".csv":
            to_frame(table).to_csv(path, index=False)
        else:
            raise ReportError(f"unknown table format {fmt!r}; use md, tex, csv")
        written.append(path)
    return written
