"""parameter_count is what inference uses; training-only parameters are counted apart."""

from __future__ import annotations

import pytest
import torch

from mmbench.methods import create, list_methods
from mmbench.subsets import ALL_SUBSETS


@pytest.mark.parametrize("name", list_methods())
def test_inference_and_training_only_counts_partition_the_parameters(name: str) -> None:
    model = create(name, preset="smoke")
    total = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    assert model.parameter_count() + model.training_only_parameter_count() == total


@pytest.mark.parametrize("name", ["uhved", "mmgan", "retrieval-knn", "dropout-unet", "zerofill"])
def test_parameter_count_is_exactly_what_predict_reaches(name: str) -> None:
    torch.manual_seed(0)
    model = create(name, preset="smoke").eval()
    image = torch.randn(1, 4, 16, 16, 16)
    reached: set[int] = set()
    for subset in ALL_SUBSETS:
        model.zero_grad(set_to_none=True)
        model.predict(image, subset.available).sum().backward()
        reached |= {id(p) for p in model.parameters() if p.grad is not None}
    counted = {id(p) for m in model.inference_modules() for p in m.parameters()}
    assert reached == counted
