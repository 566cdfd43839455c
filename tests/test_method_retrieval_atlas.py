"""retrieval-atlas (sample-retrieval): bank of training crops, nearest-case filling."""

from __future__ import annotations

import io

import torch

from mmbench.methods import MethodConfig, StepContext, method_options
from mmbench.methods.retrieval_atlas import RetrievalAtlas, entry_grid, nearest_weights
from mmbench.subsets import FULL, Subset

PATCH = (8, 8, 8)


def build(seed: int = 0, **options) -> RetrievalAtlas:
    torch.manual_seed(seed)
    config = MethodConfig(
        width=2,
        depth=1,
        patch_size=PATCH,
        options=method_options("retrieval-atlas", {"descriptor_grid": 2, **options}),
    )
    return RetrievalAtlas(config)


def case(j: int) -> torch.Tensor:
    """Training case j: 1×4×8³, brain = all but the first slab; T1 and T1ce carry a pattern
    unique to j (a bright octant that moves with j), T2 = 10 + j and FLAIR = 20 + j inside."""
    x = torch.zeros(1, 4, *PATCH)
    octant = [(0, 0, 0), (4, 0, 0), (0, 4, 0), (0, 0, 4), (4, 4, 4)][j]
    d, h, w = octant
    x[:, :2] = 0.5
    x[:, :2, d : d + 4, h : h + 4, w : w + 4] = 3.0 + j
    x[:, 2] = 10.0 + j
    x[:, 3] = 20.0 + j
    x[:, :, 0] = 0  # outside the brain
    return x


def fit(model: RetrievalAtlas, cases: range = range(5), per_batch: int = 2) -> None:
    images = torch.cat([case(j) for j in cases])
    batches = [
        {"image": b, "image_full": b, "available": FULL.available, "subset": FULL}
        for b in images.split(per_batch)
    ]
    ctx = StepContext(step=0, total_steps=1, stage="bank", stage_step=0, stage_steps=0)
    model.fit(iter(batches), ctx)


def test_bank_first_then_a_full_modality_segmenter() -> None:
    model = build()
    assert [(s.name, s.kind) for s in model.stages()] == [("bank", "fit"), ("train", "gradient")]
    assert model.train_subsets == "full"


def test_one_pass_stores_one_entry_per_case_and_caps_with_a_seeded_sample() -> None:
    model = build()
    fit(model)
    assert model.bank_count == 5
    assert model.bank_images.dtype == torch.float16
    assert torch.equal(model.bank_images[3].float(), case(3)[0])
    capped = build(bank_size=3)
    fit(capped)
    assert capped.bank_count == 3
    again = build(bank_size=3)
    fit(again)
    assert torch.equal(capped.bank_images, again.bank_images)


def test_the_filled_channel_comes_from_the_nearest_training_case() -> None:
    model = build().eval()
    fit(model)
    subset = Subset.parse("T1+T1ce")
    for j in range(5):
        query = case(j).clone()
        query[:, 2:] = 0  # T2 and FLAIR absent
        query[:, :2] += 0.01 * torch.randn_like(query[:, :2]) * (query[:, :2] != 0)
        filled = model.fill(query, subset.available)
        brain = case(j)[:, 0] != 0
        assert torch.equal(filled[:, :2], query[:, :2])  # available channels untouched
        assert torch.allclose(filled[:, 2][brain], torch.tensor(10.0 + j))
        assert torch.allclose(filled[:, 3][brain], torch.tensor(20.0 + j))
        assert filled[:, 2:][:, :, ~brain[0]].abs().sum() == 0  # nothing outside the brain


def test_k_nearest_are_averaged_by_inverse_distance() -> None:
    keys = torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 9.0]])
    idx, w = nearest_weights(torch.tensor([[1.0, 0.0]]), keys, k=2)
    assert idx.tolist() == [[0, 1]]
    # RMS distances 1/√2 and 3/√2: weights 3/4 and 1/4.
    torch.testing.assert_close(w, torch.tensor([[0.75, 0.25]]), atol=1e-5, rtol=0)
    idx, w = nearest_weights(torch.tensor([[1.0, 0.0]]), keys, k=10)
    assert idx.shape == (1, 3)


def test_strided_storage_is_resized_to_the_window() -> None:
    assert entry_grid((32, 32, 32)) == (32, 32, 32)
    assert entry_grid((160, 192, 128)) == (40, 48, 32)
    model = build(bank_stride=2).eval()
    assert model.entry_grid == (4, 4, 4)
    fit(model)
    assert model.bank_images.shape == (5, 4, 4, 4, 4)
    query = case(4).clone()
    query[:, 3] = 0
    filled = model.fill(query, ("T1", "T1ce", "T2"))
    assert filled.shape == query.shape
    assert torch.allclose(filled[0, 3, 4:, 4:, 4:], torch.tensor(24.0))


def test_checkpoint_round_trip_carries_the_bank_into_an_empty_model() -> None:
    model = build().eval()
    fit(model)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    clone = build(seed=7).eval()
    assert clone.bank_count == 0
    clone.load_state_dict(torch.load(buffer, weights_only=True))
    assert clone.bank_count == 5
    query = case(2).clone()
    query[:, 1:] = 0
    with torch.no_grad():
        assert torch.equal(model.predict(query, ("T1",)), clone.predict(query, ("T1",)))


def test_without_a_bank_absent_channels_stay_zero() -> None:
    model = build().eval()
    query = case(1).clone()
    query[:, 3] = 0
    assert torch.equal(model.fill(query, ("T1", "T1ce", "T2")), query)
