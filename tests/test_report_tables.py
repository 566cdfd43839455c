"""Report tables and statistics from fixture results built in this file."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from report_fixtures import fake_results

from mmbench.benchmark.schema import RESULT_COLUMNS
from mmbench.reporting.family import family_view, frame_to_latex, mean_ranks
from mmbench.reporting.stats import (
    bootstrap_avg_ci,
    holm,
    paired_wilcoxon,
    paired_wilcoxon_many,
)
from mmbench.reporting.tables import (
    AVG,
    MixedPolicyError,
    build_table,
    empty_reference_counts,
    to_frame,
    to_latex,
    to_markdown,
)
from mmbench.subsets import SUBSET_NAMES

CASES = ("c0", "c1", "c2", "c3")


def tiny_results(policy: str = "penalty") -> pd.DataFrame:
    """Two methods, four cases, every subset; values chosen so means are known exactly.

    Dice of method A on case i = 0.5 + 0.1 * i + 0.01 * (subset index); method B = A - 0.2 on
    WT and A + 0.1 on ET; TC equal. HD95 of A = 10 + i, of B = 5 + i (lower is better).
    ``ref_voxels``: case c3 has an empty ET.
    """
    rows = []
    for si, subset in enumerate(SUBSET_NAMES):
        for ci, case in enumerate(CASES):
            for region in ("WT", "TC", "ET"):
                a = 0.5 + 0.1 * ci + 0.01 * si
                b = {"WT": a - 0.2, "TC": a, "ET": a + 0.1}[region]
                for method, dice, hd in (("A", a, 10.0 + ci), ("B", b, 5.0 + ci)):
                    base = {"dataset": "ds", "method": method, "seed": 0, "fold": 0}
                    base |= {"case": case, "subset": subset, "region": region}
                    rows.append({**base, "metric": "dice", "value": dice})
                    rows.append({**base, "metric": "hd95", "value": hd})
                    empty = region == "ET" and case == "c3"
                    rows.append({**base, "metric": "ref_voxels", "value": 0.0 if empty else 50.0})
    df = pd.DataFrame(rows)
    df["empty_policy"] = policy
    df["hd95_mode"] = "pooled"
    df["max_distance"] = 373.1287
    return df[list(RESULT_COLUMNS)]


def test_table_values_avg_and_order() -> None:
    t = build_table(tiny_results(), "ds", "dice", n_boot=200)
    assert list(t.mean.index) == [*SUBSET_NAMES, AVG]
    # mean over cases of A on subset 0: 0.5 + 0.1 * mean(0..3) = 0.65 -> 65 %
    assert t.mean.loc["T1", ("WT", "A")] == pytest.approx(65.0)
    assert t.mean.loc["T1", ("WT", "B")] == pytest.approx(45.0)
    assert t.mean.loc["T1", ("ET", "B")] == pytest.approx(75.0)
    # Avg. = mean over subsets: 65 + mean(0..14) = 72
    assert t.mean.loc[AVG, ("WT", "A")] == pytest.approx(72.0)
    assert t.mean.loc[AVG, ("ET", "B")] == pytest.approx(82.0)


def test_bold_best_dice_max_hd95_min() -> None:
    dice = build_table(tiny_results(), "ds", "dice", n_boot=50)
    assert dice.best.loc["T1", ("WT", "A")] and not dice.best.loc["T1", ("WT", "B")]
    assert dice.best.loc[AVG, ("ET", "B")] and not dice.best.loc[AVG, ("ET", "A")]
    # a tie at display precision: both bold
    assert dice.best.loc["T1", ("TC", "A")] and dice.best.loc["T1", ("TC", "B")]
    md = to_markdown(dice)
    avg_line = next(line for line in md.splitlines() if line.startswith("| **Avg.**"))
    assert "**72.00**" in avg_line and "**82.00**" in avg_line
    hd = build_table(tiny_results(), "ds", "hd95", n_boot=50)
    assert hd.best.loc["T1", ("WT", "B")] and not hd.best.loc["T1", ("WT", "A")]
    assert "**6.50**" in to_markdown(hd)


def test_baseline_default_is_best_and_significance_marks() -> None:
    rng = np.random.default_rng(0)
    df = fake_results(methods=("good", "bad"), n_cases=25, seed=3)
    bad = (df["method"] == "bad") & (df["metric"] == "dice") & (df["region"] == "WT")
    df.loc[bad, "value"] = df.loc[bad, "value"] - 0.2 - rng.random(bad.sum()) * 0.01
    t = build_table(df, "synthetic", "dice", n_boot=50)
    assert t.baseline == "good"
    assert t.significant.loc[AVG, ("WT", "bad")]
    assert not t.significant[("WT", "good")].any()  # the baseline is never marked
    assert "\\*" in to_markdown(t) and "$^{*}$" in to_latex(t)


def test_markdown_modality_marks_in_published_order() -> None:
    md = to_markdown(build_table(tiny_results(), "ds", "dice", n_boot=20))
    lines = [line for line in md.splitlines() if line.startswith("| ●") or line.startswith("| ○")]
    assert len(lines) == 15
    assert lines[0].startswith("| ● | ○ | ○ | ○ |")  # T1 first
    assert lines[-1].startswith("| ● | ● | ● | ● |")  # full set last


def test_latex_environments_balanced_and_escaped() -> None:
    df = tiny_results()
    df["method"] = df["method"].map({"A": "my_method", "B": "B&C"})
    tex = to_latex(build_table(df, "ds", "hd95", with_std=True, n_boot=20))
    begins = re.findall(r"\\begin\{(\w+)\}", tex)
    ends = re.findall(r"\\end\{(\w+)\}", tex)
    assert sorted(begins) == sorted(ends)
    assert set(begins) == {"table", "tabular"} and begins.count("table") == 1
    assert tex.count("{") == tex.count("}")
    assert "my\\_method" in tex and "B\\&C" in tex
    assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex
    # every body row has the full number of cells
    ncols = 4 + 2 * 3
    for line in tex.splitlines():
        if line.endswith("\\\\") and "multicolumn" not in line:
            assert len(re.findall(r"(?<!\\)&", line)) == ncols - 1, line
    fam = frame_to_latex(pd.DataFrame({"a_b": ["x%"], "v": [1.0]}), "cap", "tab:x")
    assert fam.count("\\begin{") == fam.count("\\end{") == 2 and "x\\%" in fam


def test_hd95_table_states_policy_and_empty_counts() -> None:
    df = tiny_results()
    t = build_table(df, "ds", "hd95", empty_counts=empty_reference_counts(df, "ds"), n_boot=20)
    md = to_markdown(t)
    assert "penalty" in md and "373.13" in md
    assert "ET 1/4" in md and "WT 0/4" in md
    assert "penalty" in to_latex(t)


def test_zero_policy_still_states_distance_constant() -> None:
    md = to_markdown(build_table(tiny_results("zero"), "ds", "hd95", n_boot=20))
    assert "zero" in md and "373.13" in md


def test_mixed_policies_refused() -> None:
    df = pd.concat([tiny_results("penalty"), tiny_results("zero").assign(method="C")])
    with pytest.raises(MixedPolicyError, match="zero"):
        build_table(df, "ds", "hd95")


def test_unrecorded_policy_is_said_not_invented() -> None:
    df = tiny_results()
    df[["empty_policy", "hd95_mode", "max_distance"]] = np.nan
    md = to_markdown(build_table(df, "ds", "hd95", n_boot=20))
    assert "not recorded" in md and "penalty" not in md


def test_csv_round_trip(tmp_path) -> None:
    t = build_table(tiny_results(), "ds", "dice", with_std=True, n_boot=20)
    path = tmp_path / "t.csv"
    to_frame(t).to_csv(path, index=False)
    back = pd.read_csv(path)
    assert list(back["subset"][:16]) == [*SUBSET_NAMES, AVG]
    assert back.loc[15, "WT/A"] == pytest.approx(72.0)
    assert {"WT/A/std", "WT/B/p_holm"} <= set(back.columns)
    assert back.loc[0, "T1"] == 1 and back.loc[0, "FLAIR"] == 0


def test_means_agree_with_benchmark_aggregate() -> None:
    aggregate = pytest.importorskip("mmbench.benchmark.aggregate")
    df = fake_results(methods=("a", "b"), n_cases=6)
    t = build_table(df, "synthetic", "hd95", n_boot=20)
    agg = aggregate.subset_average(df[df["metric"] == "hd95"])
    for row in agg.itertuples():
        assert t.mean.loc[row.subset, (row.region, row.method)] == pytest.approx(row.mean)


def test_holm_matches_hand_computation() -> None:
    p = [0.01, 0.04, 0.03, 0.2, np.nan]
    # sorted 0.01, 0.03, 0.04, 0.2 with m = 4: 0.04, 0.09, 0.09 (monotone), 0.2
    assert holm(p)[:4] == pytest.approx([0.04, 0.09, 0.09, 0.2])
    assert np.isnan(holm(p)[4])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])


def test_wilcoxon_batch_equals_single_calls() -> None:
    rng = np.random.default_rng(1)
    pairs = []
    for k in range(40):
        a = rng.normal(0.7, 0.1, 20).round(2)
        b = a + rng.normal(0.02 * (k % 3), 0.05, 20).round(2)
        b[: k % 7] = a[: k % 7]  # zero differences
        if k == 5:
            b = a.copy()
        if k == 6:
            a[3] = np.nan
        pairs.append((a, b))
    batch = paired_wilcoxon_many(pairs)
    single = [paired_wilcoxon(a, b)[0] for a, b in pairs]
    assert batch == pytest.approx(single)
    assert batch[5] == 1.0
    assert paired_wilcoxon([np.nan], [1.0]) == (pytest.approx(np.nan, nan_ok=True), 0)


def test_wilcoxon_small_samples_with_ties_match_scipy() -> None:
    # n <= 13 with ties: scipy runs a permutation test; ours is a matrix product, same p-values
    rng = np.random.default_rng(4)
    pairs = [
        (rng.integers(0, 4, n).astype(float), rng.integers(0, 4, n).astype(float))
        for n in rng.integers(3, 12, 12)
    ]
    batch = paired_wilcoxon_many(pairs)
    single = [paired_wilcoxon(a, b)[0] for a, b in pairs]
    assert batch == pytest.approx(single, rel=1e-12)


def test_bootstrap_seeded_and_covers_mean() -> None:
    rng = np.random.default_rng(2)
    m = rng.normal(80, 5, (40, 15))
    lo, hi = bootstrap_avg_ci(m, n_boot=500, seed=7)
    assert (lo, hi) == bootstrap_avg_ci(m, n_boot=500, seed=7)
    assert lo < m.mean() < hi and hi - lo < 5
    m[0, 0] = np.nan
    lo2, hi2 = bootstrap_avg_ci(m, n_boot=500, seed=7)
    assert lo2 < np.nanmean(m) < hi2


def test_family_view_and_mean_ranks() -> None:
    df = fake_results(methods=("a", "b", "c"), n_cases=6)
    t = build_table(df, "synthetic", "dice", n_boot=20)
    fams = {"a": "knowledge-distillation", "b": "knowledge-distillation", "c": "data-generation"}
    view = family_view(t, fams)
    assert list(view["family"]) == ["data-generation", "knowledge-distillation"]
    kd = view[view["family"] == "knowledge-distillation"].iloc[0]
    # a is better on test, but without val scores or a registered member nothing is chosen
    assert kd["members"] == 2 and kd["representative"] == "–" and kd["chosen by"] == "none"
    dg = view[view["family"] == "data-generation"].iloc[0]
    assert dg["representative"] == "c" and dg["chosen by"] == "only member"
    # the val score chooses, even against the test ranking
    by_val = family_view(t, fams, {"a": 0.5, "b": 0.7}).set_index("family")
    kd = by_val.loc["knowledge-distillation"]
    assert kd["representative"] == "b" and kd["chosen by"] == "val score"
    want = np.mean([t.mean.loc[AVG, (r, "b")] for r in ("WT", "TC", "ET")])
    assert kd["rep. Avg."] == pytest.approx(want)
    # without val scores of every member: the registered representative
    fams2 = {"a": "knowledge-distillation", "adamm": "knowledge-distillation", "c": "reference"}
    t2 = build_table(df.replace({"method": {"b": "adamm"}}), "synthetic", "dice", n_boot=20)
    kd2 = family_view(t2, fams2, {"a": 0.9}).set_index("family").loc["knowledge-distillation"]
    assert kd2["representative"] == "adamm" and kd2["chosen by"] == "registered"
    avg = t.mean.loc[AVG]
    expected = np.mean([np.mean([avg[(r, m)] for r in ("WT", "TC", "ET")]) for m in "ab"])
    assert kd["mean Avg."] == pytest.approx(expected)
    ranks = mean_ranks(t)
    assert list(ranks["method"]) == ["a", "b", "c"]  # fixture: a better than b better than c
    assert ranks["all"].between(1, 3).all()
    assert ranks.loc[0, "all"] < ranks.loc[2, "all"]


def test_family_view_ranks_the_representatives() -> None:
    df = fake_results(methods=("a", "b", "c"), n_cases=6)
    t = build_table(df, "synthetic", "dice", n_boot=20)
    fams = {"a": "data-generation", "b": "multi-task", "c": "reference"}
    view = family_view(t, fams).set_index("family")
    # fixture: a better than b better than c, each the only member of its family
    assert view.loc["data-generation", "rep. rank"] < view.loc["reference", "rep. rank"]
    assert view["rep. rank"].between(1, 3).all()
