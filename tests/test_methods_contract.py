"""Contract tests run against every registered strategy (:mod:`mmbench.testing`).

These are the properties the engine relies on: predict's shape and range, absent-modality
invariance (changing an absent channel never changes the output), a training step per stage that
gives finite losses and gradients only where they belong, and a state-dict round trip that
reproduces predict exactly (retrieval banks and other buffers included).
"""

from __future__ import annotations

import pytest

from mmbench.methods import Strategy, list_methods, register
from mmbench.methods.registry import _REGISTRY
from mmbench.testing import StrategyCheckError, check_strategy, contract_checks

CASES = [(name, check_id) for name in list_methods() for check_id, _ in contract_checks(name)]


@pytest.mark.parametrize("name, check_id", CASES, ids=[f"{n}-{c}" for n, c in CASES])
def test_contract(name: str, check_id: str) -> None:
    dict(contract_checks(name))[check_id]()


def test_check_strategy_reports_a_leaking_method() -> None:
    import torch

    @register("leaky-test-method", family="reference", paper="test")
    class Leaky(Strategy):
        """Averages every input channel, absent ones included (a leak)."""

        options = {}

        def __init__(self, config):
            super().__init__(config)
            self.scale = torch.nn.Parameter(torch.ones(()))

        def training_step(self, batch, ctx):
            return {"main": (self.scale * batch["image"]).mean() ** 2}

        def predict(self, image, available):
            return torch.sigmoid(self.scale * image.mean(1, keepdim=True)).expand(-1, 3, -1, -1, -1)

    # `predict` is wrapped by the base class, so absent channels are zeroed before it runs: the
    # leak must be smuggled past it to be seen.
    Leaky.predict = lambda self, image, available: torch.sigmoid(  # type: ignore[method-assign]
        self.scale * image.nan_to_num(0, 0, 0).mean(1, keepdim=True)
    ).expand(-1, 3, -1, -1, -1)
    try:
        with pytest.raises(StrategyCheckError, match=r"no-leak\[T1\]"):
            check_strategy("leaky-test-method")
    finally:
        _REGISTRY.pop("leaky-test-method")
