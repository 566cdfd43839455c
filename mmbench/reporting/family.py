"""The family view (representative and mean per family) and mean ranks across subsets.

Both are derived from :class:`~mmbench.reporting.tables.ResultTable`, so they use the same
per-subset means, the same Avg. and the same metric conventions as the main tables.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from mmbench.errors import ReportError
from mmbench.families import FAMILIES, representative
from mmbench.reporting.tables import (
    AVG,
    TEX_PREAMBLE,
    ResultTable,
    fit_to_width,
    notes_tex,
    tex_escape,
)

FAMILY_ORDER: tuple[str, ...] = FAMILIES


def method_families(df: pd.DataFrame) -> dict[str, str]:
    """Method → family, from the ``family`` column of loaded results."""
    if "family" not in df.columns:
        return {}
    return df.groupby("method")["family"].first().astype(str).to_dict()


def family_sort_key(name: str) -> tuple[int, str]:
    """Sort key putting families in the AdaMM paper's order, unknown ones last."""
    return (FAMILY_ORDER.index(name) if name in FAMILY_ORDER else len(FAMILY_ORDER), name)


def pick_representative(
    family: str, members: Sequence[str], val_scores: Mapping[str, float] | None = None
) -> tuple[str | None, str]:
    """The member that stands for ``family``, and how it was chosen; never on test results.

    Order: the best validation score (``val_score`` of ``run.json``, mean Dice on the val split,
    averaged over seeds) when every member has one; else the family's registered representative
    (:data:`mmbench.families.FAMILY_REPRESENTATIVES`) when it is a member; else the only member.

    Returns:
        ``(method or None, "val score" | "registered" | "only member" | "none")``.
    """
    scores = {m: (val_scores or {}).get(m) for m in members}
    if members and all(v is not None and math.isfinite(v) for v in scores.values()):
        return max(members, key=lambda m: (scores[m], m)), "val score"
    registered = representative(family)
    if registered in members:
        return registered, "registered"
    if len(members) == 1:
        return members[0], "only member"
    return None, "none"


