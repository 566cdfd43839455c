"""``mmbench data bench``: one JSON line with the documented keys."""

from __future__ import annotations

import json

from mmbench.cli import main


def test_data_bench_json(tmp_path, capsys) -> None:
    args = ["data", "bench", "--preset", "smoke", "--set", "dataset.cache=mmap"]
    args += ["--cache-dir", str(tmp_path), "--batches", "3", "--workers", "1", "--json"]
    assert main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert set(result) == {
        "batches_per_s",
        "seconds_per_batch",
        "crop",
        "workers",
        "cases",
        "prepare_seconds",
    }
    assert result["crop"] == [16, 16, 16] and result["workers"] == 1 and result["cases"] >= 1
    assert result["batches_per_s"] > 0
    assert abs(result["batches_per_s"] * result["seconds_per_batch"] - 1) < 0.01
