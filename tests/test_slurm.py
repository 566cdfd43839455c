"""Slurm through submitit: the local cluster gives the local executor's metrics."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("submitit")

from mmbench.benchmark.runner import run_benchmark  # noqa: E402
from mmbench.benchmark.slurm import make_executor  # noqa: E402
from mmbench.benchmark.status import run_states  # noqa: E402
from mmbench.config import load_config  # noqa: E402

OVERRIDES = ["train.threads=1", "executor.slurm.cluster=local", "executor.slurm.cpus_per_task=1"]


def _metrics(summary) -> pd.DataFrame:
    df = pd.read_csv(summary.run_dir / "metrics.csv")
    return df.sort_values(["case", "subset", "region", "metric"]).reset_index(drop=True)


def test_local_cluster_reproduces_the_local_executor(tmp_path: Path) -> None:
    quiet = {"preset": "smoke", "overrides": OVERRIDES, "progress": False, "log": lambda s: None}
    (local,) = run_benchmark("zerofill", out=tmp_path / "local", **quiet)
    (slurm,) = run_benchmark("zerofill", out=tmp_path / "slurm", executor="slurm", **quiet)
    pd.testing.assert_frame_equal(_metrics(local), _metrics(slurm))
    assert (slurm.run_dir / "slurm.out").is_symlink()
    assert [s.state for s in run_states(tmp_path / "slurm")] == ["finished"]
    # A rerun submits nothing and reads the finished run back.
    (again,) = run_benchmark("zerofill", out=tmp_path / "slurm", executor="slurm", **quiet)
    pd.testing.assert_frame_equal(_metrics(again), _metrics(slurm))


def test_slurm_parameters_reach_sbatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import submitit.slurm.slurm as slurm

    monkeypatch.setattr(slurm.SlurmExecutor, "affinity", classmethod(lambda cls: 2))
    config = load_config(
        "paper",
        [
            "executor.slurm.partition=gpu",
            "executor.slurm.account=lab",
            "executor.slurm.qos=high",
            "executor.slurm.gpus_per_job=1",
            "executor.slurm.cpus_per_task=6",
            "executor.slurm.mem_gb=48",
            "executor.slurm.timeout_min=120",
            "executor.slurm.extra={constraint: a100}",
            "executor.slurm.setup=['module load cuda']",
        ],
    )
    executor = make_executor(config.executor.slurm, tmp_path)
    text = executor._executor._make_submission_file_text("python -m x", "%j")
    for line in (
        "#SBATCH --partition=gpu",
        "#SBATCH --account=lab",
        "#SBATCH --qos=high",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --cpus-per-task=6",
        "#SBATCH --mem=48GB",
        "#SBATCH --time=120",
        "#SBATCH --constraint=a100",
        "module load cuda",
    ):
        assert line in text, line


def test_no_wait_submits_and_the_runs_show_as_queued(tmp_path: Path, capsys) -> None:
    from mmbench.cli import main

    args = ["run", "--methods", "zerofill", "--preset", "smoke", "--out", str(tmp_path)]
    args += ["--executor", "slurm", "--no-wait", "--no-progress"]
    args += ["--set", "executor.slurm.cluster=debug"]  # submitted, never started
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "submitted zerofill seed 0 fold 0: job" in out
    (state,) = run_states(tmp_path)
    assert state.state == "queued" and "slurm job" in state.detail


def test_a_rerun_does_not_resubmit_a_run_whose_job_is_alive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import submitit

    from mmbench.benchmark import slurm
    from mmbench.benchmark.rundir import RunDir

    class Job:
        def __init__(self, folder, job_id):
            self.state = {"41_0": "RUNNING", "41_1": "TIMEOUT"}[job_id]

    monkeypatch.setattr(submitit, "SlurmJob", Job)
    config = load_config("smoke")
    alive = RunDir(tmp_path / "a")
    alive.path.mkdir()
    alive.write_info({"status": "training", "slurm_job_id": "41_0"})
    gone = RunDir(tmp_path / "b")
    gone.path.mkdir()
    gone.write_info({"status": "training", "slurm_job_id": "41_1"})
    settings = config.executor.slurm
    assert slurm._active_job(alive, settings, tmp_path) == "41_0"
    assert slurm._active_job(gone, settings, tmp_path) is None
    settings.cluster = "local"
    assert slurm._active_job(alive, settings, tmp_path) is None
