import pytest

from mmbench.benchmark.config import (
    ConfigError,
    apply_overrides,
    config_for_method,
    load_config,
    method_config,
)


@pytest.mark.parametrize("preset", ["smoke", "quick", "paper"])
def test_presets_load(preset: str) -> None:
    c = load_config(preset)
    assert c["preset"] == preset
    assert {"dataset", "split", "model", "train", "eval"} <= set(c)


def test_paper_preset_is_the_adamm_protocol() -> None:
    c = load_config("paper")
    assert c["model"]["patch_size"] == [160, 192, 128]
    assert c["model"]["width"] == 16
    assert c["train"]["batch_size"] == 1
    assert c["train"]["lr"] == pytest.approx(1e-4)
    assert c["train"]["weight_decay"] == pytest.approx(1e-5)
    assert c["train"]["poly_power"] == pytest.approx(0.9)
    assert c["dataset"]["normalization"] == "minmax"


def test_overrides_parse_yaml_values_and_method_options() -> None:
    c = apply_overrides(
        load_config("smoke"),
        ["train.steps=7", "model.patch_size=[8, 8, 8]", "methods.adamm.variant=faithful"],
    )
    assert c["train"]["steps"] == 7
    assert c["model"]["patch_size"] == [8, 8, 8]
    mc = method_config(c, "adamm")
    assert mc.option("variant", "fixed") == "faithful" and mc.patch_size == (8, 8, 8)
    assert load_config("smoke")["train"]["steps"] != 7  # presets are not mutated


def test_a_method_section_overrides_train_keys_for_that_method_only() -> None:
    c = apply_overrides(
        load_config("smoke"),
        ["methods.adamm.train.lr=0.003", "methods.adamm.variant=faithful", "train.steps=9"],
    )
    adamm, zerofill = config_for_method(c, "adamm"), config_for_method(c, "zerofill")
    assert adamm["train"]["lr"] == 0.003 and adamm["train"]["steps"] == 9
    assert zerofill["train"]["lr"] == c["train"]["lr"] == load_config("smoke")["train"]["lr"]
    assert zerofill["methods"] == {} and set(adamm["methods"]) == {"adamm"}
    assert "train" not in method_config(c, "adamm").options  # the engine's, not the method's
    assert method_config(c, "adamm").option("variant", "fixed") == "faithful"


def test_a_method_train_override_must_name_train_keys() -> None:
    c = apply_overrides(load_config("smoke"), ["methods.adamm.train.lrr=0.003"])
    with pytest.raises(ConfigError, match="methods.adamm.train.lrr.*weight_decay"):
        config_for_method(c, "adamm")
    c = apply_overrides(load_config("smoke"), ["methods.adamm.train=0.003"])
    with pytest.raises(ConfigError, match="mapping"):
        config_for_method(c, "adamm")


def test_unknown_key_lists_valid_keys() -> None:
    with pytest.raises(ConfigError, match="train.steps"):
        apply_overrides(load_config("smoke"), ["train.stepz=3"])
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides(load_config("smoke"), ["train.steps"])


def test_unknown_preset() -> None:
    with pytest.raises(ConfigError, match="smoke, quick, paper"):
        load_config("nope")
