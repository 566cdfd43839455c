"""Entry points of ``mmbench report`` and ``mmbench evaluate``."""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mmbench.benchmark.schema import REGIONS
from mmbench.errors import ReportError
from mmbench.reporting import plots
from mmbench.reporting.external import (  # noqa: F401  re-exported: mmbench evaluate
    evaluate_prediction_dir as evaluate_predictions,
)
from mmbench.reporting.family import (
    ablation_roles,
    family_sort_key,
    family_view,
    mean_ranks,
    method_families,
    seed_table,
    write_frame,
)
from mmbench.reporting.html import Section, write_html
from mmbench.reporting.load import load_results, read_run_info
from mmbench.reporting.provenance import (
    COST_COLUMNS,
    COST_LABELS,
    collect_provenance,
    costs_frame,
    read_runs,
    val_scores,
)
from mmbench.reporting.qualitative import qualitative_figure
from mmbench.reporting.tables import (
    AVG,
    LATEX_LAYOUTS,
    ResultTable,
    build_table,
    empty_reference_counts,
    to_markdown,
    write_table,
)
from mmbench.reporting.units import UNIT_MODES, like_with_like

DEFAULT_FORMATS: tuple[str, ...] = ("md", "tex", "csv")


@dataclass
class ReportSummary:
    """What :func:`build_report` wrote, and what it wants the user to read."""

    out_dir: Path
    tables: list[Path] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    html: Path | None = None
    markdown: Path | None = None
    notes: list[str] = field(default_factory=list)
    caveats: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def paths(self) -> list[Path]:
        extra = [p for p in (self.html, self.markdown) if p is not None]
        return [*self.tables, *self.figures, *extra]

    def __str__(self) -> str:
        lines = [
            f"report in {self.out_dir}: {len(self.tables)} table files, "
            f"{len(self.figures)} figure files ({self.seconds:.1f} s)"
        ]
        if self.html:
            lines.append(f"HTML: {self.html}")
        lines += [f"note: {n}" for n in self.notes]
        lines += [f"caveat: {c}" for c in self.caveats]
        return "\n".join(lines)


def _ordered_methods(df: pd.DataFrame, families: dict[str, str]) -> list[str]:
    return sorted(df["method"].unique(), key=lambda m: (family_sort_key(families.get(m, "")), m))