def family_view(
    table: ResultTable,
    families: Mapping[str, str],
    val_scores: Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """Per family: its representative (chosen by :func:`pick_representative`, never on test
    scores) with its values, and the family mean.

    Returns:
        One row per family (in the AdaMM paper's order) with columns ``family``, ``members``,
        ``representative``, ``chosen by``, ``rep. <region>`` and ``rep. Avg.``, ``mean <region>``
        and ``mean Avg.``, and ``rep. rank``: the representative's mean rank among the
        representatives (per subset and region, averaged; 1 = best).
    """
    avg = table.mean.loc[AVG]
    per_method = pd.DataFrame(
        {r: [avg[(r, m)] for m in table.methods] for r in table.regions}, index=table.methods
    )
    per_method[AVG] = per_method[table.regions].mean(axis=1)
    per_method["family"] = [families.get(m, "unknown") for m in table.methods]
    rows = []
    for fam in sorted(per_method["family"].unique(), key=family_sort_key):
        block = per_method[per_method["family"] == fam]
        rep, how = pick_representative(fam, list(block.index), val_scores)
        row: dict[str, object] = {
            "family": fam,
            "members": len(block),
            "representative": rep or "–",
            "chosen by": how,
        }
        for col in [*table.regions, AVG]:
            row[f"rep. {col}"] = block.loc[rep, col] if rep is not None else float("nan")
        for col in [*table.regions, AVG]:
            row[f"mean {col}"] = block[col].mean()
        rows.append(row)
    frame = pd.DataFrame(rows)
    reps = [r for r in frame["representative"] if r in table.methods] if rows else []
    ranks = mean_ranks(table, reps).set_index("method")["all"] if reps else pd.Series(dtype=float)
    chosen = frame["representative"] if rows else []
    frame["rep. rank"] = [float(ranks.get(r, float("nan"))) for r in chosen]
    return frame


def mean_ranks(table: ResultTable, methods: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean rank of each method across subsets (1 = best; ties share the average rank), among
    ``methods`` (default: all of the table's).

    Returns:
        One row per method sorted by the overall mean rank, with one column per region and
        ``all`` (mean over regions and subsets).
    """
    subsets = [r for r in table.rows if r != AVG]
    ascending = not table.info.higher_better
    out = {}
    all_ranks = []
    for region in table.regions:
        block = table.mean.loc[subsets, region]
        if methods is not None:
            block = block[list(methods)]
        ranks = block.rank(axis=1, ascending=ascending, method="average")
        out[region] = ranks.mean(axis=0)
        all_ranks.append(ranks)
    frame = pd.DataFrame(out)
    frame["all"] = pd.concat(all_ranks).mean(axis=0)
    frame.index.name = "method"
    return frame.sort_values("all").reset_index()


def _fmt(v: object, decimals: int) -> str:
    """A cell: floats with ``decimals`` decimals, or ``-decimals`` significant digits when
    ``decimals`` is negative (costs span 0.03 GFLOPs to 500 MB)."""
    if v is pd.NA:
        return "–"
    if isinstance(v, float):
        if math.isnan(v):
            return "–"
        return f"{v:.{-decimals}g}" if decimals < 0 else f"{v:.{decimals}f}"
    return str(v)


def frame_to_markdown(
    frame: pd.DataFrame, heading: str, notes: Sequence[str] = (), decimals: int = 2
) -> str:
    """A plain Markdown table of ``frame`` with a heading and bullet notes."""
    cols = [str(c) for c in frame.columns]
    lines = [f"### {heading}", "", "| " + " | ".join(cols) + " |"]
    lines.append(
        "|" + "|".join("--:" if frame[c].dtype.kind in "fi" else ":--" for c in frame) + "|"
    )
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(_fmt(v, decimals) for v in row) + " |")
    lines.append("")
    lines += [f"- {n}" for n in notes]
    lines.append("")
    return "\n".join(lines)


def frame_to_latex(
    frame: pd.DataFrame, caption: str, label: str, notes: Sequence[str] = (), decimals: int = 2
) -> str:
    r"""A booktabs ``table`` environment of ``frame``, shrunk to ``\linewidth`` when wider."""
    spec = "".join("r" if frame[c].dtype.kind in "fi" else "l" for c in frame)
    body = [
        f"\\begin{{tabular}}{{{spec}}}",
        "\\toprule",
        " & ".join(tex_escape(c) for c in frame.columns) + " \\\\",
        "\\midrule",
    ]
    for row in frame.itertuples(index=False):
        body.append(" & ".join(tex_escape(_fmt(v, decimals)) for v in row) + " \\\\")
    body += ["\\bottomrule", "\\end{tabular}%"]
    out = [
        f"% requires {TEX_PREAMBLE}",
        "\\begin{table}[t]",
        "\\centering",
        f"\\caption{{{tex_escape(caption)}}}",
        f"\\label{{{label}}}",
        *fit_to_width(body),
    ]
    if notes:
        out.append(notes_tex(notes))
    out.append("\\end{table}")
    return "\n".join(out) + "\n"


def write_frame(
    frame: pd.DataFrame,
    out_dir: str | Path,
    stem: str,
    heading: str,
    formats: Sequence[str],
    notes: Sequence[str] = (),
    decimals: int = 2,
    tex_header: str = "",
) -> list[Path]:
    """Write ``frame`` as ``<stem>.{md,tex,csv}`` for each requested format (``tex_header``:
    LaTeX comment lines that start the ``.tex`` file)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        suffix = {"markdown": "md", "latex": "tex"}.get(fmt, fmt)
        path = out_dir / f"{stem}.{suffix}"
        if suffix == "md":
            path.write_text(frame_to_markdown(frame, heading, notes, decimals), encoding="utf-8")
        elif suffix == "tex":
            label = "tab:" + stem.replace("_", "-")
            text = tex_header + frame_to_latex(frame, heading, label, notes, decimals)
            path.write_text(text, encoding="utf-8")
        elif suffix == "csv":
            frame.to_csv(path, index=False)
        else:
            raise ReportError(f"unknown table format {fmt!r}; use md, tex, csv")
        written.append(path)
    return written


def ablation_roles(methods: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(variants, bases)`` among ``methods``: registered ablation variants (tag ``ablation``)
    and the complete methods they ablate (tag ``ablation-base``). Unregistered names (outside
    predictions, plug-ins not installed) are neither."""
    from mmbench.errors import MMBenchError
    from mmbench.methods.registry import ABLATION_BASE_TAG, ABLATION_TAG, method_info

    variants, bases = [], []
    for m in methods:
        try:
            tags = method_info(m).tags
        except (MMBenchError, KeyError, ValueError):
            continue
        if ABLATION_TAG in tags:
            variants.append(m)
        elif ABLATION_BASE_TAG in tags:
            bases.append(m)
    return variants, bases


def seed_table(df: pd.DataFrame, table: ResultTable) -> tuple[pd.DataFrame, list[str]] | None:
    """Across-seed view of a table when some method has more than one seed, else ``None``.

    Per method: the number of seeds, the mean and std across seeds of the per-seed Avg. per
    region and over regions (``all``); against the table's baseline, a two-sided paired t-test
    across the seeds both ran (on the per-seed ``all``), and per seed the Wilcoxon signed-rank p
    paired over cases (each case's mean over subsets and regions), uncorrected.
    """
    from mmbench.reporting.stats import paired_t, paired_wilcoxon

    if max(table.n_seeds.values(), default=1) <= 1:
        return None
    rows = df[
        (df["dataset"] == table.dataset)
        & (df["metric"] == table.metric)
        & df["region"].isin(table.regions)
        & df["method"].isin(table.methods)
    ]
    scale = table.info.scale
    per_seed = rows.groupby(["method", "seed", "region", "subset"])["value"].mean() * scale
    seed_region = per_seed.groupby(level=["method", "seed", "region"]).mean().unstack("region")
    seed_region["all"] = seed_region[table.regions].mean(axis=1)
    per_case = rows.groupby(["method", "seed", "case"])["value"].mean() * scale
    base = table.baseline
    out = []
    for m in table.methods:
        block = seed_region.loc[m] if m in seed_region.index.get_level_values(0) else None
        row: dict[str, object] = {"method": m, "seeds": 0 if block is None else len(block)}
        for col in [*table.regions, "all"]:
            vals = block[col] if block is not None else pd.Series(dtype=float)
            row[f"{col} mean"] = float(vals.mean())
            row[f"{col} std"] = float(vals.std(ddof=1)) if len(vals) > 1 else float("nan")
        row["p across seeds"] = float("nan")
        row["p within seed"] = ""
        if base is not None and m != base and block is not None and base in seed_region.index:
            b = seed_region.loc[base]["all"]
            shared = sorted(set(b.index) & set(block.index))
            a_vals, m_vals = b[shared].to_numpy(), block["all"][shared].to_numpy()
            row["p across seeds"] = paired_t(a_vals, m_vals)[0]
            within = []
            for s in shared:
                x, y = per_case.loc[(base, s)], per_case.loc[(m, s)]
                cases = sorted(set(x.index) & set(y.index))
                p, _ = paired_wilcoxon(x[cases].to_numpy(), y[cases].to_numpy())
                within.append(f"seed {s}: {p:.3g}")
            row["p within seed"] = "; ".join(within)
        out.append(row)
    notes = [
        f"{table.info.label}: per seed, {AVG} = mean over subsets of the mean over cases; mean and "
        "std (sample) across seeds. all = mean over regions.",
        f"p across seeds: two-sided paired t-test against {base} over the seeds both ran (on all); "
        "p within seed: Wilcoxon signed-rank paired over cases within each seed (each case's mean "
        "over subsets and regions), not corrected for multiplicity.",
    ]
    return pd.DataFrame(out), notes
