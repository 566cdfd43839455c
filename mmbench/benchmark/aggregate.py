"""Aggregation of tidy per-case results (rows with ``schema.RESULT_COLUMNS``).

Field convention (``/shared/specs/metrics.md``): per case → mean and std over cases for each
subset and region → ``"Avg."`` = the mean over the 15 subsets of the per-subset means. The
metric conventions (``empty_policy``, ``hd95_mode``, ``max_distance``) are always part of the
grouping keys when present, so values computed under different conventions never share a mean.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from mmbench.subsets import SUBSET_NAMES, subset_order_key

GROUP_KEYS: tuple[str, ...] = ("dataset", "method", "subset", "region", "metric")
CONVENTION_KEYS: tuple[str, ...] = ("empty_policy", "hd95_mode", "max_distance")
AVG_LABEL = "Avg."


def _keys(df: pd.DataFrame, by: Sequence[str], drop: Sequence[str] = ()) -> list[str]:
    keys = [k for k in (*GROUP_KEYS, *by, *CONVENTION_KEYS) if k in df.columns and k not in drop]
    missing = [k for k in GROUP_KEYS if k not in df.columns and k not in drop]
    if missing:
        raise ValueError(f"results lack the columns {missing}")
    return list(dict.fromkeys(keys))


def _subset_sort(df: pd.DataFrame) -> pd.DataFrame:
    order = {name: i for i, name in enumerate(SUBSET_NAMES)}
    order[AVG_LABEL] = len(SUBSET_NAMES)

    def rank(name: str) -> int:
        return order[name] if name in order else subset_order_key(name)

    keys = [c for c in ("dataset", "method", "region", "metric") if c in df.columns]
    df = df.assign(_rank=df["subset"].map(rank))
    return df.sort_values([*keys, "_rank"], kind="stable").drop(columns="_rank")


def mean_std(df: pd.DataFrame, by: Sequence[str] = (), ddof: int = 1) -> pd.DataFrame:
    """Mean and standard deviation over cases.

    Args:
        df: tidy rows (one value per case, subset, region, metric, ...).
        by: extra grouping columns (e.g. ``("seed",)``); by default all seeds/folds pool.
        ddof: delta degrees of freedom of the std (1: sample std; NaN with one case).

    Returns:
        One row per (dataset, method, subset, region, metric[, by][, conventions]) with
        ``mean``, ``std`` (NaNs skipped), ``n`` (values used) and ``n_nan`` (values left out,
        e.g. both-empty cases under the ``nan`` policy); subsets in display order.
    """
    keys = _keys(df, by)
    values = pd.to_numeric(df["value"], errors="coerce")
    grouped = values.groupby([df[k] for k in keys], dropna=False, sort=False)
    out = pd.DataFrame(
        {
            "mean": grouped.mean(),
            "std": grouped.std(ddof=ddof),
            "n": grouped.count(),
            "n_nan": grouped.size() - grouped.count(),
        }
    ).reset_index()
    return _subset_sort(out).reset_index(drop=True)


def subset_average(
    df: pd.DataFrame, by: Sequence[str] = (), require_all: bool = True
) -> pd.DataFrame:
    """Per-subset means plus an ``"Avg."`` row per (dataset, method, region, metric).

    Args:
        df: tidy per-case rows, or the output of :func:`mean_std` (recognised by its ``mean``
            column).
        by: extra grouping columns, as in :func:`mean_std`.
        require_all: raise if a group lacks one of the 15 subsets (its "Avg." would not be
            comparable); with ``False`` the average runs over the subsets present.

    Returns:
        :func:`mean_std`'s table with ``"Avg."`` rows appended after the 15 subsets: ``mean`` =
        mean of the per-subset means (NaN means skipped), ``std`` = NaN, ``n`` = number of
        subsets averaged, ``n_nan`` = NaN.
    """
    table = df if "mean" in df.columns else mean_std(df, by=by)
    table = table[table["subset"] != AVG_LABEL]
    keys = _keys(table, by, drop=("subset",))
    rows = []
    for group, part in table.groupby(keys, dropna=False, sort=False):
        present = set(part["subset"])
        missing = [s for s in SUBSET_NAMES if s not in present]
        if missing and require_all:
            raise ValueError(f"{dict(zip(keys, group))}: no results for subsets {missing}")
        rows.append(
            {
                **dict(zip(keys, group)),
                "subset": AVG_LABEL,
                "mean": part["mean"].mean(),
                "std": float("nan"),
                "n": int(part["mean"].notna().sum()),
                "n_nan": float("nan"),
            }
        )
    avg = pd.DataFrame(rows, columns=table.columns)
    out = pd.concat([table, avg], ignore_index=True) if rows else table
    return _subset_sort(out).reset_index(drop=True)


def empty_reference_counts(rows: pd.DataFrame) -> pd.DataFrame:
    """How many cases have an empty reference, per (dataset, region).

    Args:
        rows: tidy rows including the ``ref_voxels`` metric (reference voxel count per case,
            subset and region, as written by ``region_metrics(..., metrics=(..., "ref_voxels"))``).
            The reference does not depend on subset or method, so each case counts once.

    Returns:
        Columns ``dataset`` (when present), ``region``, ``n_empty`` (cases whose reference
        has 0 voxels), ``n_cases`` (cases with a ``ref_voxels`` row), ``share_empty``.
    """
    sub = rows[rows["metric"] == "ref_voxels"]
    if sub.empty:
        raise ValueError("no 'ref_voxels' rows: score with metrics including 'ref_voxels'")
    keys = [k for k in ("dataset", "region") if k in sub.columns]
    empty = pd.to_numeric(sub["value"]) == 0
    per_case = empty.groupby([sub[k] for k in (*keys, "case")], sort=False).any()
    grouped = per_case.groupby(level=list(range(len(keys))), sort=False)
    out = pd.DataFrame({"n_empty": grouped.sum().astype(int), "n_cases": grouped.size()})
    out["share_empty"] = out["n_empty"] / out["n_cases"]
    return out.reset_index()
