"""Aggregation over a tiny hand-made results table."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from mmbench.benchmark.aggregate import (
    AVG_LABEL,
    empty_reference_counts,
    mean_std,
    subset_average,
)
from mmbench.benchmark.schema import RESULT_COLUMNS
from mmbench.subsets import SUBSET_NAMES

POLICY = {"empty_policy": "penalty", "hd95_mode": "pooled", "max_distance": 373.1287}


def row(case: str, subset: str, region: str, metric: str, value: float, **kw) -> dict:
    base = {"dataset": "toy", "method": "m", "seed": 0, "fold": 0, **POLICY}
    return {**base, "case": case, "subset": subset, "region": region, "metric": metric,
            "value": value, **kw}  # fmt: skip


def table() -> pd.DataFrame:
    rows = []
    for i, subset in enumerate(SUBSET_NAMES):
        # case a: dice i/100, case b: dice i/100 + 0.2, case c: NaN (excluded)
        rows.append(row("a", subset, "ET", "dice", i / 100))
        rows.append(row("b", subset, "ET", "dice", i / 100 + 0.2))
        rows.append(row("c", subset, "ET", "dice", math.nan))
        for case, n in (("a", 0), ("b", 120), ("c", 0)):
            rows.append(row(case, subset, "ET", "ref_voxels", n))
            rows.append(row(case, subset, "WT", "ref_voxels", 1000))
    df = pd.DataFrame(rows)
    assert set(df.columns) == set(RESULT_COLUMNS)
    return df[list(RESULT_COLUMNS)]


def test_mean_std_skips_nan_and_counts_cases() -> None:
    out = mean_std(table())
    dice = out[out["metric"] == "dice"].set_index("subset")
    assert list(dice.index) == list(SUBSET_NAMES)  # display order
    t1ce = dice.loc["T1ce"]  # i = 1
    assert t1ce["mean"] == pytest.approx(0.11)
    assert t1ce["std"] == pytest.approx(math.sqrt(2) * 0.1)  # sample std of {0.01, 0.21}
    assert t1ce["n"] == 2 and t1ce["n_nan"] == 1
    assert t1ce["empty_policy"] == "penalty"  # conventions are kept as keys


def test_mean_std_never_mixes_conventions() -> None:
    df = table()
    other = df.assign(empty_policy="zero", value=df["value"] + 1)
    out = mean_std(pd.concat([df, other]))
    dice_t1 = out[(out["metric"] == "dice") & (out["subset"] == "T1")]
    assert sorted(dice_t1["mean"]) == pytest.approx([0.1, 1.1])


def test_subset_average_is_mean_of_subset_means() -> None:
    out = subset_average(table())
    dice = out[out["metric"] == "dice"]
    assert list(dice["subset"]) == [*SUBSET_NAMES, AVG_LABEL]
    avg = dice[dice["subset"] == AVG_LABEL].iloc[0]
    assert avg["mean"] == pytest.approx(sum(i / 100 + 0.1 for i in range(15)) / 15)
    assert avg["n"] == 15 and math.isnan(avg["std"])
    # the same from a mean_std table
    again = subset_average(mean_std(table()))
    pd.testing.assert_frame_equal(out, again)


def test_subset_average_requires_all_subsets() -> None:
    df = table()
    partial = df[df["subset"] != "T1"]
    with pytest.raises(ValueError, match="T1"):
        subset_average(partial)
    out = subset_average(partial, require_all=False)
    avg = out[(out["metric"] == "dice") & (out["subset"] == AVG_LABEL)].iloc[0]
    assert avg["n"] == 14
    assert avg["mean"] == pytest.approx(sum(i / 100 + 0.1 for i in range(1, 15)) / 14)


def test_empty_reference_counts_unique_per_case() -> None:
    out = empty_reference_counts(table()).set_index("region")
    assert out.loc["ET", "n_empty"] == 2  # cases a and c, once each despite 15 subsets
    assert out.loc["ET", "n_cases"] == 3
    assert out.loc["ET", "share_empty"] == pytest.approx(2 / 3)
    assert out.loc["WT", "n_empty"] == 0
    with pytest.raises(ValueError, match="ref_voxels"):
        empty_reference_counts(table().query("metric == 'dice'"))