def _check_choice(name: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ReportError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


def build_report(
    runs: str | Path | Sequence[str | Path] = "results",
    out_dir: str | Path = "reports",
    metrics: Sequence[str] = ("dice", "hd95"),
    compare_reference: bool = False,
    baseline: str | None = None,
    with_std: bool = False,
    formats: Sequence[str] = DEFAULT_FORMATS,
    regions: Sequence[str] = REGIONS,
    plots_enabled: bool = True,
    html: bool = True,
    include_incomplete: bool = False,
    n_boot: int = 1000,
    seed: int = 0,
    qualitative_case: str | None = None,
    results: pd.DataFrame | None = None,
    units: str = "common",
    latex_layout: str = "auto",
    cost_axis: str = "params_inference",
) -> ReportSummary:
    """Write tables, figures and an HTML page for the runs under ``runs``.

    Args:
        runs: run folders, or folders searched recursively for run folders.
        out_dir: output folder (``tables/``, ``figures/``, ``report.html``, ``report.md``).
        metrics: one table per metric and dataset (``dice``, ``hd95``, ``iou``, ``sensitivity``,
            ``specificity``); the first also drives the family view and the default baseline.
        compare_reference: add the published numbers where dataset and metric match.
        baseline: method the others are tested against (default: the best Avg. of the first metric,
            per dataset, among methods with every unit).
        with_std: show mean ± std over cases in the tables (with several seeds the ± is always
            shown and is the std across seeds).
        formats: table formats among ``md``, ``tex``, ``csv``.
        regions: regions (column groups) in order.
        plots_enabled: draw figures.
        html: write the self-contained ``report.html``.
        include_incomplete: keep runs whose status is not ``complete``.
        n_boot, seed: bootstrap resamples and seed.
        qualitative_case: case for the qualitative figure (default: chosen automatically).
        results: already loaded results (skips reading ``runs``).
        units: ``common`` (default): every table uses only the (case, subset) units common to the
            methods it shows; ``all``: each method's own units, methods lacking some flagged ``†``
            and never bold (:mod:`mmbench.reporting.units`).
        latex_layout: ``auto``, ``columns`` (the field's layout) or ``rows`` (one table per
            region, methods as rows) for the ``.tex`` tables.
        cost_axis: x axis of the accuracy-vs-cost figure, a column of the costs table
            (:data:`~mmbench.reporting.provenance.COST_COLUMNS`).

    Raises:
        MixedPolicyError: a table would mix empty-mask/HD95 conventions.
        ReportError: no complete run found, a bad option, or (``units="common"``) methods that
            share no unit.
    """
    start = time.perf_counter()
    _check_choice("units", units, UNIT_MODES)
    _check_choice("latex_layout", latex_layout, LATEX_LAYOUTS)
    _check_choice("cost_axis", cost_axis, COST_COLUMNS)
    for fmt in formats:
        _check_choice("format", fmt, ("md", "tex", "csv", "markdown", "latex"))
    if n_boot < 1:
        raise ReportError(f"n_boot must be a positive number of resamples; got {n_boot}")
    out_dir = Path(out_dir)
    tables_dir, fig_dir = out_dir / "tables", out_dir / "figures"
    summary = ReportSummary(out_dir=out_dir)
    if results is None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            results = load_results(runs, include_incomplete=include_incomplete)
        for w in caught:
            summary.notes.append(str(w.message))
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    df = results
    _check_against_results(df, metrics, regions, baseline)
    families = method_families(df)
    records = read_runs(df)
    provenance = collect_provenance(df, records)
    tex_header = provenance.tex_comment()
    sections: list[Section] = [
        Section("Provenance", frames=[("Runs", provenance.frame, [])], notes=provenance.lines()[:1])
    ]
    markdown: list[str] = ["# mmbench report", "", provenance.markdown()]
    summary.tables += write_frame(
        provenance.frame, tables_dir, "provenance", "Provenance", formats,
        provenance.lines()[:1], tex_header=tex_header,
    )  # fmt: skip

    def frame_out(
        frame: pd.DataFrame, stem: str, heading: str, notes: list[str], decimals: int = 2
    ) -> None:
        summary.tables.extend(
            write_frame(
                frame, tables_dir, stem, heading, formats, notes, decimals, tex_header=tex_header
            )
        )
        markdown.append(_md_frame(heading, frame, notes, decimals))

    for dataset in sorted(df["dataset"].unique()):
        ddf = df[df["dataset"] == dataset]
        methods = _ordered_methods(ddf, families)
        variants, bases = ablation_roles(methods)
        main = [m for m in methods if m not in variants]
        mdf, coverage = like_with_like(ddf, main, units)
        counts = empty_reference_counts(mdf, dataset, regions)
        ds_baseline = baseline if baseline in main else None
        if baseline is not None and ds_baseline is None:
            summary.notes.append(f"{dataset}: baseline {baseline!r} has no runs; using the best.")
        if coverage.incomplete:
            summary.notes.append(f"{dataset}: {coverage.note()}")
        section = Section(f"{dataset}")
        tables: list[ResultTable] = []
        for metric in metrics:
            if not (mdf["metric"] == metric).any():
                summary.notes.append(f"{dataset}: no {metric} rows, table skipped.")
                continue
            table = build_table(
                mdf,
                dataset,
                metric,
                regions=regions,
                methods=main,
                baseline=ds_baseline,
                with_std=with_std,
                n_boot=n_boot,
                seed=seed,
                empty_counts=counts,
                partial=coverage.partial,
                coverage_note=coverage.note(),
            )
            ds_baseline = ds_baseline or table.baseline
            tables.append(table)
            summary.tables += write_table(
                table, tables_dir, formats, latex_layout=latex_layout, tex_header=tex_header
            )
            markdown.append(to_markdown(table))
        section.tables = tables

        scores = val_scores(records, dataset)
        for table in tables:
            fam = family_view(table, families, scores)
            ranks = mean_ranks(table)
            fam_notes = [
                f"{table.info.label}, {AVG} over subsets. Representative: the member with the best "
                "validation score (run.json val_score) when every member has one, else the "
                "family's registered representative, else its only member; never chosen on test "
                f"results. Family mean = mean of its members' {AVG} values.",
                coverage.note(),
            ]
            if variants:
                fam_notes.append(f"Ablation variants left out: {', '.join(variants)}.")
            rank_notes = [
                f"Rank of each method per subset and region by {table.info.label} "
                "(1 = best, ties share the average rank), averaged over subsets.",
                coverage.note(),
            ]
            h_fam = f"Families — {table.info.label} on {dataset}"
            h_rank = f"Mean rank — {table.info.label} on {dataset}"
            frame_out(fam, f"family_{dataset}_{table.metric}", h_fam, fam_notes)
            frame_out(ranks, f"ranks_{dataset}_{table.metric}", h_rank, rank_notes)
            section.frames += [(h_fam, fam, fam_notes), (h_rank, ranks, rank_notes)]
            seeds = seed_table(mdf, table)
            if seeds is not None:
                frame, notes = seeds
                h_seed = f"Across seeds — {table.info.label} on {dataset}"
                frame_out(frame, f"seeds_{dataset}_{table.metric}", h_seed, notes)
                section.frames.append((h_seed, frame, notes))

        if variants:
            group = [m for m in methods if m in bases or m in variants]
            adf, acov = like_with_like(ddf, group, units)
            for metric in metrics:
                if not (adf["metric"] == metric).any():
                    continue
                base = next((m for m in bases if m in group), None)
                at = build_table(
                    adf, dataset, metric, regions=regions, methods=group, baseline=base,
                    with_std=with_std, n_boot=n_boot, seed=seed, partial=acov.partial,
                    coverage_note=acov.note(),
                )  # fmt: skip
                at.notes.insert(0, "Ablation study: complete methods and their variants.")
                summary.tables += write_table(
                    at, tables_dir, formats, latex_layout=latex_layout, tex_header=tex_header,
                    stem=f"ablations_{dataset}_{metric}",
                )  # fmt: skip
                markdown.append(to_markdown(at).replace("### ", "### Ablations — ", 1))
                section.tables.append(at)

        costs = costs_frame(records, dataset, methods, families)
        costs.attrs["decimals"] = -4
        cost_notes = [
            "From run.json costs (params_inference: parameters used at inference; "
            "params_training: parameters used only in training; gflops_forward: one forward pass "
            "at the preset's crop; seconds per training step and per test case; peak memory). "
            "Mean over a method's runs, 4 significant digits; – : not recorded (runs without "
            "costs show their parameter counts only)."
        ]
        h_cost = f"Costs on {dataset}"
        frame_out(costs, f"costs_{dataset}", h_cost, cost_notes, decimals=-4)
        section.frames.append((h_cost, costs, cost_notes))

        if compare_reference:
            from mmbench.reporting.reference import compare_table

            for table in tables:
                comp = compare_table(table, runs=ddf)
                if comp is None:
                    summary.notes.append(
                        f"{dataset} {table.metric}: no published numbers for this dataset/metric."
                    )
                    continue
                heading = f"Published vs ours — {table.info.label} on {dataset}"
                flat = comp.flat()
                frame_out(flat, f"reference_{dataset}_{table.metric}", heading, comp.caveats)
                section.frames.append((heading, flat, comp.caveats))
                summary.caveats += [c for c in comp.caveats if c not in summary.caveats]

        if plots_enabled:
            figs = _figures(
                mdf, dataset, tables, fig_dir, metrics, regions, main, families, costs,
                cost_axis, qualitative_case, summary,
            )  # fmt: skip
            summary.figures += figs
            section.figures = figs
        sections.append(section)

    if compare_reference:
        from mmbench.reporting.reference import FIG9_CAVEAT, fig9_context

        ctx = fig9_context(df)
        heading = "AdaMM figure 9 (approximate) and our overall averages"
        frame_out(ctx, "reference_fig9", heading, [FIG9_CAVEAT])
        sections.append(
            Section("Published numbers (context)", frames=[(heading, ctx, [FIG9_CAVEAT])])
        )
        summary.caveats.append(FIG9_CAVEAT)

    if summary.notes:
        sections.append(Section("Notes", notes=list(summary.notes)))
    summary.markdown = out_dir / "report.md"
    out_dir.mkdir(parents=True, exist_ok=True)
    summary.markdown.write_text("\n".join(markdown), encoding="utf-8")
    if html:
        summary.html = write_html(out_dir / "report.html", sections)
    summary.seconds = time.perf_counter() - start
    return summary


def _check_against_results(
    df: pd.DataFrame, metrics: Sequence[str], regions: Sequence[str], baseline: str | None
) -> None:
    """Refuse metrics, regions and a baseline the results do not have (a typo must not give an
    empty report and exit status 0)."""
    from mmbench.metrics import METRICS

    have = set(df["metric"].unique())
    for metric in metrics:
        if metric not in METRICS and metric not in have:
            raise ReportError(
                f"unknown metric {metric!r}; valid: {', '.join(METRICS)} "
                f"(in these results: {', '.join(sorted(have - {'ref_voxels'}))})"
            )
    in_rows = set(df["region"].unique())
    listing = [r for r in REGIONS if r in in_rows] + sorted(in_rows - set(REGIONS))
    for region in regions:
        if region not in in_rows:
            raise ReportError(
                f"region {region!r} is not in the results; they have {', '.join(listing)}"
            )
    methods = sorted(df["method"].unique())
    if baseline is not None and baseline not in methods:
        raise ReportError(f"baseline {baseline!r} has no runs; methods: {', '.join(methods)}")


def _figures(
    mdf: pd.DataFrame,
    dataset: str,
    tables: list[ResultTable],
    fig_dir: Path,
    metrics: Sequence[str],
    regions: Sequence[str],
    methods: list[str],
    families: dict[str, str],
    costs: pd.DataFrame,
    cost_axis: str,
    qualitative_case: str | None,
    summary: ReportSummary,
) -> list[Path]:
    figs: list[Path] = []
    for table in tables:
        figs += plots.heatmap(table, fig_dir)
    dist_metric = "dice" if "dice" in metrics else (tables[0].metric if tables else None)
    if dist_metric:
        figs += plots.distributions(mdf, dataset, fig_dir, dist_metric, regions, methods)
    column = costs.set_index("method")[cost_axis]
    cost = {str(m): float(v) for m, v in column.items() if pd.notna(v)}
    is_params = cost_axis.startswith("params")
    p = plots.performance_vs_params(
        mdf,
        dataset,
        fig_dir,
        cost,
        families,
        metrics,
        cost_label=COST_LABELS[cost_axis],
        scale=1e-6 if is_params else 1.0,
        stem=f"params_{dataset}" if cost_axis == "params_inference" else f"cost_{dataset}",
    )
    if not p:
        summary.notes.append(f"{dataset}: no {cost_axis} in run.json, cost plot skipped.")
    figs += p
    if tables:  # the first metric only: one drop figure per dataset keeps plotting cheap
        figs += plots.modality_drop(tables[0], fig_dir)
    figs += plots.synthesis_plot(mdf, dataset, fig_dir)
    runs_info = []
    for (method, run_dir), _ in mdf.groupby(["method", "run_dir"], sort=True):
        if method in {r["method"] for r in runs_info}:
            continue
        info = read_run_info(run_dir)
        runs_info.append({"method": method, "run_dir": run_dir, "data_root": info.get("data_root")})
    q, note = qualitative_figure(runs_info, fig_dir, dataset, case=qualitative_case)
    figs += q
    if note:
        summary.notes.append(note)
    return figs


def _md_frame(heading: str, frame: pd.DataFrame, notes: Sequence[str], decimals: int = 2) -> str:
    from mmbench.reporting.family import frame_to_markdown

    return frame_to_markdown(frame, heading, notes, decimals)
