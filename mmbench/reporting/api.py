"""Entry points of ``mmbench report`` and ``mmbench evaluate``."""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mmbench.benchmark.schema import REGIONS
from mmbench.reporting import plots
from mmbench.reporting.external import (  # noqa: F401  re-exported: mmbench evaluate
    evaluate_prediction_dir as evaluate_predictions,
)
from mmbench.reporting.family import (
    family_sort_key,
    family_view,
    mean_ranks,
    method_families,
    write_frame,
)
from mmbench.reporting.html import Section, write_html
from mmbench.reporting.load import load_results, read_run_info
from mmbench.reporting.qualitative import qualitative_figure
from mmbench.reporting.tables import (
    ResultTable,
    build_table,
    empty_reference_counts,
    to_markdown,
    write_table,
)

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
) -> ReportSummary:
    """Write tables, figures and an HTML page for the runs under ``runs``.

    Args:
        runs: run folders, or folders searched recursively for run folders.
        out_dir: output folder (``tables/``, ``figures/``, ``report.html``, ``report.md``).
        metrics: one table per metric and dataset (``dice``, ``hd95``, ``iou``, ``sensitivity``,
            ``specificity``); the first also drives the family view and the default baseline.
        compare_reference: add the published numbers where dataset and metric match.
        baseline: method the others are tested against (default: the best Avg. of the first metric,
            per dataset).
        with_std: show mean ± std in the tables.
        formats: table formats among ``md``, ``tex``, ``csv``.
        regions: regions (column groups) in order.
        plots_enabled: draw figures.
        html: write the self-contained ``report.html``.
        include_incomplete: keep runs whose status is not ``complete``.
        n_boot, seed: bootstrap resamples and seed.
        qualitative_case: case for the qualitative figure (default: chosen automatically).
        results: already loaded results (skips reading ``runs``).

    Raises:
        MixedPolicyError: a table would mix empty-mask/HD95 conventions.
        FileNotFoundError: no complete run found.
    """
    start = time.perf_counter()
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
    families = method_families(df)
    sections: list[Section] = []
    markdown: list[str] = ["# mmbench report", ""]
    all_tables: list[ResultTable] = []

    for dataset in sorted(df["dataset"].unique()):
        ddf = df[df["dataset"] == dataset]
        methods = _ordered_methods(ddf, families)
        counts = empty_reference_counts(ddf, dataset, regions)
        ds_baseline = baseline if baseline in methods else None
        if baseline is not None and ds_baseline is None:
            summary.notes.append(f"{dataset}: baseline {baseline!r} has no runs; using the best.")
        section = Section(f"{dataset}")
        tables: list[ResultTable] = []
        for metric in metrics:
            if not (ddf["metric"] == metric).any():
                summary.notes.append(f"{dataset}: no {metric} rows, table skipped.")
                continue
            table = build_table(
                ddf,
                dataset,
                metric,
                regions=regions,
                methods=methods,
                baseline=ds_baseline,
                with_std=with_std,
                n_boot=n_boot,
                seed=seed,
                empty_counts=counts,
            )
            ds_baseline = ds_baseline or table.baseline
            tables.append(table)
            summary.tables += write_table(table, tables_dir, formats)
            markdown.append(to_markdown(table))
        all_tables += tables
        section.tables = tables

        for table in tables:
            fam = family_view(table, families)
            ranks = mean_ranks(table)
            fam_notes = [
                f"{table.info.label}, Avg. over subsets; best member by the mean over "
                f"{', '.join(table.regions)}; family mean = mean of its members' Avg."
            ]
            rank_notes = [
                f"Rank of each method per subset and region by {table.info.label} "
                "(1 = best, ties share the average rank), averaged over subsets."
            ]
            h_fam = f"Families — {table.info.label} on {dataset}"
            h_rank = f"Mean rank — {table.info.label} on {dataset}"
            summary.tables += write_frame(
                fam, tables_dir, f"family_{dataset}_{table.metric}", h_fam, formats, fam_notes
            )
            summary.tables += write_frame(
                ranks, tables_dir, f"ranks_{dataset}_{table.metric}", h_rank, formats, rank_notes
            )
            section.frames += [(h_fam, fam, fam_notes), (h_rank, ranks, rank_notes)]
            markdown.append(_md_frame(h_fam, fam, fam_notes))
            markdown.append(_md_frame(h_rank, ranks, rank_notes))

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
                summary.tables += write_frame(
                    flat, tables_dir, f"reference_{dataset}_{table.metric}", heading, formats,
                    comp.caveats,
                )  # fmt: skip
                section.frames.append((heading, flat, comp.caveats))
                markdown.append(_md_frame(heading, flat, comp.caveats))
                summary.caveats += [c for c in comp.caveats if c not in summary.caveats]

        if plots_enabled:
            figs: list[Path] = []
            for table in tables:
                figs += plots.heatmap(table, fig_dir)
            dist_metric = "dice" if "dice" in metrics else (tables[0].metric if tables else None)
            if dist_metric:
                figs += plots.distributions(ddf, dataset, fig_dir, dist_metric, regions, methods)
            params = ddf.groupby("method")["params"].first().to_dict()
            p = plots.performance_vs_params(ddf, dataset, fig_dir, params, families, metrics)
            if not p:
                summary.notes.append(f"{dataset}: no parameter counts in run.json, plot skipped.")
            figs += p
            if tables:  # the first metric only: one drop figure per dataset keeps plotting cheap
                figs += plots.modality_drop(tables[0], fig_dir)
            figs += plots.synthesis_plot(ddf, dataset, fig_dir)
            runs_info = []
            for (method, run_dir), _ in ddf.groupby(["method", "run_dir"], sort=True):
                if method in {r["method"] for r in runs_info}:
                    continue
                info = read_run_info(run_dir)
                runs_info.append(
                    {"method": method, "run_dir": run_dir, "data_root": info.get("data_root")}
                )
            q, note = qualitative_figure(runs_info, fig_dir, dataset, case=qualitative_case)
            figs += q
            if note:
                summary.notes.append(note)
            summary.figures += figs
            section.figures = figs
        sections.append(section)

    if compare_reference:
        from mmbench.reporting.reference import FIG9_CAVEAT, fig9_context

        ctx = fig9_context(df)
        heading = "AdaMM figure 9 (approximate) and our overall averages"
        summary.tables += write_frame(
            ctx, tables_dir, "reference_fig9", heading, formats, [FIG9_CAVEAT]
        )
        sections.append(
            Section("Published numbers (context)", frames=[(heading, ctx, [FIG9_CAVEAT])])
        )
        markdown.append(_md_frame(heading, ctx, [FIG9_CAVEAT]))
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


def _md_frame(heading: str, frame: pd.DataFrame, notes: Sequence[str]) -> str:
    from mmbench.reporting.family import frame_to_markdown

    return frame_to_markdown(frame, heading, notes)
