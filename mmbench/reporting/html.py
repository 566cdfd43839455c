"""A self-contained HTML report: tables inline, figures embedded as base64 PNG, no scripts."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mmbench.reporting.tables import AVG, ResultTable, cell_text, ci_text, modality_marks, title
from mmbench.subsets import MODALITIES

CSS = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #1f2328; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 12px; margin: 8px 0; }
th, td { padding: 2px 6px; text-align: right; border-bottom: 1px solid #eee; }
th { background: #f6f8fa; text-align: center; }
td.mod { text-align: center; }
tr.avg td { border-top: 2px solid #888; font-weight: 600; }
tr.ci td { color: #555; font-size: 11px; }
ul.notes { font-size: 12px; color: #444; }
figure { margin: 12px 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 12px; color: #555; } figcaption .file { color: #999; }
.scroll { overflow-x: auto; }
"""


@dataclass
class Section:
    """A heading with any of: result tables, plain frames, figures and notes."""

    heading: str
    tables: list[ResultTable] = field(default_factory=list)
    frames: list[tuple[str, pd.DataFrame, list[str]]] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def result_table_html(table: ResultTable) -> str:
    """The field layout as an HTML table with region column groups."""
    e = html.escape
    nm = len(table.methods)
    out = [f"<h3>{e(title(table))}</h3>", '<div class="scroll"><table>']
    out.append(
        "<tr>"
        + f'<th colspan="{len(MODALITIES)}">Modalities</th>'
        + "".join(f'<th colspan="{nm}">{e(r)}</th>' for r in table.regions)
        + "</tr>"
    )
    out.append(
        "<tr>"
        + "".join(f"<th>{m}</th>" for m in MODALITIES)
        + "".join(f"<th>{e(table.header(m))}</th>" for _ in table.regions for m in table.methods)
        + "</tr>"
    )
    for row in table.rows:
        cells = "".join(
            f"<td>{cell_text(table, row, r, m, 'html')}</td>"
            for r in table.regions
            for m in table.methods
        )
        if row == AVG:
            lead = f'<td class="mod" colspan="{len(MODALITIES)}">Avg.</td>'
            out.append(f'<tr class="avg">{lead}{cells}</tr>')
        else:
            lead = "".join(f'<td class="mod">{m}</td>' for m in modality_marks(row, "html"))
            out.append(f'<tr title="{e(row)}">{lead}{cells}</tr>')
    ci = "".join(f"<td>{ci_text(table, r, m)}</td>" for r in table.regions for m in table.methods)
    out.append(f'<tr class="ci"><td class="mod" colspan="{len(MODALITIES)}">95 % CI</td>{ci}</tr>')
    out.append("</table></div>")
    out.append(_notes(table.notes))
    return "\n".join(out)


def frame_html(heading: str, frame: pd.DataFrame, notes: Sequence[str] = ()) -> str:
    """A plain DataFrame as an HTML table with a heading and notes."""

    from mmbench.reporting.family import _fmt

    decimals = int(frame.attrs.get("decimals", 2))  # the costs table asks for 4 significant digits

    def fmt(v: object) -> str:
        return html.escape(_fmt(v, decimals))

    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{fmt(v)}</td>" for v in row) + "</tr>"
        for row in frame.itertuples(index=False)
    )
    return (
        f'<h3>{html.escape(heading)}</h3><div class="scroll"><table><tr>{head}</tr>{body}'
        f"</table></div>{_notes(notes)}"
    )


def figure_html(png: Path, caption: str | None = None) -> str:
    """An ``<img>`` with the PNG inlined as base64 and a caption saying what it shows (default:
    :func:`~mmbench.reporting.plots.figure_caption` of its file name)."""
    from mmbench.reporting.plots import figure_caption

    data = base64.b64encode(Path(png).read_bytes()).decode("ascii")
    text = html.escape(caption or figure_caption(png))
    name = html.escape(Path(png).name)
    return (
        f'<figure><img alt="{text}" src="data:image/png;base64,{data}">'
        f'<figcaption>{text} <span class="file">(figures/{name}; PDF beside it)</span>'
        "</figcaption></figure>"
    )


def _notes(notes: Sequence[str]) -> str:
    if not notes:
        return ""
    return '<ul class="notes">' + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>"


def write_html(
    path: str | Path, sections: Sequence[Section], heading: str = "mmbench report"
) -> Path:
    """Write the report to ``path`` and return it."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(heading)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(heading)}</h1>",
    ]
    toc = "".join(
        f'<li><a href="#s{i}">{html.escape(s.heading)}</a></li>' for i, s in enumerate(sections)
    )
    parts.append(f"<ul>{toc}</ul>")
    for i, s in enumerate(sections):
        parts.append(f'<h2 id="s{i}">{html.escape(s.heading)}</h2>')
        parts.append(_notes(s.notes))
        parts.extend(result_table_html(t) for t in s.tables)
        parts.extend(frame_html(h, f, n) for h, f, n in s.frames)
        parts.extend(figure_html(p) for p in s.figures if Path(p).suffix == ".png")
    parts.append("</body></html>")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
