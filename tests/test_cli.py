"""End-to-end runs of the CLI on the smoke preset, errors, and kill-and-resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mmbench.cli import main
from mmbench.subsets import SUBSET_NAMES

SMOKE = ["--preset", "smoke", "--no-progress"]


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mmbench.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
    )


def metrics(out: Path, method: str) -> pd.DataFrame:
    df = pd.read_csv(out / "synthetic" / method / "seed0-fold0" / "metrics.csv")
    return df.sort_values(["case", "subset", "region", "metric"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("results")
    assert main(["run", "--methods", "zerofill,dropout-unet", "--out", str(out), *SMOKE]) == 0
    return out


def test_run_writes_complete_run_folders(smoke_run: Path, capsys) -> None:
    for method in ("zerofill", "dropout-unet"):
        run = smoke_run / "synthetic" / method / "seed0-fold0"
        for name in (
            "config.yaml",
            "split.json",
            "environment.json",
            "run.json",
            "train_log.csv",
            "metrics.csv",
            "invalid_cases.json",
            "checkpoints/last.pt",
        ):
            assert (run / name).exists(), name
        info = json.loads((run / "run.json").read_text())
        assert info["status"] == "complete" and info["params"] > 0
        split = json.loads((run / "split.json").read_text())
        df = metrics(smoke_run, method)
        assert set(df["case"]) == set(split["test"])
        assert not set(split["test"]) & set(split["train"])
        assert set(df["subset"]) == set(SUBSET_NAMES)
        assert {"dice", "hd95", "iou", "sensitivity", "specificity", "ref_voxels"} <= set(
            df["metric"]
        )
        assert (df["empty_policy"] == "penalty").all()
        assert not df.duplicated(["case", "subset", "region", "metric"]).any()
        env = json.loads((run / "environment.json").read_text())
        assert env["packages"]["torch"] and env["device"]
        assert any((run / "predictions").glob("*__1111.nii.gz"))


def test_rerun_of_a_finished_run_is_skipped(smoke_run: Path, capsys) -> None:
    before = metrics(smoke_run, "zerofill")
    assert main(["run", "--methods", "zerofill", "--out", str(smoke_run), *SMOKE]) == 0
    assert "already complete" in capsys.readouterr().out
    pd.testing.assert_frame_equal(before, metrics(smoke_run, "zerofill"))


def test_changed_config_in_an_existing_run_folder_is_refused(smoke_run: Path, capsys) -> None:
    code = main(
        ["run", "--methods", "zerofill", "--out", str(smoke_run), *SMOKE, "--set", "train.lr=0.5"]
    )
    assert code == 2
    assert "train.lr" in capsys.readouterr().err


def test_report_after_run(smoke_run: Path, tmp_path: Path) -> None:
    assert main(["report", "--runs", str(smoke_run), "--out", str(tmp_path), "--no-plots"]) == 0
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".md" for p in written)
    assert any(p.suffix == ".csv" for p in written)
    assert all(p.stat().st_size > 0 for p in written)


def test_list_json(capsys) -> None:
    assert main(["list", "--json", "--preset", "smoke"]) == 0
    data = json.loads(capsys.readouterr().out)
    names = {m["name"] for m in data["methods"]}
    assert {"zerofill", "dropout-unet"} <= names
    for m in data["methods"]:
        assert m["family"] and m["paper"] and m["params"] > 0
    groups = {g["name"]: g["methods"] for g in data["groups"]}
    assert "adamm-no-garm" in groups["ablations"] and "adamm-no-garm" not in groups["all"]
    assert {d["name"] for d in data["datasets"]} == {
        "brats2018",
        "brats2024",
        "pretreat-mets",
        "synthetic",
    }


def test_a_per_method_learning_rate_reaches_only_that_method(tmp_path: Path, capsys) -> None:
    args = ["run", "--methods", "zerofill,dropout-unet", "--out", str(tmp_path), *SMOKE]
    assert main([*args, "--set", "methods.dropout-unet.train.lr=0.0025"]) == 0
    runs = tmp_path / "synthetic"
    for method, lr in (("zerofill", 0.001), ("dropout-unet", 0.0025)):
        config = yaml.safe_load((runs / method / "seed0-fold0" / "config.yaml").read_text())
        assert config["train"]["lr"] == lr
        log = pd.read_csv(runs / method / "seed0-fold0" / "train_log.csv")
        first = log[log["stage"] == "train"]["lr"].iloc[0]
        assert lr * 0.5 < first <= lr  # poly decay from the method's own base rate
    # zerofill's run does not depend on dropout-unet's options: without them it is complete.
    capsys.readouterr()
    assert main(["run", "--methods", "zerofill", "--out", str(tmp_path), *SMOKE]) == 0
    assert "already complete" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["run", "--methods", "nope"], "zerofill"),
        (["run", "--dataset", "brats2025"], "brats2024"),
        (["run", "--set", "train.stepz=3"], "train.steps"),
        (["run", "--jobs", "0"], "auto"),
        (["run", "--methods", "zerofill,ablation"], "ablations"),
        (["run", "--set", "methods.zerofill.train.lrr=1"], "weight_decay"),
        (["run", "--dataset", "brats2018", "--data-root", "/nonexistent/mmbench"], "brats2018"),
        (["run", "--methods", "zerofill", "--set", "methods.zerofill.foo=1"], "zerofill.foo"),
        (["run", "--set", "eval.metrics=[dice,hd99]"], "eval.metrics[1]"),
        (["run", "--set", "train.lr=abc"], "train.lr must be a number"),
    ],
)
def test_user_errors_are_one_line_with_exit_2(args, expected, capsys, monkeypatch) -> None:
    monkeypatch.delenv("MMBENCH_DATA", raising=False)
    assert main([*args, *SMOKE]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mmbench: error:") and "\n" not in err
    assert expected in err


def test_an_internal_error_keeps_its_traceback_and_exits_1() -> None:
    code = (
        "import sys, mmbench.benchmark.runner as r\n"
        "def broken(*a, **k):\n    raise ZeroDivisionError('a bug, not a user error')\n"
        "r.run_benchmark = broken\n"
        "from mmbench.cli import main\n"
        "sys.exit(main(['run', '--methods', 'zerofill', '--preset', 'smoke']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "ZeroDivisionError: a bug" in proc.stderr


def test_ctrl_c_says_that_a_rerun_resumes_and_exits_130(monkeypatch, capsys) -> None:
    import mmbench.benchmark.runner as runner

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run_benchmark", interrupted)
    assert main(["run", "--methods", "zerofill", *SMOKE]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "rerunning the same command resumes" in err


def test_invalid_config_is_refused_before_any_data_work(tmp_path, monkeypatch, capsys) -> None:
    import mmbench.benchmark.runner as runner

    def no_data(*args, **kwargs):
        raise AssertionError("data preparation must not start")

    monkeypatch.setattr(runner, "prepare_data", no_data)
    out = tmp_path / "r"
    assert (
        main(
            ["run", "--methods", "zerofill", "--out", str(out), "--set", "eval.threshold=2", *SMOKE]
        )
        == 2
    )
    assert "eval.threshold" in capsys.readouterr().err
    assert not out.exists()  # nothing invalid is written to a run folder


@pytest.mark.parametrize("where", ["train:3", "eval:1"])
def test_killed_run_resumes_to_identical_results(
    where: str, tmp_path: Path, smoke_run: Path
) -> None:
    out = tmp_path / "killed"
    args = ["run", "--methods", "dropout-unet", "--out", str(out), *SMOKE]
    killed = run_cli(*args, env={"MMBENCH_KILL_AT": where})
    assert killed.returncode == 137, killed.stderr[-2000:]
    run_dir = out / "synthetic" / "dropout-unet" / "seed0-fold0"
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == ("training" if where.startswith("train") else "evaluating")
    resumed = run_cli(*args)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    if where.startswith("train"):
        assert "resumed dropout-unet at step 2" in resumed.stdout
    a, b = metrics(smoke_run, "dropout-unet"), metrics(out, "dropout-unet")
    assert not b.duplicated(["case", "subset", "region", "metric"]).any()
    pd.testing.assert_frame_equal(a, b)
    log = pd.read_csv(run_dir / "train_log.csv")
    assert log["step"].tolist() == sorted(set(log["step"]))


def test_parallel_runs_match_sequential_runs_and_resume_after_a_kill(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    """``--jobs 2`` trains the runs in two processes; with the same torch thread count the
    results are those of one-at-a-time runs, summaries come back in the order given, and a
    worker killed during training fails the command (exit 2) and resumes on a rerun."""
    one_thread = ["--set", "train.threads=1"]

    def run(out: Path, jobs: str) -> int:
        args = ["run", "--methods", "dropout-unet,zerofill", "--out", str(out), "--jobs", jobs]
        return main([*args, *SMOKE, *one_thread])

    sequential, parallel, killed = tmp_path / "seq", tmp_path / "par", tmp_path / "killed"
    assert run(sequential, "1") == 0
    assert run(parallel, "2") == 0
    printed = capsys.readouterr().out
    assert "2 at a time, 1 torch thread(s) each" in printed
    table = printed[printed.rindex("method ") :]
    assert table.index("dropout-unet") < table.index("zerofill")

    monkeypatch.setenv("MMBENCH_KILL_AT", "train:3")
    assert run(killed, "2") == 2
    err = capsys.readouterr().err.strip()
    assert "exit code 137" in err and "\n" not in err
    monkeypatch.delenv("MMBENCH_KILL_AT")
    assert run(killed, "2") == 0
    for method in ("zerofill", "dropout-unet"):
        expected = metrics(sequential, method)
        pd.testing.assert_frame_equal(expected, metrics(parallel, method))
        pd.testing.assert_frame_equal(expected, metrics(killed, method))
        run_dir = parallel / "synthetic" / method / "seed0-fold0"
        assert json.loads((run_dir / "environment.json").read_text())["torch_threads"] == 1


def test_data_synth_then_check_json(tmp_path: Path, capsys) -> None:
    root = tmp_path / "synthetic"
    assert (
        main(
            [
                "data",
                "synth",
                "--out",
                str(root),
                "--cases",
                "3",
                "--shape",
                "16",
                "16",
                "16",
                "--seed",
                "1",
                "--jobs",
                "1",
                "--no-progress",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert (
        main(["data", "check", "--dataset", "synthetic", "--data-root", str(root), "--json"]) == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["dataset"] == "synthetic" and len(report["valid"]) == 3
    assert report["invalid"] == []
    # Break one case: a label value the dataset does not have.
    import nibabel as nib
    import numpy as np

    seg = next(root.rglob("*-seg.nii.gz"))
    img = nib.load(str(seg))
    data = np.asanyarray(img.dataobj).copy()
    data[0, 0, 0] = 7
    nib.save(nib.Nifti1Image(data, img.affine), str(seg))
    assert (
        main(
            [
                "data",
                "check",
                "--dataset",
                "synthetic",
                "--data-root",
                str(root),
                "--json",
                "--strict",
            ]
        )
        == 1
    )
    report = json.loads(capsys.readouterr().out)
    assert len(report["valid"]) == 2
    (bad,) = report["invalid"]
    assert bad["file"].endswith("-seg.nii.gz") and "7" in bad["problem"]


def test_every_option_has_help_and_run_help_names_its_defaults(capsys) -> None:
    import argparse

    from mmbench.cli import build_parser

    def walk(parser: argparse.ArgumentParser, path: str):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    yield from walk(child, f"{path} {name}")
            elif action.option_strings and action.dest != "help":
                yield path, action

    missing = [
        f"{p} {a.option_strings[0]}" for p, a in walk(build_parser(), "mmbench") if not a.help
    ]
    assert missing == []
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: all)" in text and "(default: quick)" in text and "15 minutes" in text


def test_another_preset_in_the_same_folder_says_what_to_do(smoke_run: Path, capsys) -> None:
    folder = smoke_run / "synthetic" / "zerofill" / "seed0-fold0"
    config = yaml.safe_load((folder / "config.yaml").read_text())
    config["preset"] = "quick"
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    try:
        assert main(["run", "--methods", "zerofill", "--out", str(smoke_run), *SMOKE]) == 2
        err = capsys.readouterr().err
        assert "quick preset" in err and "--out results/smoke" in err
    finally:
        config["preset"] = "smoke"
        (folder / "config.yaml").write_text(yaml.safe_dump(config))


def test_results_files_follow_the_umask(smoke_run: Path) -> None:
    mask = os.umask(0)
    os.umask(mask)
    for name in ("metrics.csv", "run.json", "config.yaml"):
        mode = (smoke_run / "synthetic" / "zerofill" / "seed0-fold0" / name).stat().st_mode & 0o777
        assert mode == 0o666 & ~mask, f"{name}: {oct(mode)}"


def test_data_check_on_another_layout_says_which_dataset_it_is(tmp_path: Path, capsys) -> None:
    root = tmp_path / "tree"
    args = ["data", "synth", "--out", str(root), "--cases", "2", "--shape", "12", "12", "12"]
    assert main([*args, "--jobs", "1", "--no-progress"]) == 0
    capsys.readouterr()
    # rename the phantoms the way BraTS 2024 names its glioma cases
    (root / "phantoms.json").unlink()
    for case in sorted(root.iterdir()):
        renamed = root / case.name.replace("SYN", "GLI")
        case.rename(renamed)
        for f in renamed.iterdir():
            f.rename(renamed / f.name.replace("SYN", "GLI"))
    assert main(["data", "check", "--dataset", "brats2018", "--data-root", str(root)]) == 1
    out = capsys.readouterr().out
    assert "valid cases:   0" in out and "hint:" in out and "--dataset brats2024" in out
    # piping into a reader that stops early is not an error
    proc = subprocess.run(
        f"{sys.executable} -m mmbench.cli data check --dataset brats2024 --data-root {root} "
        "--json | head -n 1",
        shell=True,
        capture_output=True,
        text=True,
    )
    assert proc.stdout.strip() == "{" and "Traceback" not in proc.stderr


def test_no_data_root_says_what_was_missing(monkeypatch, capsys) -> None:
    monkeypatch.delenv("MMBENCH_DATA", raising=False)
    assert main(["data", "check", "--dataset", "brats2018"]) == 2
    err = capsys.readouterr().err
    assert "nowhere" not in err and "no --data-root given and $MMBENCH_DATA is not set" in err
