"""Measured effect of AdaMM's ``fixed`` corrections: val and test Avg. Dice per variant.

Run: ``python benchmarks/adamm_variants.py [--preset quick] [--seeds 0 1]
[--out results/adamm-variants] [--configs all] [--jobs N]``

Trains and evaluates ``adamm`` (through :func:`mmbench.benchmark.runner.run_benchmark`, the
same code as ``mmbench run``) once per configuration and seed, each configuration in its own
``--out`` sub-folder, and prints a markdown table:

- ``faithful``: the released code's behaviour (every correction off);
- ``fixed``: the default (every correction on);
- ``fixed − <correction>``: the default with one correction switched back to the released
  behaviour (``methods.adamm.fix_<...>=false``). The effect of a correction is
  ``fixed`` minus this row;
- ``fixed, gate per window``: the LGRM gate decided on each sliding window
  (``gate_scope=window``) instead of the whole volume.

Val Avg. Dice = the best validation score the loop selected the checkpoint on (mean Dice over
val cases × ``train.val_subsets`` × WT, TC, ET); test Avg. Dice = mean Dice over test cases × the
15 subsets × WT, TC, ET of the selected checkpoint. ``fix_eval_mode`` and ``gate_scope`` change
evaluation only, so their rows retrain the same weights as ``fixed`` (the runs are
deterministic); only the evaluation differs. Rerunning the command resumes unfinished runs and
skips finished ones.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from mmbench.benchmark.runner import run_benchmark
from mmbench.benchmark.schema import CHECKPOINT_DIR

METHOD = "adamm"
CONFIGS: dict[str, list[str]] = {
    "faithful": ["variant=faithful"],
    "fixed": [],
    "fixed − GARM view fix": ["fix_garm_view=false"],
    "fixed − GARM adjacency fix": ["fix_garm_adjacency=false"],
    "fixed − GSM fix": ["fix_gsm=false"],
    "fixed − discriminator Adam fix": ["fix_disc_adam=false"],
    "fixed − eval-mode fix": ["fix_eval_mode=false"],
    "fixed, gate per window": ["gate_scope=window"],
}


def slug(label: str) -> str:
    keep = [c if c.isalnum() else "-" for c in label.replace("−", "minus")]
    return "-".join(filter(None, "".join(keep).split("-")))


def val_score(run_dir: Path) -> float:
    """The best validation score of a finished run (from its last checkpoint's loop state)."""
    ckpt = torch.load(run_dir / CHECKPOINT_DIR / "last.pt", map_location="cpu", weights_only=True)
    return float(ckpt["state"]["best_score"])


def test_score(metrics) -> float:  # noqa: ANN001 - a pandas frame
    dice = metrics[(metrics["metric"] == "dice") & metrics["region"].isin(["WT", "TC", "ET"])]
    return float(dice["value"].mean())


def fmt(values: list[float]) -> str:
    mean = statistics.fmean(values)
    spread = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
    return f"{mean:.3f}{spread} ({', '.join(f'{v:.3f}' for v in values)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--out", default="results/adamm-variants")
    parser.add_argument(
        "--configs", default="all", help="comma-separated labels of CONFIGS, or 'all'"
    )
    parser.add_argument("--jobs", default=None, help="runs at once (default: the preset's)")
    parser.add_argument(
        "--set",
        dest="extra",
        action="append",
        default=[],
        help="extra key=value overrides for every run",
    )
    args = parser.parse_args()
    labels = list(CONFIGS) if args.configs == "all" else args.configs.split(",")
    unknown = [label for label in labels if label not in CONFIGS]
    if unknown:
        parser.error(f"unknown configuration(s) {unknown}; valid: {list(CONFIGS)}")
    rows: dict[str, tuple[list[float], list[float]]] = {}
    for label in labels:
        overrides = [f"methods.{METHOD}.{o}" for o in CONFIGS[label]] + args.extra
        summaries = run_benchmark(
            [METHOD],
            preset=args.preset,
            seeds=args.seeds,
            out=Path(args.out) / slug(label),
            overrides=overrides,
            progress=False,
            jobs=args.jobs,
        )
        vals = [val_score(s.run_dir) for s in summaries]
        tests = [test_score(s.metrics) for s in summaries]
        rows[label] = (vals, tests)
    reference = statistics.fmean(rows["fixed"][1]) if "fixed" in rows else None
    print(f"\nAdaMM variants, preset {args.preset}, seeds {args.seeds}: Avg. Dice (WT, TC, ET)")
    print("| configuration | val Avg. Dice | test Avg. Dice | fixed − this (test) |")
    print("|---|---|---|---:|")
    for label, (vals, tests) in rows.items():
        delta = "" if reference is None else f"{reference - statistics.fmean(tests):+.3f}"
        print(f"| {label} | {fmt(vals)} | {fmt(tests)} | {delta} |")


if __name__ == "__main__":
    main()
