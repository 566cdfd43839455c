"""GPU readiness at the paper scale: per method, s/step in fp32 and bf16, peak memory, data wait.

Run (on a machine with CUDA):
``python benchmarks/gpu_paper.py [--methods all] [--steps 30] [--warmup 5] [--cases 4]
[--workers 4] [--set KEY=VALUE ...]``

Each method trains through the real loop (:class:`~mmbench.benchmark.trainer.Trainer`) with the
``paper`` preset (width 16, crop 160×192×128, batch 1), on full-size phantoms (240×240×155,
``--cases`` of them, generated once into ``$MMBENCH_CACHE``) read through the memory-mapped
array cache and ``--workers`` loader processes, twice: ``train.amp=off`` (fp32) and
``train.amp=bf16`` (autocast). For the steps after ``--warmup``:

* **s/step**: wall time between consecutive batches handed to the loop (the loop synchronises
  every step when it checks the losses are finite), median;
* **peak GiB**: ``torch.cuda.max_memory_allocated`` over the run;
* **data wait**: the share of step time the loop spent waiting for its next batch.

Prints one table. Without CUDA it exits with a message and status 2.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch


class TimedStream:
    """Wraps a trainer batch stream: when each batch was handed over and how long it took."""

    def __init__(self, stream: Callable[[Iterable[Any]], Iterator[Any]]) -> None:
        self.stream = stream
        self.handed: list[float] = []
        self.waits: list[float] = []

    def __call__(self, keys: Iterable[Any]) -> Iterator[Any]:
        inner = iter(self.stream(keys))
        while True:
            t0 = time.perf_counter()
            try:
                item = next(inner)
            except StopIteration:
                return
            t1 = time.perf_counter()
            self.waits.append(t1 - t0)
            self.handed.append(t1)
            yield item


def measure(
    name: str, config: Any, data: Any, amp: str, workers: int, warmup: int, device: str = "cuda"
) -> dict:
    from mmbench.benchmark.schedule import resolve_schedule, with_schedule
    from mmbench.benchmark.trainer import Trainer
    from mmbench.config import Config
    from mmbench.datasets.loader import make_training_stream
    from mmbench.datasets.sampling import make_batch_source, make_fit_batches
    from mmbench.methods import create

    cfg: Config = config.for_method(name)
    cfg.train.amp = amp
    cfg = with_schedule(cfg, resolve_schedule(cfg.train, len(data.train)))
    crop = cfg.model.patch_size
    torch.manual_seed(0)
    strategy = create(name, preset=cfg)
    stream = TimedStream(
        make_training_stream(
            data.train,
            crop,
            False,
            cfg.train.batch_size,
            max(1, workers),
            pin_memory=device == "cuda",
        )
    )
    cuda = device == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(
            strategy,
            cfg.train,
            Path(run_dir),
            batches=make_batch_source(data.train, crop),
            fit_batches=make_fit_batches(data.train, crop, 0, cfg.train.batch_size),
            validator=None,
            seed=0,
            device=torch.device(device),
            progress=False,
            log=lambda _: None,
            batch_stream=stream,
        )
        trainer.fit()
        if cuda:
            torch.cuda.synchronize()
    steps = [b - a for a, b in zip(stream.handed, stream.handed[1:])][warmup:]
    waits = stream.waits[1:][warmup:]
    return {
        "s_step": statistics.median(steps) if steps else float("nan"),
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan"),
        "wait": sum(waits) / sum(steps) if steps else float("nan"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="all", help="names and groups, as for mmbench run")
    parser.add_argument("--steps", type=int, default=30, help="steps per method and precision")
    parser.add_argument("--warmup", type=int, default=5, help="first steps not timed")
    parser.add_argument("--cases", type=int, default=4, help="full-size phantoms to train on")
    parser.add_argument("--workers", type=int, default=4, help="data-loading processes")
    parser.add_argument("--cache-dir", type=Path, default=None, help="array cache folder")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument(
        "--cpu-smoke",
        action="store_true",
        help="check the script itself on a CPU: smoke sizes, numbers meaningless",
    )
    args = parser.parse_args()
    device = "cpu" if args.cpu_smoke else "cuda"
    if not args.cpu_smoke and not torch.cuda.is_available():
        print(
            "gpu_paper.py measures the paper-scale training step on CUDA and no CUDA device is "
            "visible here; run it on a GPU machine (docs/scale.md)",
            file=sys.stderr,
        )
        return 2

    from mmbench.benchmark.runner import resolve_config
    from mmbench.datasets.prepare import prepare_data
    from mmbench.methods import resolve_methods

    names = resolve_methods(args.methods)
    config = resolve_config(
        "smoke" if args.cpu_smoke else "paper",
        [
            "train.epochs=null",
            f"train.steps={args.steps + args.warmup + 1}",
            "train.val_every=0",
            "dataset.cache=mmap",
            f"dataset.synthetic.cases={max(args.cases, 4)}",
            "split.fractions=[0.5,0.25,0.25]",
            f"train.num_workers={args.workers}",
            *args.set,
        ],
        names,
    )
    cache_dir = args.cache_dir or Path(tempfile.gettempdir()) / "mmbench-gpu-paper"
    data = prepare_data("synthetic", config, cache_dir=cache_dir, log=print)
    if args.cpu_smoke:
        where = "CPU (--cpu-smoke)"
    else:
        props = torch.cuda.get_device_properties(0)
        where = f"{props.name} ({props.total_memory / 2**30:.0f} GiB)"
    print(
        f"{where}, torch {torch.__version__}; "
        f"{config.preset} preset: width {config.model.width}, crop {config.model.patch_size}, "
        f"batch {config.train.batch_size}; {args.steps} timed steps after {args.warmup}; "
        f"{args.workers} loader workers, {len(data.train)} training cases"
    )
    header = (
        f"{'method':<16} {'fp32 s/step':>11} {'fp32 GiB':>9} {'fp32 wait':>9} "
        f"{'bf16 s/step':>11} {'bf16 GiB':>9} {'bf16 wait':>9}"
    )
    print(header)
    print("-" * len(header))
    for name in names:
        cells = []
        for amp in ("off", "bf16"):
            try:
                r = measure(name, config, data, amp, args.workers, args.warmup, device)
                cells.append(f"{r['s_step']:>11.3f} {r['peak_gib']:>9.2f} {r['wait']:>8.0%}")
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                cells.append(f"{'out of memory':>31}")
        print(f"{name:<16} {cells[0]} {cells[1]}", flush=True)
    print("wait: share of step time the loop waited for its next batch (0% = the GPU never waited)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
