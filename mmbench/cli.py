"""``mmbench`` command line: a thin front over the library (run, tune, list, report, data,
evaluate).

Every sub-command parses its arguments and calls one library function; anything it does can be
done from Python. Errors a user can fix (:class:`mmbench.errors.MMBenchError`: unknown method or
dataset, missing data root, bad ``--set`` key or value) print one line naming what is valid and
exit with status 2; any other exception is a bug and exits with its traceback (status 1); Ctrl-C
exits with status 130 and a line saying that rerunning the command resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from mmbench.metrics import DEFAULT_MAX_DISTANCE

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in text.replace(",", " ").split()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--seeds takes integers, got {text!r}") from exc


def cmd_run(args: argparse.Namespace) -> int:
    from mmbench.benchmark.runner import run_benchmark
    from mmbench.reporting.summary import summary_table

    summaries = run_benchmark(
        args.methods,
        dataset=args.dataset,
        data_root=args.data_root,
        preset=args.preset,
        seeds=args.seeds,
        out=args.out,
        overrides=args.set,
        progress=not args.no_progress,
        jobs=args.jobs,
        executor=args.executor,
        wait=not args.no_wait,
        overlay=args.overlay,
    )
    if args.no_wait:
        return 0
    print()
    print(summary_table(summaries))
    print(f"results in {Path(args.out).resolve()}; next: mmbench report --runs {args.out}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from mmbench.benchmark.status import format_states, run_states

    states = run_states(args.out)
    if args.json:
        print(json.dumps([s.as_dict() for s in states], indent=2))
    else:
        print(format_states(states))
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from mmbench.benchmark.tuning import tune

    result = tune(
        args.methods,
        args.grid,
        dataset=args.dataset,
        data_root=args.data_root,
        preset=args.preset,
        seeds=args.seeds,
        out=args.out,
        overrides=args.set,
        progress=not args.no_progress,
    )
    for method, rows in result.scores.items():
        shown = ", ".join(
            f"{','.join(f'{k}={v}' for k, v in r['point'].items())}: "
            + ("failed" if r["mean"] is None else f"{r['mean']:.4f}")
            for r in rows
        )
        chosen = ",".join(f"{k}={v}" for k, v in result.choices[method].items())
        print(f"{method}: val score {shown}; chosen {chosen}")
    print(f"overlay written to {result.overlay}; next: mmbench run --overlay {result.overlay}")
    return 0


def cmd_data_splits(args: argparse.Namespace) -> int:
    from mmbench.datasets.splits import list_builtin_splits

    rows = list_builtin_splits()
    if args.json:
        print(json.dumps({"splits": rows}, indent=2))
        return 0
    print(f"{'name':<22} {'dataset':<10} {'train':>6} {'val':>5} {'test':>5}  sha256")
    for r in rows:
        print(
            f"{r['name']:<22} {r['dataset']:<10} {r['train']:>6} {r['val']:>5} {r['test']:>5}  "
            f"{r['sha256'][:16]}"
        )
    print("use one with --set split.file=NAME (provenance: mmbench/data/splits/README.md)")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from mmbench.datasets import get_dataset, list_datasets
    from mmbench.methods import METHOD_GROUPS, create, list_methods, method_group, method_info

    methods = []
    for name in list_methods():
        info = method_info(name)
        params = create(name, preset=args.preset).parameter_count()
        methods.append(
            {
                "name": name,
                "family": info.family,
                "paper": info.paper,
                "params": params,
                "tags": list(info.tags),
                "summary": info.summary,
            }
        )
    datasets = [{"name": n, "description": get_dataset(n).description} for n in list_datasets()]
    groups = [
        {"name": g, "description": text, "methods": method_group(g)}
        for g, text in METHOD_GROUPS.items()
    ]
    if args.json:
        print(
            json.dumps(
                {"methods": methods, "groups": groups, "datasets": datasets, "preset": args.preset},
                indent=2,
            )
        )
        return 0
    print(f"Methods (parameters used at inference, preset {args.preset}):")
    for m in methods:
        print(f"  {m['name']:<16} {m['family']:<24} {m['params']:>11,d}  {m['paper']}")
    print("Groups (--methods):")
    for g in groups:
        print(f"  {g['name']:<16} {g['description']}: {', '.join(g['methods'])}")
    print("Datasets:")
    for d in datasets:
        print(f"  {d['name']:<16} {d['description']}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from mmbench.reporting.api import build_report

    summary = build_report(
        args.runs,
        out_dir=args.out,
        metrics=tuple(args.metrics.split(",")),
        compare_reference=args.compare == "reference",
        baseline=args.baseline,
        with_std=args.std,
        formats=tuple(args.formats.split(",")),
        include_incomplete=args.include_incomplete,
        plots_enabled=not args.no_plots,
        html=not args.no_html,
        regions=tuple(args.regions.split(",")),
        n_boot=args.n_boot,
        seed=args.seed,
        qualitative_case=args.case,
        units=args.units,
        latex_layout=args.latex_layout,
        cost_axis=args.cost_axis,
    )
    print(summary)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from mmbench.metrics import MetricPolicy
    from mmbench.reporting.api import evaluate_predictions

    policy = MetricPolicy(
        empty=args.empty_policy, hd95_mode=args.hd95_mode, max_distance=args.max_distance
    )
    df = evaluate_predictions(
        args.pred_dir,
        args.dataset,
        data_root=args.data_root,
        policy=policy,
        out=args.out,
        method=args.method,
        family=args.family,
        label_convention=args.label_convention,
        n_jobs=args.n_jobs,
        split_from=args.split_from,
    )
    d = df[df["metric"] == "dice"].groupby("region")["value"].mean()
    print(
        f"scored {df['case'].nunique()} cases × {df['subset'].nunique()} subsets; "
        + ", ".join(f"{r} Dice {v:.3f}" for r, v in d.items())
    )
    print(f"rows written under {df.attrs.get('run_dir', args.out)}")
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    from mmbench.datasets import check_dataset, format_check_report

    report = check_dataset(args.dataset, args.data_root, strict=False)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print(format_check_report(report))
    ok = bool(report["valid"]) and not (args.strict and report["invalid"])
    return 0 if ok else 1


def cmd_data_synth(args: argparse.Namespace) -> int:
    from mmbench.datasets.synthetic_cache import write_phantoms

    out = write_phantoms(
        args.out,
        args.cases,
        tuple(args.shape),
        args.mode,
        args.seed,
        n_jobs=args.jobs,
        progress=not args.no_progress,
    )
    print(f"wrote {args.cases} phantom cases to {out}")
    return 0


def cmd_data_bench(args: argparse.Namespace) -> int:
    from mmbench.config import load_config
    from mmbench.datasets.bench import bench_data_path

    config = load_config(args.preset, args.set)
    result = bench_data_path(
        args.dataset,
        config,
        data_root=args.data_root,
        batches=args.batches,
        workers=args.workers,
        cache_dir=args.cache_dir,
        log=(lambda _: None) if args.json else print,
        progress=not (args.json or args.no_progress),
    )
    if args.json:
        keys = ("batches_per_s", "seconds_per_batch", "crop", "workers", "cases", "prepare_seconds")
        print(json.dumps({k: result[k] for k in keys}))
    else:
        crop = "x".join(map(str, result["crop"]))
        print(
            f"{result['batches_per_s']:.2f} batches/s ({result['seconds_per_batch']:.3f} s per "
            f"batch of {result['batch_size']}) at {crop}, {result['workers']} worker(s), "
            f"{result['cases']} training cases, cache {result['cache']} "
            f"(prepared in {result['prepare_seconds']:.1f} s)"
        )
    return 0


def cmd_check_official(args: argparse.Namespace) -> int:
    from mmbench.benchmark.official import check_official, checks_json, format_checks

    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    results = check_official(args.fixtures, methods)
    if args.json:
        print(json.dumps(checks_json(results), indent=2))
    else:
        print(format_checks(results))
    return 0 if all(r.ok for r in results) else 1


def cmd_import_weights(args: argparse.Namespace) -> int:
    from mmbench.benchmark.imported import import_weights
    from mmbench.reporting.summary import summary_table

    summary = import_weights(
        args.method,
        args.checkpoint,
        dataset=args.dataset,
        data_root=args.data_root,
        preset=args.preset,
        seed=args.seed,
        out=args.out,
        overrides=args.set,
        progress=not args.no_progress,
    )
    print()
    print(summary_table([summary]))
    print(f"results in {summary.run_dir.resolve()}; next: mmbench report --runs {args.out}")
    return 0


class _HelpWithDefaults(argparse.HelpFormatter):
    """Appends ``(default: X)`` to an option's help unless the help already names its default
    or the default is empty (None, False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "default" in text
            or default in (None, False, argparse.SUPPRESS, [])
            or not action.option_strings
        ):
            return text
        shown = ",".join(map(str, default)) if isinstance(default, (list, tuple)) else default
        return f"{text} (default: {shown})"


