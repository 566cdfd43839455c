"""Timing the training data path: how many batches a second reach the training loop.

``mmbench data bench`` calls :func:`bench_data_path`. It prepares the data as a run would (the
cache is built first and timed as ``prepare_seconds``), then draws training batches exactly as
the loop does (:func:`~mmbench.datasets.sampling.make_batch_source` in the stored dtypes, through
:func:`~mmbench.datasets.loader.batch_stream` with ``workers`` processes) and times them in the
steady state: the first ``max(1, workers)`` batches (worker start-up) are not timed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mmbench.config import Config


def bench_data_path(
    dataset: str,
    config: Config,
    data_root: str | Path | None = None,
    batches: int = 20,
    workers: int | None = None,
    cache_dir: str | Path | None = None,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> dict[str, Any]:
    """Prepare ``dataset`` with ``config`` and time ``batches`` training batches.

    Args:
        workers: data-loading processes (default ``train.num_workers``; 0: in this process).
        cache_dir: where ``disk``/``mmap`` caches go (default ``results/.cache/<dataset>``).

    Returns:
        ``{"batches_per_s", "seconds_per_batch", "crop", "workers", "cases", "prepare_seconds",
        "batch_size", "cache", "batches"}`` (cases: training cases).
    """
    from mmbench.datasets.loader import batch_stream
    from mmbench.datasets.prepare import data_root as resolve_root
    from mmbench.datasets.prepare import prepare_data
    from mmbench.datasets.sampling import make_batch_source

    workers = config.train.num_workers if workers is None else int(workers)
    folder = resolve_root(dataset, data_root, config, log, progress)  # phantoms: not timed
    t0 = time.perf_counter()
    data = prepare_data(
        dataset,
        config,
        folder,
        cache_dir=Path(cache_dir) if cache_dir is not None else None,
        log=log,
        progress=progress,
    )
    for i in range(len(data.train)):  # lazy caches (disk) preprocess on first access
        if not hasattr(data.train, "case"):
            data.train[i]
    prepare_seconds = time.perf_counter() - t0

    crop = [int(p) for p in config.model.patch_size]
    source = make_batch_source(data.train, crop, config.train.intensity_jitter, compact=True)
    warmup = max(1, workers)

    def keys() -> Iterator[tuple[int, dict[str, Any]]]:
        for step in range(1, warmup + batches + 1):
            yield step, np.random.default_rng([0, step]).bit_generator.state

    stream = batch_stream(source, config.train.batch_size, keys(), workers)
    try:
        for _ in range(warmup):
            next(stream)
        t1 = time.perf_counter()
        for _ in range(batches):
            next(stream)
        seconds = time.perf_counter() - t1
    finally:
        stream.close()
    return {
        # four significant digits: a fast path gives milliseconds per batch
        "batches_per_s": float(f"{batches / seconds:.4g}"),
        "seconds_per_batch": float(f"{seconds / batches:.4g}"),
        "crop": crop,
        "workers": workers,
        "cases": len(data.train),
        "prepare_seconds": round(prepare_seconds, 2),
        "batch_size": config.train.batch_size,
        "cache": config.dataset.cache,
        "batches": batches,
    }


__all__ = ["bench_data_path"]
