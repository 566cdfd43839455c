"""Like with like: the (case, subset) units a set of methods was scored on.

A *unit* is one test case under one modality subset. Two methods can only be compared on the units
both were scored on: a method evaluated on 4 of the 15 subsets, or on other cases, would otherwise
get an "Avg." over a different set of numbers. By default (``mode="common"``) every table keeps
only the units common to the methods it shows; ``mode="all"`` keeps every method's own units and
flags the methods that lack some (their cells are never bold, and they are never the default
baseline).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from mmbench.errors import ReportError

UNIT_MODES: tuple[str, ...] = ("common", "all")
PARTIAL_MARK = "†"
"""Mark after a method name whose units are a strict part of the union (``mode="all"``)."""


@dataclass(frozen=True)
class Coverage:
    """Which units each method has, and which the tables use.

    Attributes:
        methods: the methods shown, in table order.
        units: per method, its set of (case, subset) units.
        mode: ``"common"`` or ``"all"``.
    """

    methods: tuple[str, ...]
    units: dict[str, frozenset[tuple[str, str]]]
    mode: str = "common"

    @property
    def union(self) -> frozenset[tuple[str, str]]:
        return frozenset().union(*self.units.values()) if self.units else frozenset()

    @property
    def common(self) -> frozenset[tuple[str, str]]:
        sets = list(self.units.values())
        return frozenset.intersection(*sets) if sets else frozenset()

    def missing(self, method: str) -> int:
        """Units of the union the method was not scored on."""
        return len(self.union - self.units.get(method, frozenset()))

    @property
    def incomplete(self) -> list[str]:
        """Methods lacking some unit of the union, in table order."""
        return [m for m in self.methods if self.missing(m)]

    @property
    def partial(self) -> list[str]:
        """Methods whose means are over fewer units than others' (only in ``mode="all"``)."""
        return self.incomplete if self.mode == "all" else []

    def note(self) -> str:
        """One sentence: how many units the tables use and which methods lack units."""
        used = self.common if self.mode == "common" else self.union
        cases = {c for c, _ in used}
        subsets = {s for _, s in used}
        n_methods = len(self.methods)
        if self.mode == "common":
            text = (
                f"Units: the {len(used)} (case, subset) pairs common to the {n_methods} methods "
                f"shown ({len(cases)} cases, {len(subsets)} subsets)."
            )
        else:
            text = (
                f"Units: each method's own (case, subset) pairs, {len(used)} in all "
                f"({len(cases)} cases, {len(subsets)} subsets)."
            )
        lacking = [f"{m} lacks {self.missing(m)}" for m in self.incomplete]
        if lacking:
            if self.mode == "common":
                text += (
                    f" Left out because not every method has them: {', '.join(lacking)} of the "
                    f"{len(self.union)} units in any run."
                )
            else:
                text += (
                    f" {PARTIAL_MARK}: mean over fewer units than the others "
                    f"({', '.join(lacking)} of {len(self.union)}); never bold, not comparable."
                )
        return text


def method_units(df: pd.DataFrame, methods: Sequence[str]) -> dict[str, frozenset]:
    """Per method, the (case, subset) pairs with at least one non-missing value in ``df``."""
    rows = df[df["method"].isin(list(methods)) & df["value"].notna()]
    rows = rows[rows["metric"] != "ref_voxels"] if (rows["metric"] != "ref_voxels").any() else rows
    pairs = rows[["method", "case", "subset"]].drop_duplicates()
    out: dict[str, frozenset] = {m: frozenset() for m in methods}
    for method, block in pairs.groupby("method", sort=False):
        out[str(method)] = frozenset(zip(block["case"].astype(str), block["subset"].astype(str)))
    return out


def like_with_like(
    df: pd.DataFrame, methods: Sequence[str], mode: str = "common"
) -> tuple[pd.DataFrame, Coverage]:
    """Rows of ``methods`` restricted to their common units (``mode="common"``) or kept whole.

    Args:
        df: tidy rows of one dataset.
        methods: methods shown together, in table order.
        mode: ``"common"`` or ``"all"``.

    Returns:
        ``(rows, coverage)``: the rows the tables should use, and what was kept.

    Raises:
        ReportError: an unknown mode, or (``common``) methods that share no unit.
    """
    if mode not in UNIT_MODES:
        raise ReportError(f"units must be one of {', '.join(UNIT_MODES)}; got {mode!r}")
    coverage = Coverage(tuple(methods), method_units(df, methods), mode)
    sel = df[df["method"].isin(list(methods))]
    if mode == "all" or not coverage.incomplete:
        return sel, coverage
    common = coverage.common
    if not common:
        listing = "; ".join(f"{m}: {len(u)} units" for m, u in coverage.units.items())
        raise ReportError(
            f"the methods {', '.join(methods)} share no (case, subset) unit ({listing}); "
            "report them separately (--runs) or pass --units all to show each on its own units"
        )
    keys = pd.MultiIndex.from_frame(sel[["case", "subset"]].astype(str))
    keep = keys.isin(list(common))
    return sel[keep], coverage
