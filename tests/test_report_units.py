"""Like with like: a report over methods scored on different (case, subset) units, and
``mmbench evaluate --split-from``."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from report_fixtures import fake_results, write_run_folders
from test_report_build import CASES, write_predictions, write_tiny_dataset

from mmbench.errors import ReportError
from mmbench.reporting.api import build_report, evaluate_predictions
from mmbench.reporting.tables import AVG, build_table, to_latex, to_markdown
from mmbench.reporting.units import like_with_like
from mmbench.subsets import SUBSET_NAMES

FOUR = ("T1", "T1ce", "T1ce+FLAIR", "T1+T1ce+T2+FLAIR")


def unequal() -> pd.DataFrame:
    """``inhouse``: 2 test cases × 15 subsets. ``outside``: 5 cases × 4 subsets (2 shared),
    better everywhere (+5 Dice points), as an outside method scored by ``mmbench evaluate``."""
    df = fake_results(methods=("inhouse", "outside"), datasets=("toy",), n_cases=5)
    cases = sorted(df["case"].unique())
    inhouse = df[(df["method"] == "inhouse") & df["case"].isin(cases[:2])]
    outside = df[(df["method"] == "outside") & df["subset"].isin(FOUR)].copy()
    dice = outside["metric"] == "dice"
    outside.loc[dice, "value"] = (outside.loc[dice, "value"] + 0.3).clip(upper=1.0)
    return pd.concat([inhouse, outside], ignore_index=True)


def test_common_units_by_default() -> None:
    df = unequal()
    rows, cov = like_with_like(df, ["inhouse", "outside"])
    assert len(cov.common) == 2 * 4 and cov.incomplete == ["inhouse", "outside"]
    assert cov.missing("inhouse") == 3 * 4  # outside's 3 other cases × 4 subsets
    assert cov.missing("outside") == 2 * 11  # inhouse's 11 other subsets × 2 cases
    t = build_table(rows, "toy", "dice", n_boot=20, coverage_note=cov.note())
    assert [r for r in t.rows if r != AVG] == [s for s in SUBSET_NAMES if s in FOUR]
    assert t.n_cases == {"inhouse": 2, "outside": 2}
    md = to_markdown(t)
    assert "the 8 (case, subset) pairs common to the 2 methods shown (2 cases, 4 subsets)" in md
    assert "inhouse lacks 12" in md and "outside lacks 22" in md
    # the Avg. is over the 4 shared subsets of the 2 shared cases, for both methods
    sel = df[(df["metric"] == "dice") & df["subset"].isin(FOUR) & (df["region"] == "WT")]
    sel = sel[sel["case"].isin(sorted(df["case"].unique())[:2])]
    want = sel.groupby(["method", "subset"])["value"].mean().groupby("method").mean() * 100
    assert t.mean.loc[AVG, ("WT", "outside")] == pytest.approx(want["outside"])
    assert t.mean.loc[AVG, ("WT", "inhouse")] == pytest.approx(want["inhouse"])


def test_all_units_flags_and_never_bolds_a_partial_mean() -> None:
    df = unequal()
    rows, cov = like_with_like(df, ["inhouse", "outside"], mode="all")
    assert cov.partial == ["inhouse", "outside"]
    # only the outside method lacks units when inhouse has every case it has
    full = fake_results(methods=("inhouse",), datasets=("toy",), n_cases=5)
    df2 = pd.concat([full, df[df["method"] == "outside"]], ignore_index=True)
    rows, cov = like_with_like(df2, ["inhouse", "outside"], mode="all")
    assert cov.partial == ["outside"]
    t = build_table(rows, "toy", "dice", n_boot=20, partial=cov.partial, coverage_note=cov.note())
    assert t.mean.loc[AVG, ("WT", "outside")] > t.mean.loc[AVG, ("WT", "inhouse")]
    assert not t.best[[(r, "outside") for r in t.regions]].to_numpy().any()
    assert t.best.loc[AVG, ("WT", "inhouse")]
    assert t.baseline == "inhouse"
    md = to_markdown(t)
    assert "WT outside†" in md and "never bold" in md
    assert "outside\\textsuperscript{\\dag}" in to_latex(t)


def test_report_over_unequal_units(tmp_path) -> None:
    write_run_folders(unequal(), tmp_path / "results")
    summary = build_report(
        tmp_path / "results", tmp_path / "reports", plots_enabled=False, html=False, n_boot=20
    )
    md = (tmp_path / "reports" / "tables" / "toy_dice.md").read_text(encoding="utf-8")
    assert "(2 cases, 4 subsets)" in md
    assert len([line for line in md.splitlines() if line[:3] in ("| ●", "| ○")]) == 4
    assert any("lacks" in n for n in summary.notes)
    fam = (tmp_path / "reports" / "tables" / "family_toy_dice.md").read_text(encoding="utf-8")
    assert "(2 cases, 4 subsets)" in fam
    build_report(
        tmp_path / "results",
        tmp_path / "all",
        plots_enabled=False,
        html=False,
        n_boot=20,
        units="all",
    )
    md_all = (tmp_path / "all" / "tables" / "toy_dice.md").read_text(encoding="utf-8")
    assert "outside†" in md_all and "inhouse†" in md_all
    marks = [line for line in md_all.splitlines() if line[:3] in ("| ●", "| ○")]
    assert len(marks) == 15


def test_no_shared_unit_is_an_error_naming_the_way_out() -> None:
    a = fake_results(methods=("a",), n_cases=2)
    b = fake_results(methods=("b",), n_cases=2).assign(case=lambda d: d["case"] + "-other")
    with pytest.raises(ReportError, match="--units all"):
        like_with_like(pd.concat([a, b]), ["a", "b"])
    with pytest.raises(ReportError, match="units must be one of"):
        like_with_like(a, ["a"], mode="some")


def test_evaluate_split_from_scores_only_the_test_cases(tmp_path) -> None:
    pytest.importorskip("mmbench.datasets")
    data = write_tiny_dataset(tmp_path / "data")
    pred = tmp_path / "theirs"
    write_predictions(pred, shift=0, subsets=("1111", "0001"))
    run = tmp_path / "results" / "brats2024" / "ours" / "seed0-fold0"
    run.mkdir(parents=True)
    (run / "split.json").write_text(
        json.dumps({"train": [CASES[0]], "val": [], "test": [CASES[1]]}), encoding="utf-8"
    )
    out = tmp_path / "scored"
    with pytest.warns(UserWarning, match="not test cases"):
        df = evaluate_predictions(pred, "brats2024", data_root=data, out=out, split_from=run)
    assert set(df["case"]) == {CASES[1]}
    assert json.loads((out / "run.json").read_text())["split_from"].endswith("split.json")
    split_file = tmp_path / "split.json"
    split_file.write_text(json.dumps({"test": [CASES[0]]}), encoding="utf-8")
    with pytest.warns(UserWarning):
        df = evaluate_predictions(
            pred, "brats2024", data_root=data, out=tmp_path / "s2", split_from=split_file
        )
    assert set(df["case"]) == {CASES[0]}
    assert np.isfinite(df["value"]).any()


def test_cli_evaluate_split_from_and_report_options(tmp_path, capsys) -> None:
    pytest.importorskip("mmbench.datasets")
    from mmbench.cli import main

    data = write_tiny_dataset(tmp_path / "data")
    pred = tmp_path / "theirs"
    write_predictions(pred, shift=1, subsets=("1111",))
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"test": list(CASES)}), encoding="utf-8")
    out = tmp_path / "results" / "brats2024" / "theirs" / "external"
    args = ["evaluate", "--pred-dir", str(pred), "--dataset", "brats2024"]
    args += ["--data-root", str(data), "--split-from", str(split), "--out", str(out)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "scored 2 cases × 1 subsets" in text and str(out) in text
    assert "<dataset>" not in text
    write_run_folders(unequal(), tmp_path / "results")
    args = ["report", "--runs", str(tmp_path / "results"), "--out", str(tmp_path / "rep")]
    args += ["--no-plots", "--no-html", "--units", "all", "--latex-layout", "rows"]
    args += ["--n-boot", "10"]
    assert main(args) == 0
    tex = (tmp_path / "rep" / "tables" / "toy_dice.tex").read_text(encoding="utf-8")
    assert tex.count("\\begin{table}") == 3 and "\\textsuperscript{\\dag}" in tex


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ({"metrics": ("dice", "hd99")}, "unknown metric 'hd99'"),
        ({"regions": ("WT", "XX")}, "region 'XX' is not in the results"),
        ({"baseline": "nosuch"}, "baseline 'nosuch' has no runs"),
        ({"units": "some"}, "units must be one of"),
        ({"latex_layout": "wide"}, "latex_layout must be one of"),
        ({"cost_axis": "watts"}, "cost_axis must be one of"),
        ({"formats": ("md", "pdf")}, "format must be one of"),
    ],
)
def test_report_options_refused_before_any_work(tmp_path, option, message) -> None:
    write_run_folders(fake_results(methods=("a", "b"), n_cases=2), tmp_path / "results")
    with pytest.raises(ReportError, match=message):
        build_report(tmp_path / "results", tmp_path / "rep", html=False, **option)
    assert not (tmp_path / "rep").exists()
