"""The results store: a run's tidy metrics table, written atomically, resumable.

Rows follow :data:`mmbench.benchmark.schema.RESULT_COLUMNS`. Each :meth:`ResultsStore.add_rows`
rewrites ``metrics.csv`` through a temporary file and an atomic rename, so a killed run leaves
either the previous table or the new one, never a torn row; a (case, subset) unit whose rows are
present is finished and is skipped on resume.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from mmbench.atomic import read_csv_rows, write_csv_rows_atomic
from mmbench.benchmark.schema import RESULT_COLUMNS


class ResultsStore:
    """Rows of one run, kept in ``path`` (a CSV with :data:`RESULT_COLUMNS`)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._rows: list[dict[str, Any]] = read_csv_rows(self.path) if self.path.exists() else []
        if self._rows:
            missing = set(RESULT_COLUMNS) - set(self._rows[0])
            if missing:
                raise ValueError(f"{self.path}: not an mmbench results table (missing {missing})")

    def finished_units(self) -> set[tuple[str, str]]:
        """(case, subset) pairs that already have rows."""
        return {(str(r["case"]), str(r["subset"])) for r in self._rows}

    def add_rows(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Append rows (each with every column of :data:`RESULT_COLUMNS`), atomically."""
        new = []
        for row in rows:
            missing = [c for c in RESULT_COLUMNS if c not in row]
            if missing:
                raise ValueError(f"result row lacks columns {missing}: {dict(row)}")
            new.append({c: row[c] for c in RESULT_COLUMNS})
        if not new:
            return
        units = {(str(r["case"]), str(r["subset"])) for r in new}
        kept = [r for r in self._rows if (str(r["case"]), str(r["subset"])) not in units]
        self._rows = kept + new
        write_csv_rows_atomic(self.path, self._rows, RESULT_COLUMNS)

    def __len__(self) -> int:
        return len(self._rows)

    def frame(self) -> pd.DataFrame:
        """The table as a DataFrame (``value`` as float)."""
        df = pd.DataFrame(self._rows, columns=list(RESULT_COLUMNS))
        df["value"] = pd.to_numeric(df["value"], errors="coerce")
        return df
