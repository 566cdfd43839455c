"""AdaMM against the authors' released code: the golden fixtures and the checkpoint converter."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mmbench.benchmark.official import bundled_fixture_root, check_fixture
from mmbench.errors import CheckpointError
from mmbench.golden import GoldenFixture
from mmbench.methods import MethodConfig, official_port
from mmbench.methods.adamm import AdaMM, AdaMMNoGARM
from mmbench.methods.adamm.official import canonical_code

VARIANTS = Path(__file__).parent / "data" / "official-variants"


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _failures(fixture: GoldenFixture) -> list[str]:
    result = check_fixture(fixture)
    assert not result.error, result.error
    bad = [f"{n}: {c.problem or c.max_abs_err}" for n, c in result.outputs.items() if not c.ok]
    bad += [f"{n}: {c.problem or c.max_abs_err}" for n, c in result.losses.items() if not c.ok]
    assert result.outputs and result.losses
    return bad


def test_bundled_fixture_is_reproduced_number_for_number() -> None:
    fixture = GoldenFixture(bundled_fixture_root() / "adamm")
    assert _failures(fixture) == []


@pytest.mark.parametrize(
    "folder", sorted(p.name for p in VARIANTS.glob("adamm-*") if p.is_dir()), ids=str
)
def test_variant_fixture_is_reproduced(folder: str) -> None:
    """Other seeds, batch sizes (1: GSM pairs a sample with itself), shapes, masks, epochs."""
    assert _failures(GoldenFixture(VARIANTS / folder)) == []


@pytest.fixture(scope="module")
def released() -> dict[str, dict[str, torch.Tensor]]:
    fixture = GoldenFixture(VARIANTS / "adamm-b1-flair-16x16x16")
    return {
        "model_full": dict(fixture.state_dict("teacher")),
        "model_missing": dict(fixture.state_dict("student")),
        "d_style": dict(fixture.state_dict("discriminator")),
    }


def _strategy(cls: type = AdaMM) -> AdaMM:
    return cls(MethodConfig(width=16, patch_size=(16, 16, 16)))


def test_converter_maps_adapter_keys_channels_and_accepts_flat_module_prefixed_files(
    released: dict[str, dict[str, torch.Tensor]],
) -> None:
    port = official_port("adamm")
    strategy = _strategy()
    nested = port.convert_state_dict(released, strategy)
    assert set(nested) == set(strategy.state_dict())
    # released "1010" (FLAIR, T1, T1ce, T2 bits) = FLAIR+T1ce = mmbench "0101" (T1, T1ce, T2, FLAIR)
    assert canonical_code("1010") == "0101"
    assert torch.equal(
        nested["adapters.sets.0101.enc.2.up.weight"],
        released["model_missing"]["enc_adapters.1010.2.up.weight"],
    )
    # input channels follow the canonical order: mmbench channel 3 (FLAIR) = released channel 0
    stem = released["model_missing"]["conv1a.weight"]
    assert torch.equal(nested["student.stem.weight"][:, 3], stem[:, 0])
    assert torch.equal(nested["student.stem.weight"][:, 0], stem[:, 1])
    assert torch.equal(nested["disc.logit.weight"], released["d_style"]["6.weight"])
    flat = {
        f"{part}.module.{key}": value
        for part, state in released.items()
        for key, value in state.items()
    }
    converted = port.convert_state_dict(flat, strategy)
    assert all(torch.equal(converted[k], nested[k]) for k in nested)
    port.load_official(strategy, flat)  # strict: every key, every shape


def test_converter_rejects_foreign_keys_and_files(
    released: dict[str, dict[str, torch.Tensor]],
) -> None:
    port = official_port("adamm")
    strategy = _strategy()
    bad = {
        **released,
        "model_missing": {**released["model_missing"], "bogus.weight": torch.ones(1)},
    }
    with pytest.raises(CheckpointError, match="bogus"):
        port.convert_state_dict(bad, strategy)
    with pytest.raises(CheckpointError, match="model_full"):
        port.convert_state_dict(released["model_missing"], strategy)


def test_converter_drops_modules_an_ablation_lacks(
    released: dict[str, dict[str, torch.Tensor]],
) -> None:
    strategy = _strategy(AdaMMNoGARM)
    official_port("adamm").load_official(strategy, released)
    assert strategy.garm is None
