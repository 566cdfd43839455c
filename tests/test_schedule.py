"""Run length in epochs: the epoch → step arithmetic, the one-unit rule, and run.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmbench.benchmark.schedule import epoch_steps, resolve_schedule, with_schedule
from mmbench.config import DEFAULT_STEPS, Config, TrainSection, load_config
from mmbench.errors import ConfigError


def test_epoch_steps_round_up() -> None:
    assert epoch_steps(200, 1000, 1) == 200_000
    assert epoch_steps(3, 7, 2) == 11  # 10.5 rounded up
    assert epoch_steps(1, 1, 4) == 1
    assert epoch_steps(2, 10, 5) == 4
    with pytest.raises(ConfigError, match="empty"):
        epoch_steps(1, 0, 1)


def test_schedule_from_epochs_sets_steps_and_validation() -> None:
    train = TrainSection(epochs=4, batch_size=2, val_every=1)
    s = resolve_schedule(train, 7)
    assert (s.steps, s.val_every, s.epochs, s.train_cases) == (14, 4, 4, 7)
    assert s.steps_per_epoch == 3.5
    assert resolve_schedule(TrainSection(epochs=2, batch_size=1, val_every=5), 3).val_every == 6
    assert resolve_schedule(TrainSection(epochs=2, val_every=0), 3).val_every == 0


def test_schedule_from_steps_is_taken_as_is() -> None:
    s = resolve_schedule(TrainSection(steps=50, val_every=20), 999)
    assert (s.steps, s.val_every, s.epochs) == (50, 20, None)


def test_with_schedule_feeds_the_loop_and_keeps_the_written_config() -> None:
    config = load_config("smoke", ["train.steps=null", "train.epochs=3", "train.val_every=1"])
    resolved = with_schedule(config, resolve_schedule(config.train, 5))
    assert (resolved.train.steps, resolved.train.val_every) == (15, 5)
    assert config.train.steps is None and config.to_dict()["train"]["epochs"] == 3


def test_exactly_one_unit() -> None:
    assert TrainSection().steps == DEFAULT_STEPS
    assert Config.from_dict({"train": {"epochs": 5}}).train.steps is None
    with pytest.raises(ConfigError, match="train.steps=null"):
        load_config("smoke", ["train.epochs=5"])
    with pytest.raises(ConfigError, match="train.epochs"):
        load_config("smoke", ["train.epochs=0", "train.steps=null"])


def test_paper_preset_counts_epochs() -> None:
    config = load_config("paper")
    assert config.train.epochs == 200 and config.train.steps is None
    assert resolve_schedule(config.train, 1000).steps == 200_000
    assert load_config("paper", ["train.epochs=null", "train.steps=10"]).train.steps == 10


def test_method_override_in_the_other_unit_replaces_the_run_length() -> None:
    config = load_config("paper", ["methods.zerofill.train.steps=30"])
    own = config.for_method("zerofill")
    assert (own.train.steps, own.train.epochs) == (30, None)
    assert config.for_method("dropout-unet").train.epochs == 200


def test_run_json_records_the_resolved_schedule(tmp_path: Path) -> None:
    from mmbench.benchmark.runner import run_benchmark

    overrides = ["train.steps=null", "train.epochs=1", "train.val_every=1"]
    (summary,) = run_benchmark(
        "zerofill", preset="smoke", out=tmp_path, overrides=overrides, progress=False
    )
    info = json.loads((summary.run_dir / "run.json").read_text())
    n_train = len(json.loads((summary.run_dir / "split.json").read_text())["train"])
    assert info["schedule"]["steps"] == n_train and info["schedule"]["epochs"] == 1
    log = (summary.run_dir / "train_log.csv").read_text().splitlines()
    assert log[-1].split(",")[0] == str(n_train)