def _with_defaults(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Give ``parser`` and every sub-command parser the default-showing help formatter."""
    parser.formatter_class = _HelpWithDefaults
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _with_defaults(child)
    return parser


def build_parser() -> argparse.ArgumentParser:
    from mmbench.config import PRESETS

    parser = argparse.ArgumentParser(
        prog="mmbench",
        description="Brain-tumour segmentation benchmarks with missing MRI modalities.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run",
        help="train and evaluate methods on all 15 modality subsets",
        description="Train and evaluate methods on all 15 modality subsets. Without options it "
        "runs the family comparison (--methods all) on the embedded phantoms with the quick "
        "preset: about 15 minutes on an idle 2-core CPU. Rerunning a command resumes it.",
    )
    run.add_argument(
        "--methods",
        default="all",
        help="NAME[,NAME...] or a group: all (the family comparison, every method but ablations "
        "and bounds), ablations, bounds (see mmbench list)",
    )
    run.add_argument(
        "--dataset",
        default="synthetic",
        help="brats2018, brats2024, pretreat-mets or synthetic (the embedded phantoms)",
    )
    run.add_argument(
        "--data-root",
        type=Path,
        default=None,
        help="dataset folder, or a folder with one sub-folder per dataset "
        "(default: $MMBENCH_DATA/<dataset>)",
    )
    run.add_argument("--preset", default="quick", help=f"{', '.join(PRESETS)} or a YAML file")
    run.add_argument(
        "--seeds", type=_seeds, default=None, help="e.g. 0,1,2 (default: the preset's)"
    )
    run.add_argument("--out", type=Path, default=Path("results"), help="results folder")
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a preset key, e.g. train.steps=200 (repeatable)",
    )
    run.add_argument(
        "--jobs",
        default=None,
        help="runs trained at once, in separate processes: N or auto (default: the preset's)",
    )
    run.add_argument(
        "--executor",
        choices=["local", "slurm"],
        default=None,
        help="where runs execute: this machine, or one Slurm job per run through submitit "
        "(resources from executor.slurm.*; default: executor.name)",
    )
    run.add_argument(
        "--no-wait",
        action="store_true",
        help="with --executor slurm: submit, print the job ids and return",
    )
    run.add_argument(
        "--overlay",
        type=Path,
        default=None,
        help="a tuning overlay written by mmbench tune: its per-method train choices apply",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.set_defaults(func=cmd_run)

    st = sub.add_parser(
        "status", help="every run's state under a results folder (finished, running, failed)"
    )
    st.add_argument("--out", type=Path, default=Path("results"), help="results folder")
    st.add_argument("--json", action="store_true", help="a JSON list")
    st.set_defaults(func=cmd_status)

    tun = sub.add_parser(
        "tune",
        help="equal-budget search per method on the val split; writes an overlay for run",
        description="Train every grid point of each method with the preset's budget, score it "
        "on the val split only (the test split is never read) and write DIR/overlay.yaml with "
        "the grid, every val score and the choice; apply it with mmbench run --overlay.",
    )
    tun.add_argument("--methods", required=True, help="NAME[,NAME...] or a group")
    tun.add_argument(
        "--grid",
        action="append",
        default=[],
        required=True,
        metavar="KEY=V1,V2",
        help="train key and its values, e.g. train.lr=0.003,0.006 (repeatable: every "
        "combination is tried)",
    )
    tun.add_argument("--dataset", default="synthetic", help="dataset to tune on")
    tun.add_argument("--data-root", type=Path, default=None, help="its folder")
    tun.add_argument("--preset", default="quick", help=f"{', '.join(PRESETS)} or a YAML file")
    tun.add_argument(
        "--seeds", type=_seeds, default=None, help="seeds per grid point (default: the preset's)"
    )
    tun.add_argument(
        "--out", type=Path, default=Path("results/tuning"), help="tuning runs and overlay.yaml"
    )
    tun.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a preset key for every candidate (repeatable)",
    )
    tun.add_argument("--no-progress", action="store_true", help="no progress bars")
    tun.set_defaults(func=cmd_tune)

    lst = sub.add_parser("list", help="registered methods and datasets")
    lst.add_argument("--json", action="store_true", help="one JSON object")
    lst.add_argument(
        "--preset", default="quick", help="preset whose widths set the parameter counts"
    )
    lst.set_defaults(func=cmd_list)

    rep = sub.add_parser("report", help="tables, statistics, plots and HTML from run folders")
    rep.add_argument(
        "--runs",
        nargs="+",
        default=["results"],
        help="run folders or folders searched for them (default: results)",
    )
    rep.add_argument("--out", type=Path, default=Path("reports"), help="output folder")
    rep.add_argument(
        "--metrics", default="dice,hd95", help="comma list: dice,hd95,iou,sensitivity,specificity"
    )
    rep.add_argument(
        "--compare", choices=["reference"], default=None, help="set published numbers beside ours"
    )
    rep.add_argument(
        "--baseline", default=None, help="method the others are tested against (default: the best)"
    )
    rep.add_argument("--std", action="store_true", help="mean ± std in tables")
    rep.add_argument("--formats", default="md,tex,csv", help="comma list of md, tex, csv")
    rep.add_argument(
        "--include-incomplete", action="store_true", help="also use runs that have not finished"
    )
    rep.add_argument(
        "--regions",
        default="WT,TC,ET",
        help="comma list of regions (RC or ETpp when they were evaluated)",
    )
    rep.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples")
    rep.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    rep.add_argument("--case", default=None, help="case for the qualitative figure")
    rep.add_argument("--no-plots", action="store_true", help="no figures")
    rep.add_argument("--no-html", action="store_true", help="no report.html")
    rep.add_argument(
        "--units",
        choices=["common", "all"],
        default="common",
        help="common: compare methods on the (case, subset) units they all have; all: each on "
        "its own, methods lacking units flagged and never bold",
    )
    rep.add_argument(
        "--latex-layout",
        choices=["auto", "columns", "rows"],
        default="auto",
        help="LaTeX tables: columns (methods as columns), rows (one table per region, methods "
        "as rows), auto (rows above 12 method columns)",
    )
    rep.add_argument(
        "--cost-axis",
        choices=[
            "params_inference",
            "params_training",
            "gflops_forward",
            "train_s_per_step",
            "infer_s_per_case",
            "peak_memory_mb",
        ],
        default="params_inference",
        help="x axis of the accuracy-vs-cost figure (a column of the costs table)",
    )
    rep.set_defaults(func=cmd_report)

    ev = sub.add_parser("evaluate", help="score predictions made outside mmbench")
    ev.add_argument(
        "--pred-dir",
        type=Path,
        required=True,
        help="folder of <case>__<subset code>.nii.gz label maps (docs/reports.md)",
    )
    ev.add_argument("--dataset", required=True, help="the dataset the predictions are of")
    ev.add_argument(
        "--data-root", type=Path, default=None, help="its folder (default: $MMBENCH_DATA/<dataset>)"
    )
    ev.add_argument("--method", default=None, help="method name for the rows (default: folder)")
    ev.add_argument("--out", type=Path, default=None, help="write a run folder here")
    ev.add_argument(
        "--label-convention",
        default="brats2024",
        choices=["brats2024", "brats2018"],
        help="label values of the predictions: brats2024 (3 = ET) or brats2018 (4)",
    )
    ev.add_argument(
        "--empty-policy",
        default="penalty",
        choices=["penalty", "zero", "asymmetric", "nan"],
        help="scores of empty masks (docs/reports.md)",
    )
    ev.add_argument(
        "--hd95-mode",
        default="pooled",
        choices=["pooled", "directed-max"],
        help="pooled (medpy, BraTS) or directed-max (MONAI)",
    )
    ev.add_argument(
        "--max-distance",
        type=float,
        default=DEFAULT_MAX_DISTANCE,
        help="HD95 of a one-empty pair, mm",
    )
    ev.add_argument("--family", default="external", help="family shown in the family view")
    ev.add_argument("--n-jobs", type=int, default=1, help="workers scoring the metrics")
    ev.add_argument(
        "--split-from",
        type=Path,
        default=None,
        help="run folder (its split.json) or split file: score only that split's test cases",
    )
    ev.set_defaults(func=cmd_evaluate)

    off = sub.add_parser(
        "check-official",
        help="reproduce the authors' code on golden fixtures (outputs and losses, number for "
        "number)",
    )
    off.add_argument(
        "--fixtures",
        type=Path,
        default=None,
        help="a fixture folder or a folder of them (default: the fixtures bundled with mmbench)",
    )
    off.add_argument(
        "--methods", default=None, help="comma-separated method names (default: every fixture)"
    )
    off.add_argument("--json", action="store_true", help="print one JSON object")
    off.set_defaults(func=cmd_check_official)

    imp = sub.add_parser(
        "import-weights",
        help="evaluate an official checkpoint of a method with mmbench's protocol (no training)",
    )
    imp.add_argument("--method", required=True, help="a method with an official-code port")
    imp.add_argument(
        "--checkpoint", type=Path, required=True, help="the official state-dict file (.pth/.pt)"
    )
    imp.add_argument("--dataset", default="synthetic", help="dataset to evaluate on")
    imp.add_argument("--data-root", type=Path, default=None, help="the dataset's folder")
    imp.add_argument(
        "--preset",
        default="paper",
        help="model size and evaluation protocol (default: paper, the official widths)",
    )
    imp.add_argument("--seed", type=int, default=0, help="seed recorded for the run")
    imp.add_argument("--out", default="results", help="results folder")
    imp.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a preset key"
    )
    imp.add_argument("--no-progress", action="store_true", help="no progress bars")
    imp.set_defaults(func=cmd_import_weights)

    data = sub.add_parser("data", help="dataset tools")
    dsub = data.add_subparsers(dest="data_command", required=True)
    chk = dsub.add_parser("check", help="discovery and validation report")
    chk.add_argument("--dataset", required=True, help="the dataset layout to check against")
    chk.add_argument(
        "--data-root", type=Path, default=None, help="its folder (default: $MMBENCH_DATA/<dataset>)"
    )
    chk.add_argument("--strict", action="store_true", help="exit 1 on any problem")
    chk.add_argument("--json", action="store_true", help="one JSON object")
    chk.set_defaults(func=cmd_data_check)
    spl = dsub.add_parser("splits", help="built-in published splits with counts and sha256")
    spl.add_argument("--json", action="store_true", help="one JSON object")
    spl.set_defaults(func=cmd_data_splits)
    syn = dsub.add_parser("synth", help="write phantom cases in the BraTS 2024 layout")
    syn.add_argument("--out", type=Path, required=True, help="folder to write the cases to")
    syn.add_argument("--cases", type=int, default=10, help="number of cases")
    syn.add_argument(
        "--shape",
        type=int,
        nargs=3,
        default=[64, 64, 64],
        metavar=("D", "H", "W"),
        help="grid in voxels (1 mm; 240 240 155 is the BraTS size)",
    )
    syn.add_argument(
        "--mode",
        choices=["glioma", "mets", "post-treatment"],
        default="glioma",
        help="tumour kind",
    )
    syn.add_argument("--seed", type=int, default=0, help="generator seed")
    syn.add_argument("--jobs", type=int, default=-1, help="joblib workers (-1: all cores)")
    syn.add_argument("--no-progress", action="store_true", help="no progress bar")
    syn.set_defaults(func=cmd_data_synth)
    bench = dsub.add_parser(
        "bench",
        help="time the training data path (batches per second, after the cache is built)",
    )
    bench.add_argument("--dataset", default="synthetic", help="the dataset to read")
    bench.add_argument(
        "--data-root", type=Path, default=None, help="its folder (default: $MMBENCH_DATA/<dataset>)"
    )
    bench.add_argument(
        "--preset", default="paper", help=f"{', '.join(PRESETS)} or a YAML file (crop, cache)"
    )
    bench.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a preset key"
    )
    bench.add_argument("--batches", type=int, default=20, help="batches timed")
    bench.add_argument(
        "--workers", type=int, default=None, help="loader processes (default: train.num_workers)"
    )
    bench.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="where disk/mmap caches go (default: results/.cache/<dataset>)",
    )
    bench.add_argument("--json", action="store_true", help="print one JSON line")
    bench.add_argument("--no-progress", action="store_true", help="no progress bars")
    bench.set_defaults(func=cmd_data_bench)
    return _with_defaults(parser)


def _one_line_warning(message, category, filename, lineno, line=None) -> str:  # noqa: ANN001
    return f"mmbench: warning: {_one_line(message)}\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from mmbench.errors import MMBenchError

    # Warnings reach a user of the command line as one line each, not with a line of source.
    warnings.formatwarning = _one_line_warning  # type: ignore[assignment]
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:
        # The reader of our output went away (`mmbench data check --json | head`): not an error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except MMBenchError as exc:
        # An error the user can fix: one line, exit 2. Anything else is a bug: Python prints
        # its traceback and the exit status is 1.
        print(f"mmbench: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(
            "mmbench: interrupted; finished work is saved, and rerunning the same command "
            "resumes where it stopped",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
