"""Natural width of the generated LaTeX result tables against article's 345 pt text width.

Usage: ``python benchmarks/latex_width.py`` (needs pdflatex). Prints, per number of methods,
seeds and layout, the width of the ``tabular`` before the shrink to ``\\linewidth`` and the scale
factor that shrink applies (1.0 = printed at full size).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from mmbench.reporting.tables import TEX_PREAMBLE, build_table, to_latex

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from report_fixtures import fake_results  # noqa: E402

TEXT_WIDTH_PT = 345.0
SHRINK = r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%"


def natural_widths(tex: str) -> list[float]:
    """Widths in pt of every tabular of ``tex`` (a generated table), measured by pdflatex."""
    tex = tex.replace(SHRINK, r"\setbox0\hbox{%")
    tex = tex.replace("\\end{tabular}%\n}", "\\end{tabular}%\n}\\typeout{WIDTH=\\the\\wd0}")
    doc = f"\\documentclass{{article}}{TEX_PREAMBLE}\\begin{{document}}{tex}\\end{{document}}"
    with tempfile.TemporaryDirectory() as d:
        Path(d, "t.tex").write_text(doc, encoding="utf-8")
        out = subprocess.run(
            ["pdflatex", "-interaction=nonstopmode", "t.tex"], cwd=d, capture_output=True, text=True
        ).stdout
    return [float(x) for x in re.findall(r"WIDTH=([\d.]+)pt", out)]


def main() -> None:
    for n in (3, 6, 9, 16):
        for seeds in (1, 3):
            methods = [f"method-{i:02d}" for i in range(n)]
            df = pd.concat(
                [fake_results(methods, n_cases=4, seed=s).assign(seed=s) for s in range(seeds)]
            )
            table = build_table(df, "synthetic", "dice", n_boot=10)
            for layout in ("columns", "rows"):
                width = max(natural_widths(to_latex(table, layout=layout)))
                print(
                    f"{n:2d} methods, {seeds} seed(s), {layout:7s}: natural width {width:5.0f} pt, "
                    f"scale {min(1.0, TEXT_WIDTH_PT / width):.2f}"
                )


if __name__ == "__main__":
    main()
