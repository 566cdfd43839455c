"""Provenance, costs, seeds, statistical reach, ablations and figure labels of a report."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
from report_fixtures import fake_results, write_run_folders

from mmbench.reporting.api import build_report
from mmbench.reporting.plots import axis_label, change_label, figure_caption
from mmbench.reporting.provenance import COST_COLUMNS
from mmbench.reporting.qualitative import brain_box
from mmbench.reporting.stats import min_wilcoxon_p
from mmbench.reporting.tables import build_table, power_note, to_markdown

CONFIG = {
    "preset": "smoke",
    "train": {"steps": 40, "batch_size": 2, "lr": 0.003},
    "model": {"patch_size": [16, 16, 16]},
}
COSTS = {
    "params_inference": 1_200_000,
    "params_training": 300_000,
    "gflops_forward": 2.5,
    "train_s_per_step": 0.4,
    "infer_s_per_case": 3.0,
    "peak_memory_mb": 900.0,
}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """alpha (with run.json costs) and beta (parameters only), 3 seeds each, with figures."""
    tmp = tmp_path_factory.mktemp("prov")
    df = pd.concat(
        [
            fake_results(methods=("alpha", "beta"), datasets=("toy",), n_cases=4, seed=s).assign(
                seed=s
            )
            for s in range(3)
        ],
        ignore_index=True,
    )
    write_run_folders(
        df,
        tmp / "results",
        config=CONFIG,
        params={"beta": 2_000_000},
        per_method_info={"alpha": {"costs": COSTS, "params_training_only": 1}},
        extra_info={"preset": "smoke"},
    )
    summary = build_report(tmp / "results", tmp / "reports", n_boot=20, cost_axis="gflops_forward")
    return tmp, summary


def test_costs_table_has_the_columns_and_falls_back_to_params(report) -> None:
    tmp, summary = report
    names = {p.name for p in summary.tables}
    assert {"costs_toy.md", "costs_toy.csv", "costs_toy.tex"} <= names
    costs = pd.read_csv(tmp / "reports" / "tables" / "costs_toy.csv").set_index("method")
    assert list(costs.reset_index().columns) == ["method", "family", *COST_COLUMNS]
    for key, value in COSTS.items():
        assert costs.loc["alpha", key] == pytest.approx(value)
    assert costs.loc["beta", "params_inference"] == pytest.approx(2_000_000)
    assert math.isnan(costs.loc["beta", "gflops_forward"])
    md = (tmp / "reports" / "tables" / "costs_toy.md").read_text(encoding="utf-8")
    assert "| alpha | " in md and " 1200000 | 300000 | 2.5 | 0.4 | 3 | 900 |" in md
    assert "| 2000000 | – | – |" in md  # beta: parameters only
    # the accuracy-vs-cost figure on the chosen column: only alpha has GFLOPs
    assert any(p.name == "cost_toy.png" for p in summary.figures)


def test_provenance_block_in_markdown_html_and_tex(report) -> None:
    tmp, summary = report
    md = summary.markdown.read_text(encoding="utf-8")
    assert "## Provenance" in md
    assert re.search(r"Made by mmbench 0\.1\.0 \(commit \S+\) on \d{4}-\d\d-\d\d \d\d:\d\d UTC", md)
    line = next(x for x in md.splitlines() if x.startswith("- toy / alpha:"))
    for part in (
        "preset smoke",
        "steps 40",
        "batch 2",
        "crop 16×16×16",
        "lr 0.003",
        "seeds 0,1,2",
        "4 test cases",
        "run commit 0123456789",
    ):
        assert part in line
    html = summary.html.read_text(encoding="utf-8")
    assert "Provenance" in html and "Made by mmbench" in html
    assert "<td>0123456789</td>" in html and "<th>steps</th>" in html
    for tex in (p for p in summary.tables if p.suffix == ".tex"):
        text = tex.read_text(encoding="utf-8")
        assert text.startswith("% Provenance:\n% Made by mmbench"), tex.name


def test_html_captions_say_what_a_figure_shows(report) -> None:
    _, summary = report
    html = summary.html.read_text(encoding="utf-8")
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", html)
    assert captions and all(len(c) > 40 for c in captions)
    assert any(c.startswith("toy: Dice (%) of every method") for c in captions)


def test_seeds_give_std_across_seeds_and_a_seed_table(report) -> None:
    tmp, summary = report
    md = (tmp / "reports" / "tables" / "toy_dice.md").read_text(encoding="utf-8")
    assert " ± " in md and "std across seeds" in md and "alpha 3, beta 3" in md
    seeds = pd.read_csv(tmp / "reports" / "tables" / "seeds_toy_dice.csv").set_index("method")
    assert seeds.loc["alpha", "seeds"] == 3 and seeds.loc["alpha", "WT std"] > 0
    base = seeds["all mean"].idxmax()
    other = next(m for m in seeds.index if m != base)
    assert 0 <= seeds.loc[other, "p across seeds"] <= 1
    assert seeds.loc[other, "p within seed"].count("seed ") == 3


def test_std_across_seeds_matches_hand_computation() -> None:
    frames = [fake_results(methods=("a", "b"), n_cases=3, seed=s).assign(seed=s) for s in range(2)]
    df = pd.concat(frames, ignore_index=True)
    t = build_table(df, "synthetic", "dice", n_boot=10)
    wt = df[(df["metric"] == "dice") & (df["region"] == "WT") & (df["method"] == "a")]
    per_seed = wt.groupby(["seed", "subset"])["value"].mean().groupby("seed").mean() * 100
    assert t.std.loc["Avg.", ("WT", "a")] == pytest.approx(per_seed.std(ddof=1))
    assert t.std_kind == "seeds" and t.with_std


def test_footer_says_when_no_test_can_reach_the_level() -> None:
    assert min_wilcoxon_p(6) == pytest.approx(1 / 32)
    note = power_note(6, 48)
    assert note and "0.0312" in note and "at least 1" in note and "no * can appear" in note
    assert power_note(25, 48) is None
    small = build_table(fake_results(methods=("a", "b"), n_cases=6), "synthetic", "dice", n_boot=10)
    assert "smallest possible two-sided Wilcoxon p is 0.0312" in to_markdown(small)
    big = build_table(fake_results(methods=("a", "b"), n_cases=25), "synthetic", "dice", n_boot=10)
    assert "smallest possible" not in to_markdown(big)


def test_ablations_get_their_own_table_and_stay_out_of_the_family_view(tmp_path) -> None:
    pytest.importorskip("mmbench.methods")
    df = fake_results(methods=("adamm", "adamm-no-garm", "zerofill"), datasets=("toy",), n_cases=3)
    families = {
        "adamm": "knowledge-distillation",
        "adamm-no-garm": "knowledge-distillation",
        "zerofill": "reference",
    }
    write_run_folders(df, tmp_path / "results", families=families)
    build_report(tmp_path / "results", tmp_path / "r", plots_enabled=False, html=False, n_boot=10)
    tables = tmp_path / "r" / "tables"
    main = (tables / "toy_dice.md").read_text(encoding="utf-8")
    abl = (tables / "ablations_toy_dice.md").read_text(encoding="utf-8")
    assert "adamm-no-garm" not in main and "adamm-no-garm" in abl and "zerofill" not in abl
    fam = pd.read_csv(tables / "family_toy_dice.csv").set_index("family")
    kd = fam.loc["knowledge-distillation"]
    assert kd["members"] == 1 and kd["representative"] == "adamm"


def test_figure_labels() -> None:
    assert axis_label("hd95") == "HD95 (mm)"
    assert change_label("dice") == "drop in Dice (percentage points)"
    assert change_label("hd95") == "drop in HD95 (mm)"
    cap = figure_caption("figures/modality_drop_brats2024_dice.png")
    assert cap.startswith("brats2024: Drop of the full-set Dice (%)")
    assert "T1ce image" in figure_caption("qualitative_toy.png")


def test_brain_box_crops_to_the_brain() -> None:
    img = np.zeros((200, 200))
    img[60:120, 80:150] = 1.0 + np.random.default_rng(0).random((60, 70))
    bx, by = brain_box(img, margin=4)
    assert bx.stop - bx.start == by.stop - by.start == 70 + 8
    assert bx.start <= 60 and bx.stop >= 120 and by.start <= 80 and by.stop >= 150


def test_seed_spread_of_the_overall_average() -> None:
    from mmbench.reporting.plots import seed_spread

    frames = [fake_results(methods=("a",), n_cases=3, seed=s).assign(seed=s) for s in range(3)]
    df = pd.concat(frames, ignore_index=True)
    d = df[df["metric"] == "dice"]
    per_seed = [
        d[d["seed"] == s].groupby(["region", "subset"])["value"].mean().mean() * 100
        for s in range(3)
    ]
    assert seed_spread(df, "synthetic", "dice")["a"] == pytest.approx(np.std(per_seed, ddof=1))
    assert np.isnan(seed_spread(frames[0], "synthetic", "dice")["a"])


def test_qualitative_title_names_background_and_clears_the_headers(tmp_path, monkeypatch) -> None:
    from test_report_build import write_predictions, write_tiny_dataset

    from mmbench.reporting import plots
    from mmbench.reporting.qualitative import qualitative_figure

    data = write_tiny_dataset(tmp_path / "data")
    runs = []
    for i, method in enumerate(("alpha", "beta")):
        run = tmp_path / method
        write_predictions(run / "predictions", shift=i)
        runs.append({"method": method, "run_dir": str(run), "data_root": str(data)})
    drawn = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, stem: drawn.append(fig) or [])
    qualitative_figure(runs, tmp_path / "figs", "brats2024")
    (fig,) = drawn
    renderer = fig.canvas.get_renderer()
    fig.canvas.draw()
    title = fig._suptitle
    assert "background: T1ce" in title.get_text()
    title_box = title.get_window_extent(renderer)
    top_axes = [ax for ax in fig.axes if ax.get_title()]
    assert top_axes
    for ax in top_axes:
        header = ax.title.get_window_extent(renderer)
        assert header.y1 < title_box.y0, (ax.get_title(), header, title_box)
