"""Seconds per training step of every registered method under a preset, through the real loop.

Run: ``python benchmarks/train_step.py [--preset quick] [--methods all] [--steps 30]
[--threads N]``

Each method trains ``--steps`` steps with the preset's data (phantoms for ``synthetic``), batch
size, crop and width, through :class:`~mmbench.benchmark.trainer.Trainer` without validation, in
a temporary run folder; the figure is the wall time divided by the steps, so it includes drawing
and augmenting the batch, the subset draw, every optimiser step and a method's fit stage (the
retrieval bank). The first steps are slower (allocator and oneDNN warm-up), so short runs
overstate a step a little. Use it to budget ``train.steps`` per preset: a run's training time is
about steps × this figure, and ``--jobs`` divides the cores among concurrent runs. The CPU
seconds per step (this process's user + system time) are what a step costs on a machine
shared with other jobs, where the wall time is inflated by waiting for a core.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch

from mmbench.benchmark.runner import resolve_config
from mmbench.benchmark.trainer import Trainer
from mmbench.datasets.prepare import prepare_data
from mmbench.datasets.sampling import make_batch_source, make_fit_batches
from mmbench.methods import create, resolve_methods


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--methods", default="all", help="names and groups, as for mmbench run")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    names = resolve_methods(args.methods)
    config = resolve_config(
        args.preset, [f"train.steps={args.steps}", "train.val_every=0", *args.set], names
    )
    data = prepare_data("synthetic", config, progress=False, log=lambda _: None)
    batch = config.train.batch_size
    crop = config.model.patch_size
    print(
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s); preset {args.preset}: width "
        f"{config.model.width}, crop {crop}, batch {batch}"
    )
    print(f"{'method':<16} {'s/step':>7} {'cpu s/step':>10} {'params':>11}")
    for name in names:
        cfg = config.for_method(name)
        strategy = create(name, preset=cfg)
        with tempfile.TemporaryDirectory() as run_dir:
            trainer = Trainer(
                strategy,
                cfg.train,
                Path(run_dir),
                batches=make_batch_source(data.train, crop),
                fit_batches=make_fit_batches(data.train, crop, 0, batch),
                validator=None,
                seed=0,
                device=torch.device("cpu"),
                progress=False,
                log=lambda _: None,
            )
            t0, c0 = time.perf_counter(), time.process_time()
            trainer.fit()
            seconds = (time.perf_counter() - t0) / args.steps
            cpu = (time.process_time() - c0) / args.steps
        print(
            f"{name:<16} {seconds:>7.3f} {cpu:>10.3f} {strategy.parameter_count():>11,d}",
            flush=True,
        )


if __name__ == "__main__":
    main()
