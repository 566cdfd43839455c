"""Data preparation for a set of runs: data root → discovery and validation → split →
preprocessed (cached) training, validation and test items.

``prepare_data`` is the first step of every run (:mod:`mmbench.benchmark.run`); its result is
shared by the runs of one invocation.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmbench.config import Config
from mmbench.datasets.base import DatasetSpec, Problem
from mmbench.datasets.splits import Split


@dataclass
class PreparedData:
    """Everything the runs of one invocation share: the dataset, its split and cached items.

    Attributes:
        dataset: registry name.
        root: the data folder read.
        spec: the dataset's description (labels, regions).
        split: train/val/test case ids.
        problems: cases left out by validation.
        train, val, test: MONAI datasets of preprocessed items (:func:`build_preprocess`), in
            split order.
    """

    dataset: str
    root: Path
    spec: DatasetSpec
    split: Split
    problems: list[Problem]
    train: Any
    val: Any
    test: Any

    def test_item(self, case_id: str) -> Mapping[str, Any]:
        """The preprocessed item of a test case."""
        return self.test[self.split.test.index(case_id)]


def data_root(
    dataset: str,
    root: str | Path | None,
    config: Config,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> Path:
    """The folder to read: ``root`` (or ``$MMBENCH_DATA/<dataset>``), or for ``synthetic``
    without a root, the phantom cache (generated on first use)."""
    from mmbench.datasets.discovery import resolve_root
    from mmbench.datasets.synthetic_cache import default_cache_root, ensure_synthetic

    if dataset == "synthetic" and root is None:
        syn = config.dataset.synthetic
        t0 = time.perf_counter()
        folder = ensure_synthetic(
            default_cache_root(),
            syn.cases,
            tuple(syn.shape),  # type: ignore[arg-type]
            syn.mode,
            syn.seed,
            progress=progress,
        )
        log(f"synthetic phantoms ready in {folder} ({time.perf_counter() - t0:.1f} s)")
        return folder
    return resolve_root(dataset, root)


def choose_split(
    cases: Sequence[Any],
    spec: DatasetSpec,
    config: Config,
    split: Split | None = None,
    split_path: Path | None = None,
) -> Split:
    """The split of a set of runs: ``split`` as given; else an existing ``split.json`` (resume);
    else ``split.file`` of the config; else a seeded split from ``split.*``."""
    from mmbench.datasets.splits import load_split, make_split

    ids = [c.id for c in cases]
    if split is not None:
        split.check(ids)
        return split
    if split_path is not None and Path(split_path).exists():
        loaded = Split.from_json(split_path)
        loaded.check(ids)
        return loaded
    sp = config.split
    if sp.file:
        return load_split(sp.file, list(cases))
    return make_split(
        list(cases),
        spec,
        fractions=tuple(sp.fractions),  # type: ignore[arg-type]
        seed=sp.seed,
        k_folds=sp.k_folds,
        fold=sp.fold,
    )


def prepare_data(
    dataset: str,
    config: Config,
    root: str | Path | None = None,
    *,
    split: Split | None = None,
    split_path: Path | None = None,
    cache: str | None = None,
    cache_dir: Path | None = None,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> PreparedData:
    """Discover, validate, split and (lazily) preprocess a dataset for a set of runs.

    Args:
        dataset: registry name.
        config: the validated configuration (``dataset``, ``split``, ``train.num_workers``).
        root: the data folder (see :func:`data_root`).
        split, split_path: see :func:`choose_split`.
        cache: overrides ``dataset.cache`` (``memory``, ``disk``, ``mmap``, ``none``). ``mmap``
            writes the training cases once as memory-mapped float16 arrays that training reads
            crop by crop (:mod:`mmbench.datasets.arrays`); val and test cases as ``disk``.
        cache_dir: where ``cache="disk"``/``"mmap"`` keeps preprocessed cases (default
            ``results/.cache/<dataset>``: a downloaded data root may be read-only).
    """
    from mmbench.datasets.transforms import build_preprocess, make_cached_dataset
    from mmbench.datasets.validation import load_dataset

    folder = data_root(dataset, root, config, log, progress)
    index = load_dataset(dataset, folder, strict=config.dataset.strict)
    for problem in index.problems:
        log(f"warning: left out {problem.case}: {problem.file}: {problem.problem}")
    chosen = choose_split(index.cases, index.spec, config, split, split_path)
    by_id = {c.id: c for c in index.cases}
    pre = build_preprocess(index.spec, normalization=config.dataset.normalization)
    cache = cache or config.dataset.cache
    if cache in ("disk", "mmap") and cache_dir is None:
        cache_dir = Path("results") / ".cache" / dataset

    def cached(ids: Sequence[str], train: bool = False) -> Any:
        items = [by_id[i].as_item() for i in ids]
        if cache == "mmap" and train and items:
            from mmbench.datasets.arrays import build_array_cache

            return build_array_cache(
                items,
                index.spec.name,
                cache_dir,  # type: ignore[arg-type]
                normalization=config.dataset.normalization,
                num_workers=max(1, config.train.num_workers),
                progress=progress,
            )
        return make_cached_dataset(
            items,
            pre,
            # mmap: evaluation reads whole volumes, kept on disk as float32
            cache="disk" if cache == "mmap" else cache,
            cache_dir=cache_dir,
            num_workers=config.train.num_workers,
        )

    t0 = time.perf_counter()
    prepared = PreparedData(
        dataset=dataset,
        root=folder,
        spec=index.spec,
        split=chosen,
        problems=list(index.problems),
        train=cached(chosen.train, train=True),
        val=cached(chosen.val),
        test=cached(chosen.test),
    )
    log(
        f"{dataset}: {len(index.cases)} valid cases ({len(chosen.train)} train, "
        f"{len(chosen.val)} val, {len(chosen.test)} test), {len(index.problems)} left out; "
        + _preparation_note(cache, time.perf_counter() - t0, cache_dir)
    )
    return prepared


def _preparation_note(cache: str, seconds: float, cache_dir: Path | None) -> str:
    """What the preparation log line can truthfully say about the time and the cache."""
    if cache == "memory":
        return f"preprocessed into memory in {seconds:.1f} s"
    if cache == "none":
        return "preprocessed on every read (no cache)"
    where = f"{cache_dir} ({_folder_mib(cache_dir):.0f} MiB so far)" if cache_dir else "disk"
    if cache == "mmap":
        return (
            f"training cases cached in {seconds:.1f} s; val and test cases preprocessed on "
            f"first use; cache: {where}"
        )
    return f"cases preprocessed on first use (not yet timed); cache: {where}"


def _folder_mib(folder: Path) -> float:
    if not folder.exists():
        return 0.0
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20


__all__ = ["PreparedData", "choose_split", "data_root", "prepare_data"]
