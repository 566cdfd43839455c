"""The family view (best member and mean per family) and mean ranks across subsets.

Both are derived from :class:`~mmbench.reporting.tables.ResultTable`, so they use the same
per-subset means, the same Avg. and the same metric conventions as the main tables.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from mmbench.errors import ReportError
from mmbench.families import FAMILIES
from mmbench.reporting.tables import AVG, ResultTable, tex_escape

FAMILY_ORDER: tuple[str, ...] = FAMILIES


def method_families(df: pd.DataFrame) -> dict[str, str]:
    """Method → family, from the ``family`` column of loaded results."""
    if "family" not in df.columns:
        return {}
    return df.groupby("method")["family"].first().astype(str).to_dict()


def family_sort_key(name: str) -> tuple[int, str]:
    """Sort key putting families in the AdaMM paper's order, unknown ones last."""
    return (FAMILY_ORDER.index(name) if name in FAMILY_ORDER else len(FAMILY_ORDER), name)


def family_view(table: ResultTable, families: Mapping[str, str]) -> pd.DataFrame:
    """Per family: its best member (by the Avg. over regions) and the family mean.

    Returns:
        One row per family (in the AdaMM paper's order) with columns ``family``, ``members``,
        ``best``, ``best <region>`` and ``best Avg.``, ``mean <region>`` and ``mean Avg.``.
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
        scores = block[AVG] if table.info.higher_better else -block[AVG]
        best = scores.idxmax() if scores.notna().any() else block.index[0]
        row: dict[str, object] = {"family": fam, "members": len(block), "best": best}
        for col in [*table.regions, AVG]:
            row[f"best {col}"] = block.loc[best, col]
        for col in [*table.regions, AVG]:
            row[f"mean {col}"] = block[col].mean()
        rows.append(row)
    return pd.DataFrame(rows)


def mean_ranks(table: ResultTable) -> pd.DataFrame:
    """Mean rank of each method across subsets (1 = best; ties share the average rank).

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
        ranks = block.rank(axis=1, ascending=ascending, method="average")
        out[region] = ranks.mean(axis=0)
        all_ranks.append(ranks)
    frame = pd.DataFrame(out)
    frame["all"] = pd.concat(all_ranks).mean(axis=0)
    frame.index.name = "method"
    return frame.sort_values("all").reset_index()


def _fmt(v: object, decimals: int) -> str:
    if isinstance(v, float):
        return "–" if math.isnan(v) else f"{v:.{decimals}f}"
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
    """A booktabs ``table`` environment of ``frame``."""
    spec = "".join("r" if frame[c].dtype.kind in "fi" else "l" for c in frame)
    out = [
        "% requires \\usepackage{booktabs}",
        "\\begin{table}[t]",
        "\\centering",
        f"\\caption{{{tex_escape(caption)}}}",
        f"\\label{{{label}}}",
        f"\\begin{{tabular}}{{{spec}}}",
        "\\toprule",
        " & ".join(tex_escape(c) for c in frame.columns) + " \\\\",
        "\\midrule",
    ]
    for row in frame.itertuples(index=False):
        out.append(" & ".join(tex_escape(_fmt(v, decimals)) for v in row) + " \\\\")
    out += ["\\bottomrule", "\\end{tabular}"]
    if notes:
        out.append(
            f"\\par\\smallskip{{\\footnotesize {' '.join(tex_escape(n) for n in notes)}\\par}}"
        )
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
) -> list[Path]:
    """Write ``frame`` as ``<stem>.{md,tex,csv}`` for each requested format."""
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
            text = frame_to_latex(frame, heading, label, notes, decimals)
            path.write_text(text, encoding="utf-8")
        elif suffix == "csv":
            frame.to_csv(path, index=False)
        else:
            raise ReportError(f"unknown table format {fmt!r}; use md, tex, csv")
        written.append(path)
    return written
