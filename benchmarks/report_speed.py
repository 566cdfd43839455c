"""Time ``mmbench report`` on 10 methods × 3 datasets × 15 subsets × 50 cases (target: ≤ 30 s).

Usage: ``python benchmarks/report_speed.py [--cases 50] [--methods 10] [--keep DIR] [--profile]``

Synthetic run folders (``tests/report_fixtures.py``) are written first (not timed); then the
full report is built as ``mmbench report`` builds it by default (Dice and HD95 tables in md/tex/csv,
family and rank tables, statistics, every figure in PNG and PDF, the HTML page) and timed.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

from mmbench.reporting.api import build_report

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from report_fixtures import fake_results, write_run_folders  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=50)
    parser.add_argument("--methods", type=int, default=10)
    parser.add_argument("--datasets", type=int, default=3)
    parser.add_argument("--keep", type=Path, default=None, help="write here instead of a temp dir")
    parser.add_argument("--profile", action="store_true", help="print the top of a cProfile")
    parser.add_argument("--compare-reference", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        methods = [f"method{i:02d}" for i in range(args.methods)]
        datasets = ["brats2024", "brats2018", "pretreat-mets"][: args.datasets]
        t0 = time.perf_counter()
        df = fake_results(methods, datasets, n_cases=args.cases, seed=1)
        write_run_folders(df, root / "results")
        print(f"fixture: {len(df):,} rows written in {time.perf_counter() - t0:.1f} s")

        profiler = cProfile.Profile() if args.profile else None
        t0, c0 = time.perf_counter(), time.process_time()
        if profiler:
            profiler.enable()
        summary = build_report(
            root / "results", root / "reports", compare_reference=args.compare_reference
        )
        if profiler:
            profiler.disable()
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - c0
        print(summary)
        print(
            f"report: {args.methods} methods x {args.datasets} datasets x 15 subsets x "
            f"{args.cases} cases in {elapsed:.1f} s wall, {cpu:.1f} s CPU (target 30 s); "
            f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
        )
        if profiler:
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)


if __name__ == "__main__":
    main()
