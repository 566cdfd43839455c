"""Time one full AdaMM training step: teacher + student + discriminator, forward, backward of
both losses (each into its own optimiser's parameters, as the training loop does) and both Adam
steps.

Run: ``python benchmarks/adamm_step.py [--width 16] [--cpu-size 64] [--batch 1] [--warmup 2]
[--steps 5] [--threads N] [--subset T1ce+FLAIR]``

- CPU: batch ``--batch`` (1), a ``--cpu-size``³ crop (default 64³), median of ``--steps``
  timed steps after ``--warmup`` untimed ones; prints torch's thread count.
- CUDA (when available): the paper's 160×192×128 crop, batch 1, fp32; skipped with a message
  otherwise.

The sampled subset is non-full so that the adapters and GARM are in the step (the full subset
skips them).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from mmbench.methods import MethodConfig, StepContext
from mmbench.methods.adamm import AdaMM
from mmbench.subsets import Subset, zero_absent


def make_batch(
    shape: tuple[int, int, int], subset: Subset, device: torch.device, n: int = 1
) -> dict:
    g = torch.Generator().manual_seed(0)
    full = torch.randn(n, 4, *shape, generator=g)
    comp = torch.zeros(n, 3, *shape)
    d, h, w = shape
    comp[:, 1, d // 4 : 3 * d // 4, h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 1
    comp[:, 2, 3 * d // 8 : 5 * d // 8, 3 * h // 8 : 5 * h // 8, 3 * w // 8 : 5 * w // 8] = 1
    comp[:, 1] -= comp[:, 2]
    return {
        "image": zero_absent(full, subset).to(device),
        "image_full": full.to(device),
        "compartments": comp.to(device),
        "available": subset.available,
        "subset": subset,
    }


def time_steps(
    width: int,
    shape: tuple[int, int, int],
    device: torch.device,
    warmup: int,
    steps: int,
    subset: Subset,
    n: int = 1,
) -> list[float]:
    torch.manual_seed(0)
    model = AdaMM(MethodConfig(width=width, patch_size=shape, total_steps=1000)).to(device).train()
    opts = model.configure_optimizers(lr=1e-4, weight_decay=1e-5)
    groups = {k: [p for g in o.param_groups for p in g["params"]] for k, o in opts.items()}
    batch = make_batch(shape, subset, device, n)
    times = []
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        losses = model.training_step(batch, StepContext(i, 1000, "train", i, 1000, subset))
        for name, opt in opts.items():
            opt.zero_grad(set_to_none=True)
            losses[name].backward(inputs=groups[name], retain_graph=name != list(opts)[-1])
        for opt in opts.values():
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--cpu-size", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--subset", default="T1ce+FLAIR")
    parser.add_argument("--batch", type=int, default=1, help="CPU batch size")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    subset = Subset.parse(args.subset)
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"threads {torch.get_num_threads()}, C0 = {args.width}, subset {subset}"
    )
    shape = (args.cpu_size,) * 3
    t = time_steps(
        args.width, shape, torch.device("cpu"), args.warmup, args.steps, subset, args.batch
    )
    print(
        f"CPU  {shape} batch {args.batch}: median {statistics.median(t):.3f} s "
        f"(min {min(t):.3f}, max {max(t):.3f}, {len(t)} steps after {args.warmup} warm-up)"
    )
    if torch.cuda.is_available():
        shape = (160, 192, 128)
        t = time_steps(args.width, shape, torch.device("cuda"), args.warmup, args.steps, subset)
        print(
            f"CUDA {shape} batch 1 ({torch.cuda.get_device_name()}): median "
            f"{statistics.median(t):.3f} s, peak memory "
            f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB"
        )
    else:
        print("CUDA not available: the 160×192×128 paper-crop timing is skipped.")


if __name__ == "__main__":
    main()
