import numpy as np
import pytest
import torch

from mmbench.subsets import (
    ALL_SUBSETS,
    FULL,
    MODALITIES,
    SUBSET_NAMES,
    Subset,
    as_subset,
    reorder_channels,
    subset_order_key,
    zero_absent,
)


def test_fifteen_distinct_subsets_in_published_order() -> None:
    assert len(ALL_SUBSETS) == 15 == len(set(SUBSET_NAMES))
    assert [s.size for s in ALL_SUBSETS] == [1] * 4 + [2] * 6 + [3] * 4 + [4]
    assert SUBSET_NAMES[:4] == MODALITIES
    assert SUBSET_NAMES[-1] == "T1+T1ce+T2+FLAIR" and FULL.is_full
    assert SUBSET_NAMES[8] == "T1ce+FLAIR"


def test_names_and_codes_round_trip() -> None:
    for s in ALL_SUBSETS:
        assert Subset.parse(s.name) == s == Subset.from_code(s.code) == as_subset(s.available)
    assert Subset.parse("0101").name == "T1ce+FLAIR"
    assert Subset.parse("t2f+t1c").name == "T1ce+FLAIR"  # BraTS 2024 spellings, any order
    assert sorted(SUBSET_NAMES, key=subset_order_key) == list(SUBSET_NAMES)


@pytest.mark.parametrize("bad", ["", "0000", "T3", "01012"])
def test_bad_subsets_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError):
        Subset.parse(bad)


def test_reorder_from_peer_channel_orders() -> None:
    # RFNet stores (flair, t1ce, t1, t2); channel values name their modality index.
    peer = torch.tensor([[3.0, 1.0, 0.0, 2.0]])
    assert reorder_channels(peer, "rfnet").tolist() == [[0.0, 1.0, 2.0, 3.0]]
    arr = np.array([[3.0, 1.0, 0.0, 2.0]])
    assert reorder_channels(arr, ("flair", "t1ce", "t1", "t2")).tolist() == [[0, 1, 2, 3]]
    with pytest.raises(ValueError):
        reorder_channels(arr, ("t1", "t1", "t2", "flair"))


def test_zero_absent_never_leaks_and_never_mutates() -> None:
    x = torch.randn(2, 4, 3, 3, 3)
    x[:, 0] = float("inf")
    x[:, 2] = float("nan")
    y = zero_absent(x, "T1ce+FLAIR")
    assert torch.isfinite(y).all()
    assert (y[:, [0, 2]] == 0).all()
    assert torch.equal(y[:, [1, 3]], x[:, [1, 3]])
    assert torch.isinf(x[:, 0]).all()  # input untouched
    a = np.ones((4, 2, 2, 2), dtype=np.float32)
    assert zero_absent(a, "T2").sum() == 8
