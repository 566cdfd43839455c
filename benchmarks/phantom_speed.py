"""Time phantom generation: N cases written to disk, and one full 240 x 240 x 155 case.

    python benchmarks/phantom_speed.py --cases 40 --shape 48 48 48 --mode glioma --n-jobs 2

Reports wall-clock seconds (including joblib worker start-up, nilearn import and template load
in each fresh worker, and NIfTI gzip writing), the process CPU time where it is meaningful, the
on-disk size, and the 1-minute load average of the machine before and after (shared machines
inflate wall time).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

from mmbench.datasets.phantom import PhantomConfig, PhantomGenerator, _template
from mmbench.datasets.synthetic_cache import write_phantoms


def _size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=40)
    ap.add_argument("--shape", type=int, nargs=3, default=(48, 48, 48))
    ap.add_argument("--mode", default="glioma", choices=("glioma", "mets", "post-treatment"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--no-full", action="store_true", help="skip the 240x240x155 case")
    args = ap.parse_args()

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"load average before {os.getloadavg()[0]:.1f}"
    )
    shape = tuple(args.shape)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "syn"
        t0 = time.perf_counter()
        write_phantoms(
            out, args.cases, shape, args.mode, args.seed, n_jobs=args.n_jobs, progress=False
        )
        cold = time.perf_counter() - t0
        size = _size_mb(out)
        t0 = time.perf_counter()
        write_phantoms(
            out, args.cases, shape, args.mode, args.seed, n_jobs=args.n_jobs, progress=False
        )
        warm = time.perf_counter() - t0
    dims = "x".join(map(str, shape))
    print(
        f"write_phantoms({args.cases} cases, {dims}, {args.mode}, n_jobs={args.n_jobs}): "
        f"{cold:.1f} s cold (fresh workers), {warm:.1f} s again with warm workers "
        f"({warm / args.cases * 1000:.0f} ms/case), {size:.1f} MB on disk"
    )

    c0 = time.process_time()
    t0 = time.perf_counter()
    _template()
    print(
        f"template load in this process: {time.perf_counter() - t0:.1f} s wall, "
        f"{time.process_time() - c0:.1f} s CPU"
    )
    gen = PhantomGenerator(PhantomConfig(shape, args.mode, args.seed))
    gen.generate(0)  # prefilters the template for this spacing
    n = min(args.cases, 10)
    c0 = time.process_time()
    t0 = time.perf_counter()
    for i in range(1, n + 1):
        gen.generate(i)
    print(
        f"generate() in memory, {n} cases at {dims}: {(time.perf_counter() - t0) / n * 1000:.0f}"
        f" ms/case wall, {(time.process_time() - c0) / n * 1000:.0f} ms/case CPU"
    )

    if not args.no_full:
        gen = PhantomGenerator(PhantomConfig((240, 240, 155), args.mode, args.seed))
        c0 = time.process_time()
        t0 = time.perf_counter()
        gen.generate(0)
        print(
            f"generate one 240x240x155 case in memory: {time.perf_counter() - t0:.1f} s wall, "
            f"{time.process_time() - c0:.1f} s CPU"
        )
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            write_phantoms(
                Path(tmp), 1, (240, 240, 155), args.mode, args.seed, n_jobs=1, progress=False
            )
            print(
                f"write_phantoms(1 case, 240x240x155, n_jobs=1): "
                f"{time.perf_counter() - t0:.1f} s wall, {_size_mb(Path(tmp)):.1f} MB"
            )
    print(f"load average after {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
