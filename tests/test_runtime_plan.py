"""Sharing a host among runs: one run per GPU, threads and data workers divided."""

from __future__ import annotations

import pytest

from mmbench.benchmark import runtime
from mmbench.benchmark.runtime import plan_jobs, visible_gpus


def test_auto_is_one_run_per_gpu_each_pinned() -> None:
    plan = plan_jobs("auto", 9, "cuda", ["0", "1", "2", "3"], cores=16, num_workers=4)
    assert plan.jobs == 4 and plan.devices == ("0", "1", "2", "3")
    assert plan.threads == 4 and plan.workers == 3


def test_fewer_runs_than_gpus() -> None:
    plan = plan_jobs("auto", 2, "cuda", ["0", "1", "2", "3"], cores=16, num_workers=4)
    assert plan.jobs == 2 and plan.devices == ("0", "1") and plan.threads == 8
    assert plan.workers == 4  # capped by train.num_workers


def test_a_single_gpu_keeps_the_single_run_as_before() -> None:
    plan = plan_jobs("auto", 5, "cuda", ["0"], cores=16, num_workers=4, threads=None)
    assert (plan.jobs, plan.devices, plan.threads, plan.workers) == (1, (None,), None, 4)


def test_explicit_jobs_share_gpus_round_robin_and_divide_cores() -> None:
    plan = plan_jobs(4, 9, "cuda", ["2", "5"], cores=8, num_workers=4, threads=3)
    assert plan.devices == ("2", "5", "2", "5") and plan.threads == 3 and plan.workers == 1


def test_cpu_auto_is_one_run_per_core_without_pinning() -> None:
    plan = plan_jobs("auto", 9, "cpu", [], cores=2, num_workers=2)
    assert (plan.jobs, plan.devices, plan.threads, plan.workers) == (2, (None, None), 1, 0)


def test_visible_gpus_follow_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,7")
    assert visible_gpus() == ["3", "7"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setattr(runtime.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(runtime.torch.cuda, "device_count", lambda: 3)
    assert visible_gpus() == ["0", "1", "2"]


class _Summary:
    train_seconds = 0.0
    eval_seconds = 0.0


def test_run_parallel_pins_each_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    # A spawned process starts with the parent's environment at start(): record it there.
    import multiprocessing
    import os

    from mmbench.benchmark import runner

    seen: list[str | None] = []
    spawn = multiprocessing.get_context("spawn")

    class FakeProcess:
        exitcode = 0

        def __init__(self, target, args, name):
            self.send = args[3]

        def start(self):
            seen.append(os.environ.get("CUDA_VISIBLE_DEVICES"))
            self.send.send(("ok", _Summary(), ""))

        def is_alive(self):
            return False

        def join(self):
            pass

        def terminate(self):
            pass

    class FakeContext:
        Pipe = staticmethod(spawn.Pipe)
        Process = FakeProcess

    monkeypatch.setattr(runner.multiprocessing, "get_context", lambda _: FakeContext)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    units = [("a", 0), ("b", 0), ("c", 0)]
    out = runner.run_parallel(units, {}, 2, log=lambda s: None, devices=("4", "6"))
    assert len(out) == 3
    assert seen[:2] == ["4", "6"] and seen[2] in ("4", "6")
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
