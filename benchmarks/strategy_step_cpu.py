"""CPU seconds per training step of a strategy alone (no data loading, no loop), one thread.

Run: ``python benchmarks/strategy_step_cpu.py [--preset quick] [--subset T1ce+FLAIR] NAME...``

Each method is built at the preset's size and takes 7 steps (forward, backward, Adam) on one fixed
random batch of the preset's batch size and crop, in the subset given (a method that fixes its
stage's subset or trains on complete inputs uses that instead); the figure is the median CPU time
of this process (``time.process_time``) over the last 5. CPU time is what to compare on a machine
shared with other jobs, where wall times mostly measure the load; ``benchmarks/train_step.py``
gives the wall time through the real loop.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from mmbench.config import load_config
from mmbench.methods import create
from mmbench.methods.base import StepContext
from mmbench.subsets import FULL, Subset, zero_absent


def toy_batch(subset: Subset, n: int, crop: tuple[int, int, int]) -> dict:
    """Random images with a nested block tumour (oedema ⊃ ET), N×4×crop."""
    g = torch.Generator().manual_seed(0)
    full = torch.randn(n, 4, *crop, generator=g)
    comp = torch.zeros(n, 3, *crop)
    lo = [c // 4 for c in crop]
    hi = [3 * c // 4 for c in crop]
    comp[:, 1, lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = 1
    mid = [c // 2 for c in crop]
    comp[:, 1, mid[0] - 2 : mid[0] + 2, mid[1] - 2 : mid[1] + 2, mid[2] - 2 : mid[2] + 2] = 0
    comp[:, 2, mid[0] - 2 : mid[0] + 2, mid[1] - 2 : mid[1] + 2, mid[2] - 2 : mid[2] + 2] = 1
    regions = torch.stack([comp.amax(1), torch.maximum(comp[:, 0], comp[:, 2]), comp[:, 2]], 1)
    return {
        "image": zero_absent(full, subset),
        "image_full": full,
        "regions": regions,
        "compartments": comp,
        "available": subset.available,
        "subset": subset,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+")
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--subset", default="T1ce+FLAIR")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = load_config(args.preset)
    crop = tuple(config.model.patch_size)
    print(f"preset {args.preset}: width {config.model.width}, crop {crop}, one thread")
    for name in args.names:
        torch.manual_seed(0)
        model = create(name, preset=config)
        optimizers = model.configure_optimizers(lr=1e-3, weight_decay=0.0)
        stage = next(s for s in model.stages() if s.kind == "gradient")
        if stage.subset:
            subset = Subset.parse(stage.subset)
        elif model.train_subsets == "full":
            subset = FULL
        else:
            subset = Subset.parse(args.subset)
        batch = toy_batch(subset, config.train.batch_size, crop)
        times = []
        for i in range(7):
            t0 = time.process_time()
            ctx = StepContext(i + 1, 100, stage.name, i + 1, 100, subset)
            losses = model.training_step(batch, ctx)
            for key in stage.optimizers:
                optimizers[key].zero_grad()
            sum(v for k, v in losses.items() if not k.startswith("log/")).backward()
            for key in stage.optimizers:
                optimizers[key].step()
            times.append(time.process_time() - t0)
        median = statistics.median(times[2:])
        print(f"{name:<16} {subset.name:<18} {median:.3f} CPU s/step")


if __name__ == "__main__":
    main()
