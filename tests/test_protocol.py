"""The fair protocol: one shared recipe, tuning on val only, costs and splits on record,
identical reruns, run times that survive interruptions, literature splits."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml

from mmbench.benchmark import evaluator as evaluator_module
from mmbench.benchmark import run as run_module
from mmbench.benchmark import trainer as trainer_module
from mmbench.benchmark import validation as validation_module
from mmbench.benchmark.costs import COST_KEYS
from mmbench.benchmark.runner import resolve_config
from mmbench.benchmark.tuning import parse_grid, tune
from mmbench.cli import main
from mmbench.config import PRESETS, load_config, load_overlay, load_preset
from mmbench.datasets.prepare import PreparedData
from mmbench.datasets.splits import Split, builtin_split, load_split, split_sha256
from mmbench.errors import ConfigError, SplitError

SMOKE = ["--preset", "smoke", "--no-progress"]
# Smaller than smoke: 5 phantoms of 16³, 2 steps; numbers are meaningless but exactly repeatable.
TINY = [
    "--set",
    "dataset.synthetic.cases=5",
    "--set",
    "dataset.synthetic.shape=[16,16,16]",
    "--set",
    "train.steps=2",
    "--set",
    "train.val_every=1",
]


def run_dir(out: Path, method: str) -> Path:
    return out / "synthetic" / method / "seed0-fold0"


def sorted_metrics(out: Path, method: str) -> pd.DataFrame:
    df = pd.read_csv(run_dir(out, method) / "metrics.csv")
    return df.sort_values(["case", "subset", "region", "metric"]).reset_index(drop=True)


# ------------------------------------------------------------------------------ presets
@pytest.mark.parametrize("preset", PRESETS)
def test_no_builtin_preset_trains_a_method_with_its_own_recipe(preset: str) -> None:
    methods = load_preset(preset).get("methods") or {}
    offending = [name for name, section in methods.items() if "train" in (section or {})]
    assert offending == [], f"{preset}: methods.<name>.train for {offending}"
    load_config(preset)  # and the preset validates


def test_brats2018_rfnet_preset_follows_the_rfnet_protocol() -> None:
    c = load_config("brats2018-rfnet")
    assert c.split.file == "rfnet-brats2018-1"
    assert c.model.patch_size == [80, 80, 80] and c.window == (80, 80, 80)
    assert c.eval.sw_overlap == 0.5  # stride 40 on 80³ windows
    assert c.eval.etpp and c.dataset.normalization == "zscore"
    assert c.train.lr == pytest.approx(2e-4) and c.train.batch_size == 2
    assert c.train.steps == 300 * 150


# ------------------------------------------------------------------------------- splits
def test_data_splits_lists_the_rfnet_brats2018_splits(capsys) -> None:
    assert main(["data", "splits", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["splits"]}
    for i in (1, 2, 3):
        row = rows[f"rfnet-brats2018-{i}"]
        assert (row["dataset"], row["train"], row["val"], row["test"]) == (
            "brats2018",
            199,
            29,
            57,
        )
        assert row["sha256"] == split_sha256(builtin_split(f"rfnet-brats2018-{i}").split)
    assert len({r["sha256"] for r in rows.values()}) == len(rows)


def test_split_hash_depends_on_content_not_order() -> None:
    a = Split(["c", "a"], ["b"], ["d"])
    assert split_sha256(a) == split_sha256(Split(["a", "c"], ["b"], ["d"]))
    assert split_sha256(a) != split_sha256(Split(["a", "b"], ["c"], ["d"]))


def test_a_builtin_split_loads_by_name_and_names_its_dataset_on_mismatch(tmp_path) -> None:
    split = builtin_split("rfnet-brats2018-2").split
    ids = split.train + split.val + split.test
    assert len(set(ids)) == 285
    cases = [SimpleNamespace(id=i) for i in ids]
    assert load_split("rfnet-brats2018-2", cases).as_dict() == split.as_dict()
    with pytest.raises(SplitError, match="brats2018 split"):
        load_split("rfnet-brats2018-2", [SimpleNamespace(id="BraTS-GLI-00001-000")])
    with pytest.raises(SplitError, match="rfnet-brats2018-1"):
        load_split(tmp_path / "nosuch.json", cases)


# ----------------------------------------------------------------------- overlays, grid
def test_overlay_applies_only_method_train_choices(tmp_path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump({"config": {"methods": {"zerofill": {"train": {"lr": 0.01}}}}}))
    config = resolve_config("smoke", ["methods.zerofill.train.steps=3"], ["zerofill"], good)
    method = config.for_method("zerofill")
    assert method.train.lr == 0.01 and method.train.steps == 3
    assert config.for_method("dropout-unet").train.lr == load_config("smoke").train.lr
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"config": {"train": {"lr": 0.01}}}))
    with pytest.raises(ConfigError, match="only methods"):
        load_overlay(bad)
    with pytest.raises(ConfigError, match="no such file"):
        load_overlay(tmp_path / "missing.yaml")


def test_grid_values_are_checked_and_the_budget_is_fixed() -> None:
    assert parse_grid(["train.lr=0.003,0.006"]) == {"train.lr": [0.003, 0.006]}
    with pytest.raises(ConfigError, match="budget"):
        parse_grid(["train.steps=10,20"])
    with pytest.raises(ConfigError, match="train.lr"):
        parse_grid(["train.lrr=0.1"])
    with pytest.raises(ConfigError, match="train.lr"):
        parse_grid(["train.lr=-1,0.1"])
    with pytest.raises(ConfigError, match="train keys"):
        parse_grid(["model.width=4,8"])


def test_tuning_selects_on_val_and_never_reads_the_test_split(tmp_path, monkeypatch) -> None:
    def forbidden(*args, **kwargs):
        raise AssertionError("tuning touched the test split")

    monkeypatch.setattr(PreparedData, "test_item", forbidden)
    monkeypatch.setattr(evaluator_module.Evaluator, "run", forbidden)
    monkeypatch.setattr(run_module, "evaluate_run", forbidden)
    scored: list[str] = []
    real_score_case = validation_module.score_case

    def spy(reference, *args, **kwargs):
        scored.append(reference.case)
        return real_score_case(reference, *args, **kwargs)

    monkeypatch.setattr(validation_module, "score_case", spy)
    out = tmp_path / "tuning"
    overrides = [s for s in TINY if s != "--set"]
    result = tune(
        "zerofill",
        ["train.lr=0.001,0.02"],
        preset="smoke",
        out=out,
        overrides=overrides,
        progress=False,
        log=lambda _: None,
    )
    assert not list(out.rglob("split.json")) and not list(out.rglob("metrics.csv"))
    overlay = yaml.safe_load(result.overlay.read_text())
    rows = overlay["methods"]["zerofill"]["scores"]
    assert [r["point"]["train.lr"] for r in rows] == [0.001, 0.02]
    best = max(rows, key=lambda r: r["mean"])
    assert overlay["methods"]["zerofill"]["choice"] == best["point"]
    assert overlay["config"] == {
        "methods": {"zerofill": {"train": {"lr": best["point"]["train.lr"]}}}
    }
    assert overlay["budget"] == {"train.steps": 2, "train.batch_size": 1}
    # Only val cases were scored: the ids the run's split puts in val.
    config = resolve_config("smoke", overrides, ["zerofill"])
    from mmbench.datasets.prepare import prepare_data

    full = prepare_data("synthetic", config, log=lambda _: None, progress=False, cache="none").split
    assert scored and set(scored) <= set(full.val) and not set(scored) & set(full.test)
    assert overlay["split"]["sha256"] == split_sha256(full)
    applied = resolve_config("smoke", overrides, ["zerofill"], result.overlay)
    assert applied.for_method("zerofill").train.lr == best["point"]["train.lr"]


# ----------------------------------------------------------- determinism, run.json records
@pytest.fixture(scope="module")
def twice(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    outs = tmp_path_factory.mktemp("a"), tmp_path_factory.mktemp("b")
    for out in outs:
        args = ["run", "--methods", "zerofill,dropout-unet,rfnet", "--out", str(out)]
        assert main([*args, *SMOKE, *TINY]) == 0
    return outs


def test_the_same_command_twice_gives_identical_metrics(twice) -> None:
    a, b = twice
    for method in ("zerofill", "dropout-unet", "rfnet"):
        pd.testing.assert_frame_equal(sorted_metrics(a, method), sorted_metrics(b, method))
        info_a = json.loads((run_dir(a, method) / "run.json").read_text())
        info_b = json.loads((run_dir(b, method) / "run.json").read_text())
        assert info_a["val_score"] == info_b["val_score"]


def test_run_json_records_val_score_split_and_costs(twice) -> None:
    out = twice[0]
    for method in ("zerofill", "dropout-unet", "rfnet"):
        folder = run_dir(out, method)
        info = json.loads((folder / "run.json").read_text())
        assert 0.0 <= info["val_score"] <= 1.0
        assert info["split_name"] == "seeded:seed=0"
        assert info["split_sha256"] == split_sha256(Split.from_json(folder / "split.json"))
        costs = info["costs"]
        assert tuple(costs) == COST_KEYS
        assert costs["params_inference"] == info["params"] > 0
        assert costs["params_training"] == info["params_training_only"] >= 0
        assert costs["gflops_forward"] > 0
        assert costs["train_s_per_step"] > 0 and costs["infer_s_per_case"] > 0
        assert costs["peak_memory_mb"] > 10
    rfnet = json.loads((run_dir(out, "rfnet") / "run.json").read_text())["costs"]
    zerofill = json.loads((run_dir(out, "zerofill") / "run.json").read_text())["costs"]
    assert rfnet["gflops_forward"] > zerofill["gflops_forward"]  # four encoders against one


def test_train_and_eval_seconds_accumulate_across_a_resume(tmp_path, monkeypatch) -> None:
    """Each step and each test case is slowed by a known delay; a run interrupted in training
    and again in evaluation must still record at least the delays of every step and case."""
    step_delay, case_delay = 0.25, 0.3
    real_step = trainer_module.Trainer._train_step
    real_case = evaluator_module.Evaluator._evaluate_case

    def slow_step(self, *args, **kwargs):
        time.sleep(step_delay)
        return real_step(self, *args, **kwargs)

    def slow_case(self, *args, **kwargs):
        time.sleep(case_delay)
        return real_case(self, *args, **kwargs)

    stop_at = {"where": "train:3"}

    def interrupt(where: str, index: int) -> None:
        if f"{where}:{index}" == stop_at["where"]:
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer_module.Trainer, "_train_step", slow_step)
    monkeypatch.setattr(evaluator_module.Evaluator, "_evaluate_case", slow_case)
    monkeypatch.setattr(trainer_module, "interruption_point", interrupt)
    monkeypatch.setattr(evaluator_module, "interruption_point", interrupt)
    out = tmp_path / "out"
    args = ["run", "--methods", "zerofill", "--out", str(out), *SMOKE]
    args += ["--set", "train.val_every=2", "--set", "train.steps=4"]
    assert main(args) == 130  # interrupted after step 3 (checkpoint at step 2)
    stop_at["where"] = "eval:1"
    assert main(args) == 130  # interrupted after the first of two test cases
    info = json.loads((run_dir(out, "zerofill") / "run.json").read_text())
    assert info["status"] == "evaluating" and info["eval_seconds"] >= case_delay
    stop_at["where"] = ""
    assert main(args) == 0
    info = json.loads((run_dir(out, "zerofill") / "run.json").read_text())
    assert info["status"] == "complete"
    n_test = len(Split.from_json(run_dir(out, "zerofill") / "split.json").test)
    assert n_test == 2
    assert info["train_seconds"] >= 4 * step_delay
    assert info["eval_seconds"] >= n_test * case_delay


# ------------------------------------------------------------------ published BraTS 2018
def test_brats2018_reference_sits_beside_runs_on_an_rfnet_split_only(tmp_path) -> None:
    from mmbench.reporting.api import build_report
    from tests.report_fixtures import fake_results, write_run_folders

    df = fake_results(methods=("a", "b"), datasets=("brats2018",), n_cases=3)
    write_run_folders(
        df[df["method"] == "a"], tmp_path, extra_info={"split_name": "rfnet-brats2018-1"}
    )
    write_run_folders(df[df["method"] == "b"], tmp_path, extra_info={"split_name": "seeded:seed=0"})
    summary = build_report(
        tmp_path, tmp_path / "reports", compare_reference=True, html=False, n_boot=20,
        plots_enabled=False,
    )  # fmt: skip
    comp = pd.read_csv(tmp_path / "reports" / "tables" / "reference_brats2018_dice.csv")
    assert "WT ours:a" in comp.columns and "WT ours:b" not in comp.columns
    assert comp.set_index("subset").loc["T2", "WT pub:RFNet"] == pytest.approx(84.30)
    assert "ET pub:HeMIS" in comp.columns  # average-only rows come too
    assert any("b (seeded:seed=0)" in c for c in summary.caveats)
    assert any("rfnet-brats2018-1" in c and "three splits" in c for c in summary.caveats)


def test_packaged_reference_and_split_files_are_the_shared_ones() -> None:
    shared = Path("/work/shared")
    if not shared.is_dir():
        pytest.skip("shared folder not present")
    root = Path(__file__).parents[1] / "mmbench"
    pairs = [
        ("reporting/data/brats2018_rfnet_splits.csv", "reference/brats2018_rfnet_splits.csv"),
        ("reporting/data/brats2018_README.md", "reference/brats2018_README.md"),
        *[
            (f"data/splits/rfnet-brats2018-{i}.json", f"splits/rfnet-brats2018-split{i}.json")
            for i in (1, 2, 3)
        ],
    ]
    for ours, theirs in pairs:
        assert (root / ours).read_bytes() == (shared / theirs).read_bytes(), ours


def test_tune_then_run_with_the_overlay_from_the_command_line(tmp_path, capsys) -> None:
    tuning, results = tmp_path / "tuning", tmp_path / "results"
    args = ["tune", "--methods", "zerofill", "--grid", "train.lr=0.001,0.02"]
    assert main([*args, "--out", str(tuning), *SMOKE, *TINY]) == 0
    printed = capsys.readouterr().out
    assert "zerofill: val score train.lr=0.001:" in printed and "chosen train.lr=" in printed
    overlay = tuning / "overlay.yaml"
    chosen = yaml.safe_load(overlay.read_text())["config"]["methods"]["zerofill"]["train"]["lr"]
    run = ["run", "--methods", "zerofill", "--out", str(results), "--overlay", str(overlay)]
    assert main([*run, *SMOKE, *TINY]) == 0
    config = yaml.safe_load((run_dir(results, "zerofill") / "config.yaml").read_text())
    assert config["train"]["lr"] == chosen
    assert config["methods"]["zerofill"]["train"] == {"lr": chosen}
    capsys.readouterr()
    assert main(["tune", "--methods", "zerofill", "--grid", "train.steps=2,4", *SMOKE]) == 2
    assert "budget" in capsys.readouterr().err


def test_an_overlay_tuned_on_another_split_is_flagged(tmp_path) -> None:
    from mmbench.benchmark.runner import _check_overlay_split

    split = Split(["a", "b"], ["c"], ["d"])
    overlay = tmp_path / "overlay.yaml"
    messages: list[str] = []
    overlay.write_text(yaml.safe_dump({"split": {"sha256": split_sha256(split)}, "config": {}}))
    _check_overlay_split(overlay, split, messages.append)
    assert messages == []
    overlay.write_text(yaml.safe_dump({"split": {"sha256": "0" * 64}, "config": {}}))
    _check_overlay_split(overlay, split, messages.append)
    assert len(messages) == 1 and "another split" in messages[0]


def test_an_unknown_split_file_is_refused_before_any_data_work(tmp_path, capsys) -> None:
    out = tmp_path / "out"
    args = ["run", "--methods", "zerofill", "--out", str(out), *SMOKE]
    assert main([*args, "--set", "split.file=rfnet-brats2018-9"]) == 2
    err = capsys.readouterr().err
    assert "rfnet-brats2018-9" in err and "rfnet-brats2018-1" in err
    assert not out.exists()
