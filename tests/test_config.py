"""The typed configuration: presets, overrides, validation before any work."""

import pytest

from mmbench.config import (
    Config,
    apply_overrides,
    config_keys,
    load_config,
    load_preset,
    non_result_keys,
)
from mmbench.errors import ConfigError
from mmbench.methods import method_config


@pytest.mark.parametrize("preset", ["smoke", "quick", "paper"])
def test_presets_load_and_validate(preset: str) -> None:
    c = load_config(preset)
    assert c.preset == preset
    assert Config.from_dict(c.to_dict()) == c  # the YAML form round-trips


def test_paper_preset_is_the_adamm_protocol() -> None:
    c = load_config("paper")
    assert c.model.patch_size == [160, 192, 128]
    assert c.model.width == 16
    assert c.train.batch_size == 1
    assert c.train.lr == pytest.approx(1e-4)
    assert c.train.weight_decay == pytest.approx(1e-5)
    assert c.train.poly_power == pytest.approx(0.9)
    assert c.dataset.normalization == "minmax"


def test_overrides_parse_yaml_values_and_method_options() -> None:
    c = load_config(
        "smoke", ["train.steps=7", "model.patch_size=[8, 8, 8]", "methods.adamm.variant=faithful"]
    )
    assert c.train.steps == 7
    assert c.model.patch_size == [8, 8, 8]
    mc = method_config(c, "adamm")
    assert mc.option("variant") == "faithful" and mc.patch_size == (8, 8, 8)
    assert load_config("smoke").train.steps != 7  # presets are not mutated


def test_a_method_section_overrides_train_keys_for_that_method_only() -> None:
    c = load_config(
        "smoke", ["methods.adamm.train.lr=0.003", "methods.adamm.variant=faithful", "train.steps=9"]
    )
    adamm, zerofill = c.for_method("adamm"), c.for_method("zerofill")
    assert adamm.train.lr == 0.003 and adamm.train.steps == 9
    assert zerofill.train.lr == c.train.lr == load_config("smoke").train.lr
    assert zerofill.methods == {} and set(adamm.methods) == {"adamm"}
    assert "train" not in method_config(c, "adamm").options  # the engine's, not the method's
    assert method_config(c, "adamm").option("variant") == "faithful"


def test_a_method_train_override_must_name_train_keys() -> None:
    with pytest.raises(ConfigError, match="methods.adamm.train.lrr.*methods.adamm.train.steps"):
        load_config("smoke", ["methods.adamm.train.lrr=0.003"])
    with pytest.raises(ConfigError, match="mapping"):
        load_config("smoke", ["methods.adamm.train=0.003"])


def test_unknown_key_lists_valid_keys() -> None:
    with pytest.raises(ConfigError, match="train.stepz.*train.steps"):
        load_config("smoke", ["train.stepz=3"])
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides(load_preset("smoke"), ["train.steps"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.lr=abc", "train.lr must be a number"),
        ("train.steps=0", "train.steps must be an integer >= 1"),
        ("train.steps=-3", "train.steps must be an integer >= 1"),
        ("train.batch_size=1.5", "train.batch_size must be an integer"),
        ("train.batch_size=0", "train.batch_size must be an integer >= 1"),
        ("eval.threshold=2", "eval.threshold must be a number > 0 and < 1"),
        ("eval.metrics=[dice,hd99]", r"eval.metrics\[1\] must be one of dice"),
        ("model.patch_size=[16,16]", "model.patch_size must be a list of 3 values"),
        ("train.amp=yes", "train.amp must be one of auto, bf16, fp16, off"),
        ("train.val_subsets=[T1,T3]", r"train.val_subsets must be"),
        ("jobs=0", "jobs must be 'auto' or a positive integer"),
        ("split.fractions=[0.5,0.5]", "split.fractions must be a list of 3"),
        ("eval.extra_regions=[RC]", "not supported yet"),
        ("train=3", "train must be a mapping"),
    ],
)
def test_bad_values_are_refused_naming_the_key_and_what_is_allowed(override, message) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config("smoke", [override])


def test_unknown_preset() -> None:
    with pytest.raises(ConfigError, match="smoke, quick, paper"):
        load_config("nope")


def test_keys_that_do_not_change_results_are_declared_once() -> None:
    keys = non_result_keys()
    assert {"jobs", "seeds", "train.threads", "eval.sw_batch_size", "eval.n_jobs"} <= set(keys)
    assert "train.lr" not in keys and "model.width" not in keys
    a = load_config("smoke")
    b = load_config("smoke", ["train.threads=3", "jobs=2", "eval.save_predictions.cases=0"])
    assert a.comparable() == b.comparable() and a.to_dict() != b.to_dict()
    assert load_config("smoke", ["train.lr=0.5"]).comparable() != a.comparable()
    assert all(any(c == k or c.startswith(k + ".") for c in config_keys()) for k in keys)
