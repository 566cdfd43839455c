"""Where evaluation time goes on full-size volumes (240×240×155), CPU.

Run: ``python benchmarks/eval_fullsize.py [--method zerofill] [--preset paper] [--cases 3]
[--subsets T1,T1+T1ce+T2+FLAIR] [--threads 2] [--malloc default|reuse] [--set KEY=VALUE ...]``

Builds (once, under ``--cache``) a phantom dataset of full BraTS-size cases, prepares it with
the preset's preprocessing, creates the method with freshly initialised weights (the cost of
inference does not depend on the weights), and evaluates the first test case on the given
subsets through the same code as ``mmbench run`` (:class:`mmbench.benchmark.evaluator.Evaluator`
into a throw-away results store). Prints one table: seconds in loading the preprocessed case,
sliding-window prediction, restoring to the native grid and scoring, per subset; and for the whole
evaluation the wall time, user and system CPU seconds, minor page faults and peak RSS
(``resource.getrusage``).

``--malloc reuse`` applies :func:`mmbench.benchmark.runtime.keep_freed_memory` first (what
``mmbench run`` does), ``default`` leaves glibc's allocator as it is.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import torch

from mmbench.benchmark import evaluator as evaluator_module
from mmbench.benchmark import scorer as scorer_module
from mmbench.benchmark.evaluator import EvalSettings, Evaluator
from mmbench.benchmark.results import ResultsStore
from mmbench.benchmark.runner import resolve_config
from mmbench.benchmark.runtime import keep_freed_memory
from mmbench.datasets.prepare import prepare_data
from mmbench.methods.registry import create
from mmbench.subsets import as_subset


class PhaseTimer:
    """Wraps module-level functions to add their wall seconds to named phases."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def wrap(self, module: object, name: str, phase: str) -> None:
        original = getattr(module, name)

        def timed(*args: object, **kwargs: object) -> object:
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - t0

        setattr(module, name, timed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="zerofill")
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--cases", type=int, default=3, help="phantoms generated (1 is tested)")
    parser.add_argument("--subsets", default="T1,T1+T1ce+T2+FLAIR")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--malloc", choices=("default", "reuse"), default="reuse")
    parser.add_argument("--cache", default="/tmp/mmbench-eval-fullsize")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()

    if args.malloc == "reuse":
        keep_freed_memory()
    torch.set_num_threads(args.threads)
    overrides = [
        f"dataset.synthetic.cases={args.cases}",
        "dataset.synthetic.shape=[240,240,155]",
        "split.fractions=[0.34,0.33,0.33]",
        *args.overrides,
    ]
    config = resolve_config(args.preset, overrides, [args.method]).for_method(args.method)
    cache = Path(args.cache)
    os.environ["MMBENCH_CACHE"] = str(cache)  # where the phantoms are generated
    t0 = time.perf_counter()
    data = prepare_data("synthetic", config, None, cache_dir=cache / "prep", progress=False)
    case_id = list(data.split.test)[0]
    data.test_item(case_id)  # build the preprocessed cache outside the timed part
    prepare_s = time.perf_counter() - t0

    torch.manual_seed(0)
    strategy = create(args.method, preset=config)
    subsets = [as_subset(s) for s in args.subsets.split(",")]
    timer = PhaseTimer()
    timer.wrap(evaluator_module, "predict_volume", "predict")
    timer.wrap(evaluator_module, "score_case", "score")
    timer.wrap(scorer_module, "load_reference", "load label")

    with tempfile.TemporaryDirectory() as tmp:
        store = ResultsStore(Path(tmp) / "metrics.csv")
        settings = EvalSettings.from_config(config)
        key = {"dataset": "synthetic", "method": args.method, "seed": 0, "fold": 0}
        ev = Evaluator(strategy, settings, store, key=key, region_labels=data.spec.regions)
        before = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        load_s = 0.0

        def load(cid: str) -> object:
            nonlocal load_s
            t = time.perf_counter()
            item = data.test_item(cid)
            load_s += time.perf_counter() - t
            return item

        ev.run([case_id], load, subsets)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_SELF)

    shape = tuple(data.test_item(case_id)["image"].shape[1:])
    n = len(subsets)
    print(
        f"{args.method}, preset {args.preset}, window {settings.patch_size}, overlap "
        f"{settings.sw_overlap}, sw batch {settings.sw_batch_size}, case {case_id} "
        f"(preprocessed {shape}), {n} subset(s), {args.threads} thread(s), malloc {args.malloc}"
    )
    print(f"preparation (phantoms + preprocessing, not in the table): {prepare_s:.1f} s")
    print("| phase | seconds | per subset |")
    print("|---|---:|---:|")
    rows = {"load preprocessed case": load_s, **timer.seconds}
    other = wall - sum(rows.values())
    for phase, sec in [*rows.items(), ("other (restore to native grid, writes)", other)]:
        print(f"| {phase} | {sec:.1f} | {sec / n:.1f} |")
    print(f"| **total wall** | **{wall:.1f}** | {wall / n:.1f} |")
    print(
        f"user CPU {after.ru_utime - before.ru_utime:.1f} s, system CPU "
        f"{after.ru_stime - before.ru_stime:.1f} s, minor page faults "
        f"{after.ru_minflt - before.ru_minflt:,}, peak RSS {after.ru_maxrss / 1024:.0f} MiB"
    )


if __name__ == "__main__":
    main()
