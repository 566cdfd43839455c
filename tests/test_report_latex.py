"""Every ``.tex`` file a report writes compiles with pdflatex, without errors or overfull boxes.

Needs ``pdflatex`` with booktabs and graphicx (Debian: texlive-latex-base and
texlive-latex-recommended, installed by ``.ci/run``). Skipped with that reason only when pdflatex
is missing outside CI; in CI (``CI`` set) a missing pdflatex is a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from report_fixtures import fake_results, write_run_folders

from mmbench.reporting.api import build_report
from mmbench.reporting.tables import TEX_PREAMBLE, build_table, tex_escape, to_latex

# Names that break LaTeX when not escaped, and enough methods to overflow a naive layout.
ODD_NAMES = ("my_method", "B&C", "50%-drop", "a<b>c", "x#1", "tilde~hat^", "brace{}", "dollar$")
MANY = tuple(f"method-{i:02d}" for i in range(16 - len(ODD_NAMES))) + ODD_NAMES


def _pdflatex() -> str:
    exe = shutil.which("pdflatex")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail(
                "pdflatex is not installed but CI is set: apt-get install -y "
                "texlive-latex-base texlive-latex-recommended"
            )
        pytest.skip(
            "pdflatex not installed (Debian: texlive-latex-base texlive-latex-recommended); "
            "set CI to make this a failure"
        )
    return exe


def compile_tex(files: list[Path], workdir: Path) -> str:
    """Compile one article that inputs every file; return the log. Fails the test on an error
    or an overfull box."""
    exe = _pdflatex()
    workdir.mkdir(parents=True, exist_ok=True)
    body = "\n".join(f"\\input{{{f.resolve().as_posix()}}}\n\\clearpage" for f in files)
    doc = workdir / "doc.tex"
    doc.write_text(
        "\\documentclass{article}\n"
        f"{TEX_PREAMBLE}\n"
        "\\begin{document}\n"
        f"{body}\n"
        "\\end{document}\n",
        encoding="utf-8",
    )
    proc = subprocess.run(
        [exe, "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = (workdir / "doc.log").read_text(encoding="utf-8", errors="replace")
    errors = [line for line in log.splitlines() if line.startswith("!")]
    assert proc.returncode == 0 and not errors, "\n".join(errors) or proc.stdout[-3000:]
    overfull = re.findall(r"Overfull \\[hv]box.*", log)
    assert not overfull, "\n".join(overfull)
    assert (workdir / "doc.pdf").is_file()
    return log


@pytest.fixture(scope="module")
def many_methods_report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("latex")
    df = fake_results(methods=MANY, datasets=("toy",), n_cases=4)
    write_run_folders(df, tmp / "results")
    out = {}
    for layout in ("columns", "rows"):
        out[layout] = build_report(
            tmp / "results",
            tmp / f"reports-{layout}",
            metrics=("dice", "hd95"),
            plots_enabled=False,
            html=False,
            n_boot=20,
            latex_layout=layout,
        )
    return tmp, out


@pytest.mark.parametrize("layout", ["columns", "rows"])
def test_every_generated_tex_compiles_without_overfull_boxes(
    many_methods_report, layout, tmp_path
) -> None:
    _, reports = many_methods_report
    tex = sorted(p for p in reports[layout].tables if p.suffix == ".tex")
    names = {p.name for p in tex}
    assert {"toy_dice.tex", "family_toy_dice.tex", "costs_toy.tex", "provenance.tex"} <= names
    compile_tex(tex, tmp_path / "build")


def test_rows_layout_has_one_table_per_region_with_methods_as_rows(many_methods_report) -> None:
    tmp, _ = many_methods_report
    tex = (tmp / "reports-rows" / "tables" / "toy_dice.tex").read_text(encoding="utf-8")
    assert tex.count("\\begin{table}") == 3
    for name in MANY:
        assert tex.count(tex_escape(name) + " & ") == 3  # one row per region table
    auto = (tmp / "reports-columns" / "tables" / "toy_dice.tex").read_text(encoding="utf-8")
    assert auto.count("\\begin{table}") == 1


def test_escaping_of_special_characters() -> None:
    assert tex_escape("p < 0.05") == "p \\textless{} 0.05"
    assert tex_escape("a_b & 5% #1 $x$") == "a\\_b \\& 5\\% \\#1 \\$x\\$"
    assert tex_escape("→ ± × –") == "$\\rightarrow$ $\\pm$ $\\times$ --"


def test_small_table_keeps_natural_size_and_compiles(tmp_path) -> None:
    df = fake_results(methods=("a", "b"), n_cases=3)
    tex = to_latex(build_table(df, "synthetic", "dice", n_boot=20), layout="auto")
    assert "\\ifdim\\width>\\linewidth" in tex  # shrunk only when wider than the text
    path = tmp_path / "t.tex"
    path.write_text(tex, encoding="utf-8")
    compile_tex([path], tmp_path / "build")


def test_reference_seed_ablation_and_cost_tables_compile(tmp_path) -> None:
    """The other generated tables: published numbers (their caveats), seeds, ablations, costs."""
    import pandas as pd

    pytest.importorskip("mmbench.methods")
    methods = ("adamm", "adamm-no-garm", "zerofill")
    df = pd.concat(
        [
            fake_results(methods=methods, datasets=("brats2024",), n_cases=4, seed=s).assign(seed=s)
            for s in range(2)
        ],
        ignore_index=True,
    )
    families = dict(zip(methods, ("knowledge-distillation",) * 2 + ("reference",)))
    write_run_folders(df, tmp_path / "results", families=families)
    summary = build_report(
        tmp_path / "results",
        tmp_path / "reports",
        compare_reference=True,
        plots_enabled=False,
        html=False,
        n_boot=10,
    )
    tex = sorted(p for p in summary.tables if p.suffix == ".tex")
    names = {p.name for p in tex}
    for want in (
        "reference_brats2024_dice.tex",
        "reference_fig9.tex",
        "seeds_brats2024_dice.tex",
        "ablations_brats2024_dice.tex",
        "costs_brats2024.tex",
    ):
        assert want in names
    compile_tex(tex, tmp_path / "build")


def test_rows_layout_of_16_methods_prints_at_half_size_or_more() -> None:
    """Fit: the shrink to the text width keeps the 16-method table readable (scale >= 0.5 in a
    345 pt single-column article; a two-column paper's table* is wider)."""
    _pdflatex()
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from latex_width import TEXT_WIDTH_PT, natural_widths

    df = fake_results(methods=MANY, n_cases=3)
    table = build_table(df, "synthetic", "dice", n_boot=10, with_std=True)
    widths = natural_widths(to_latex(table, layout="auto"))
    assert len(widths) == 3  # auto chose one table per region
    assert TEXT_WIDTH_PT / max(widths) >= 0.5
    small = build_table(fake_results(methods=("a", "b", "c"), n_cases=3), "synthetic", "dice")
    (width,) = natural_widths(to_latex(small, layout="auto"))
    assert TEXT_WIDTH_PT / width >= 0.8  # 3 methods in the field's layout: nearly full size
