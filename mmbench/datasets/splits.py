"""Train/validation/test splits: seeded, grouped by patient, stratified by grade.

Split files (:meth:`Split.from_file`) come in three forms:

* JSON: ``{"train": [ids], "val": [ids], "test": [ids]}`` (what :meth:`Split.to_json` writes);
* one text file with section headers, one case id per line; blank lines and ``#`` comments are
  ignored::

      [train]
      Brats18_2013_2_1
      [val]
      Brats18_CBICA_AAB_1
      [test]
      Brats18_TCIA01_131_1

* a folder holding ``train.txt``, ``val.txt`` and ``test.txt`` (one case id per line each).

Built-in splits (:func:`list_builtin_splits`) are published case lists shipped in
``mmbench/data/splits/`` with their provenance, e.g. RFNet's three BraTS 2018 splits; a built-in
name (``rfnet-brats2018-1``) is accepted wherever a split file is. :func:`split_sha256` hashes a
split's content, so a run records exactly which split it used.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from mmbench.atomic import atomic_write_text
from mmbench.datasets.base import Case, DatasetSpec
from mmbench.datasets.registry import get_dataset
from mmbench.errors import SplitError

SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")


@dataclass
class Split:
    """Case ids of the three parts of one split (each list sorted)."""

    train: list[str]
    val: list[str]
    test: list[str]

    def as_dict(self) -> dict[str, list[str]]:
        return {"train": list(self.train), "val": list(self.val), "test": list(self.test)}

    def to_json(self, path: str | Path) -> Path:
        """Write the split as JSON atomically (temp file, then rename)."""
        return atomic_write_text(Path(path), json.dumps(self.as_dict(), indent=1) + "\n")

    @classmethod
    def from_dict(cls, data: dict) -> Split:
        missing = [k for k in SPLIT_NAMES if k not in data]
        if missing:
            raise SplitError(f"a split needs keys {list(SPLIT_NAMES)}; missing {missing}")
        parts = {}
        for k in SPLIT_NAMES:
            ids = data[k]
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                raise SplitError(f"split part {k!r} must be a list of case id strings")
            parts[k] = list(ids)
        return cls(**parts)

    @classmethod
    def from_json(cls, path: str | Path) -> Split:
        with open(path) as f:
            return cls.from_dict(json.load(f))

    @classmethod
    def from_file(cls, path: str | Path) -> Split:
        """Read a split in any of the forms in the module docstring."""
        path = Path(path)
        if path.is_dir():
            files = {k: path / f"{k}.txt" for k in SPLIT_NAMES}
            missing = [str(p) for p in files.values() if not p.is_file()]
            if missing:
                raise SplitError(f"split folder {path} lacks {', '.join(missing)}")
            return cls(**{k: _read_ids(p.read_text().splitlines()) for k, p in files.items()})
        text = path.read_text()
        if text.lstrip().startswith("{"):
            return cls.from_dict(json.loads(text))
        return cls._from_sections(text, path)

    @classmethod
    def _from_sections(cls, text: str, path: Path) -> Split:
        parts: dict[str, list[str]] = {}
        current: str | None = None
        for n, raw in enumerate(text.splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            if line.startswith("[") and line.endswith("]"):
                current = line[1:-1].strip().lower()
                if current not in SPLIT_NAMES:
                    raise SplitError(f"{path}:{n}: unknown section [{current}]")
                parts.setdefault(current, [])
            elif current is None:
                raise SplitError(
                    f"{path}:{n}: case id before any [train]/[val]/[test] header; a text split "
                    "file needs the three section headers (or use JSON or a folder of three files)"
                )
            else:
                parts[current].append(line)
        return cls.from_dict(parts)

    def check(self, known_ids: Iterable[str]) -> None:
        """Raise ``ValueError`` if a part names an unknown case or a case sits in two parts."""
        known = set(known_ids)
        unknown = sorted({i for k in SPLIT_NAMES for i in getattr(self, k)} - known)
        if unknown:
            shown = ", ".join(unknown[:10]) + (" ..." if len(unknown) > 10 else "")
            raise SplitError(f"split names {len(unknown)} case id(s) not in the dataset: {shown}")
        seen: dict[str, str] = {}
        for k in SPLIT_NAMES:
            for i in getattr(self, k):
                if i in seen:
                    raise SplitError(f"case {i!r} is in both {seen[i]} and {k}")
                seen[i] = k

    def __len__(self) -> int:
        return len(self.train) + len(self.val) + len(self.test)


def _read_ids(lines: Iterable[str]) -> list[str]:
    return [s for s in (line.split("#", 1)[0].strip() for line in lines) if s]


def _stratified_order(
    groups: Sequence[str], strata: dict[str, str], rng: np.random.Generator
) -> list[str]:
    # Systematic sampling: shuffle each stratum, give its i-th of n groups the position
    # (i + u) / n, then sort all groups by position. Every contiguous run of the result (and every
    # round-robin fold) then holds each stratum in proportion.
    by_stratum: dict[str, list[str]] = defaultdict(list)
    for g in groups:
        by_stratum[strata[g]].append(g)
    keyed: list[tuple[float, float, str]] = []
    for stratum in sorted(by_stratum):
        members = list(by_stratum[stratum])
        rng.shuffle(members)
        offset = rng.random()
        for i, g in enumerate(members):
            keyed.append(((i + offset) / len(members), rng.random(), g))
    keyed.sort()
    return [g for _, _, g in keyed]


def _counts(n: int, fractions: Sequence[float]) -> tuple[int, int, int]:
    """Group counts (train, val, test) summing to ``n``; val and test ≥ 1 when ``n`` ≥ 3."""
    total = float(sum(fractions))
    f_train, f_val, f_test = (f / total for f in fractions)
    n_test = int(round(f_test * n))
    n_val = int(round(f_val * n))
    if n >= 3:
        n_test = max(n_test, 1) if f_test > 0 else 0
        n_val = max(n_val, 1) if f_val > 0 else 0
        while n - n_test - n_val < 1:
            if n_val >= n_test and n_val > 1:
                n_val -= 1
            else:
                n_test -= 1
    return n - n_val - n_test, n_val, n_test


def make_split(
    cases: Sequence[Case],
    spec: DatasetSpec | str,
    fractions: Sequence[float] = (0.7, 0.1, 0.2),
    seed: int = 0,
    k_folds: int | None = None,
    fold: int = 0,
) -> Split:
    """Split ``cases`` into train/val/test, reproducibly from ``seed``.

    Whole groups (``spec.group_key``: patients in BraTS 2024) go to one part, so no patient is in
    two parts; fractions count groups. With ``spec.stratify_key == "grade"`` each part holds the
    grades in proportion (unknown grade is its own stratum). The result does not depend on the
    order of ``cases``. With three or more groups every part is non-empty.

    Args:
        fractions: (train, val, test) shares; normalised to sum 1.
        k_folds: if given, the test part is fold ``fold`` of ``k_folds`` group-level folds and
            val is carved from the remaining groups with share ``val / (train + val)``.
    """
    spec = get_dataset(spec)
    if len(fractions) != 3 or min(fractions) < 0 or sum(fractions) <= 0:
        raise SplitError(f"fractions must be three non-negative shares, got {tuple(fractions)}")
    ids = [c.id for c in cases]
    if len(set(ids)) != len(ids):
        raise SplitError("case ids are not unique")
    members: dict[str, list[str]] = defaultdict(list)
    strata: dict[str, str] = {}
    for case in sorted(cases, key=lambda c: c.id):
        members[case.group].append(case.id)
        if spec.stratify_key == "grade":
            strata.setdefault(case.group, case.grade or "unknown")
        else:
            strata.setdefault(case.group, "all")
    groups = sorted(members)
    rng = np.random.default_rng(seed)
    order = _stratified_order(groups, strata, rng)

    if k_folds is None:
        n_train, n_val, n_test = _counts(len(order), fractions)
        test_g = order[:n_test]
        val_g = order[n_test : n_test + n_val]
        train_g = order[n_test + n_val :]
    else:
        if k_folds < 2 or not 0 <= fold < k_folds:
            raise SplitError(f"need k_folds >= 2 and 0 <= fold < k_folds, got {k_folds}, {fold}")
        if len(order) < k_folds + 1:
            raise SplitError(f"{len(order)} groups are too few for {k_folds} folds plus a val part")
        test_g = order[fold::k_folds]
        rest = [g for i, g in enumerate(order) if i % k_folds != fold]
        _, n_val, _ = _counts(len(rest), (fractions[0], fractions[1], 0.0))
        if fractions[1] > 0:
            n_val = max(n_val, 1)
        # `rest` keeps the stratified order, so a contiguous slice is stratified too; the offset
        # makes each fold's val differ.
        start = (fold * n_val) % len(rest)
        idx = [(start + i) % len(rest) for i in range(n_val)]
        val_g = [rest[i] for i in idx]
        train_g = [g for g in rest if g not in set(val_g)]

    def expand(gs: Iterable[str]) -> list[str]:
        return sorted(i for g in gs for i in members[g])

    return Split(train=expand(train_g), val=expand(val_g), test=expand(test_g))


def split_sha256(split: Split) -> str:
    """SHA-256 (hex) of a split's content: the compact JSON of ``{"test", "train", "val"}`` with
    each list sorted, so the order of ids and the file format do not change it."""
    canonical = {k: sorted(getattr(split, k)) for k in SPLIT_NAMES}
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ------------------------------------------------------------------------------ built-in splits
BUILTIN_SPLITS_DIR = "data/splits"


@dataclass(frozen=True)
class BuiltinSplit:
    """A published split shipped with mmbench (``mmbench/data/splits/<name>.json``).

    Attributes:
        name: the built-in name (``rfnet-brats2018-1``).
        dataset: the dataset its case ids belong to (``brats2018``).
        split: the case lists, in the order of the source file.
        source: ``owner/repo@commit:path`` of every list read.
        notes: provenance notes of the file.
    """

    name: str
    dataset: str
    split: Split
    source: tuple[str, ...]
    notes: str

    def as_row(self) -> dict[str, Any]:
        """``{name, dataset, train, val, test, sha256}`` (counts of case ids)."""
        s = self.split
        return {
            "name": self.name,
            "dataset": self.dataset,
            "train": len(s.train),
            "val": len(s.val),
            "test": len(s.test),
            "sha256": split_sha256(s),
        }


def _builtin_files() -> dict[str, Any]:
    folder = resources.files("mmbench").joinpath(BUILTIN_SPLITS_DIR)
    return {
        f.name.removesuffix(".json"): f
        for f in sorted(folder.iterdir(), key=lambda f: f.name)
        if f.name.endswith(".json")
    }


def builtin_split_names() -> list[str]:
    """Names of the built-in splits, sorted."""
    return sorted(_builtin_files())


def builtin_split(name: str) -> BuiltinSplit:
    """A built-in split by name.

    Raises:
        SplitError: unknown name (the message lists the built-ins).
    """
    files = _builtin_files()
    if name not in files:
        raise SplitError(
            f"unknown built-in split {name!r}; built-in splits: {', '.join(sorted(files))}"
        )
    data = json.loads(files[name].read_text(encoding="utf-8"))
    return BuiltinSplit(
        name=name,
        dataset=str(data.get("dataset", "")),
        split=Split.from_dict(data),
        source=tuple(data.get("source") or ()),
        notes=str(data.get("notes", "")),
    )


def list_builtin_splits() -> list[dict[str, Any]]:
    """One :meth:`BuiltinSplit.as_row` per built-in split (what ``mmbench data splits`` lists)."""
    return [builtin_split(n).as_row() for n in builtin_split_names()]


def is_builtin_split(value: str | Path | None) -> bool:
    """Whether ``split.file`` names a built-in split (an existing path of that name wins)."""
    return (
        value is not None and str(value) in builtin_split_names() and not Path(str(value)).exists()
    )


def split_name(
    file: str | Path | None, seed: int = 0, k_folds: int | None = None, fold: int = 0
) -> str:
    """How a run names its split: the built-in name, the split file's path, or the seeded
    split's settings (``seeded:seed=0`` / ``seeded:seed=0,fold=1/5``)."""
    if file is not None:
        return str(file) if is_builtin_split(file) else str(Path(str(file)).resolve())
    if k_folds:
        return f"seeded:seed={seed},fold={fold}/{k_folds}"
    return f"seeded:seed={seed}"


def check_split_file(value: str | Path | None) -> None:
    """Refuse a ``split.file`` that is neither an existing path nor a built-in name (before any
    data work).

    Raises:
        SplitError: the message lists the built-in names.
    """
    if value is None or is_builtin_split(value) or Path(str(value)).exists():
        return
    raise SplitError(
        f"split.file {str(value)!r} is neither a file nor a built-in split; built-in: "
        + ", ".join(builtin_split_names())
    )


def load_split(path: str | Path, cases: Sequence[Case]) -> Split:
    """Read a split file, or a built-in split by name, and check it names only known case ids.

    Raises:
        SplitError: a missing file (the message lists the built-in names), an unreadable one,
            or ids not in the dataset (naming the built-in split's own dataset).
    """
    if is_builtin_split(path):
        builtin = builtin_split(str(path))
        try:
            builtin.split.check(c.id for c in cases)
        except SplitError as exc:
            raise SplitError(
                f"built-in split {builtin.name!r} is a {builtin.dataset} split: {exc}"
            ) from exc
        return builtin.split
    check_split_file(path)
    split = Split.from_file(path)
    split.check(c.id for c in cases)
    return split
