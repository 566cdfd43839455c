"""``mmbench status``: finished, running, failed and stopped runs from their run.json."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from mmbench.benchmark.rundir import RunDir
from mmbench.benchmark.status import recording_failure, run_states
from mmbench.cli import main


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _run(out, method, **info) -> RunDir:
    run = RunDir.for_run(out, "synthetic", method, 0, 0)
    run.path.mkdir(parents=True)
    run.write_info({"dataset": "synthetic", "method": method, "seed": 0, "fold": 0, **info})
    return run


def test_states_of_finished_running_failed_and_stopped_runs(tmp_path, capsys) -> None:
    here = {"host": socket.gethostname()}
    _run(tmp_path, "a-finished", status="complete", schedule={"steps": 4}, **here, pid=1)
    running = _run(tmp_path, "b-running", status="training", **here, pid=os.getpid())
    running.log_path.write_text("step,stage\n1,main\n2,main\n")
    failed = _run(tmp_path, "c-failed", status="training", **here, pid=os.getpid())
    with pytest.raises(ValueError), recording_failure(failed):
        raise ValueError("loss is nan")
    _run(tmp_path, "d-killed", status="training", **here, pid=_dead_pid())
    stopped = _run(tmp_path, "e-ctrl-c", status="evaluating", **here, pid=os.getpid())
    with pytest.raises(KeyboardInterrupt), recording_failure(stopped):
        raise KeyboardInterrupt

    states = {s.method: s for s in run_states(tmp_path)}
    assert {m: s.state for m, s in states.items()} == {
        "a-finished": "finished",
        "b-running": "running",
        "c-failed": "failed",
        "d-killed": "stopped",
        "e-ctrl-c": "stopped",
    }
    assert states["b-running"].step == 2
    assert "ValueError: loss is nan" in states["c-failed"].detail

    assert main(["status", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "1 finished, 1 running, 1 failed, 2 stopped" in out
    assert "loss is nan" in out


def test_a_real_run_is_finished(tmp_path) -> None:
    from mmbench.benchmark.runner import run_benchmark

    run_benchmark("zerofill", preset="smoke", out=tmp_path, progress=False, log=lambda s: None)
    (state,) = run_states(tmp_path)
    assert (state.method, state.state, state.steps) == ("zerofill", "finished", 4)
