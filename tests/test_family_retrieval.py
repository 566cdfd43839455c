"""retrieval-knn (sample-retrieval): bounded bank, exact retrieval, subset-safe descriptor."""

from __future__ import annotations

import numpy as np
import torch

from mmbench.benchmark.trainer import Trainer
from mmbench.config import TrainSection, build_section
from mmbench.datasets.sampling import make_fit_batches
from mmbench.methods import MethodConfig, StepContext
from mmbench.methods.retrieval_knn import RetrievalKNN, knn_fill
from mmbench.subsets import FULL, MODALITIES, Subset, zero_absent

PATCH = (16, 16, 16)


def build(seed: int = 0, **options) -> RetrievalKNN:
    torch.manual_seed(seed)
    return RetrievalKNN(
        MethodConfig(width=4, depth=2, patch_size=PATCH, options={"bank_size": 64, **options})
    )


def make_batch(subset: Subset, n: int = 2, seed: int = 0) -> dict:
    """A toy batch: noise images, zero outside the brain (first slab), with a visible tumour."""
    g = torch.Generator().manual_seed(seed)
    full = torch.randn(n, 4, *PATCH, generator=g)
    full[:, :, :4] = 0
    regions = torch.zeros(n, 3, *PATCH)
    regions[:, 0, 4:12, 4:12, 4:12] = 1
    regions[:, 1, 6:10, 6:10, 6:10] = 1
    regions[:, 2, 7:9, 7:9, 7:9] = 1
    full[:, 3] += 2 * regions[:, 0]
    full[:, 1] += 2 * regions[:, 2]
    return {
        "image": zero_absent(full, subset),
        "image_full": full,
        "regions": regions,
        "available": subset.available,
        "subset": subset,
    }


def ctx(stage: str = "train") -> StepContext:
    return StepContext(step=0, total_steps=10, stage=stage, stage_step=0, stage_steps=5)


def fit(model: RetrievalKNN, n_batches: int = 3) -> None:
    model.fit(iter([make_batch(FULL, seed=s) for s in range(n_batches)]), ctx("bank"))


def test_stages_train_then_fit_the_bank() -> None:
    stages = build().stages()
    assert [(s.name, s.kind) for s in stages] == [("train", "gradient"), ("bank", "fit")]
    assert stages[0].select_on_val and not stages[1].select_on_val
    assert stages[1].fit_before_val  # validation scores retrieval from a bank, as test does


def toy_items(n: int, shape: tuple[int, int, int] = (20, 20, 20)) -> list[dict]:
    """Preprocessed-like items; case ``i``'s image is filled with ``i`` inside the brain."""
    items = []
    for i in range(n):
        image = np.zeros((4, *shape), dtype=np.float32)
        image[:, 4:] = i + 1.0
        regions = np.zeros((3, *shape), dtype=np.float32)
        regions[:, 8:12, 8:12, 8:12] = 1
        items.append({"image": image, "regions": regions, "compartments": regions.copy()})
    return items


def test_fit_batches_are_one_pass_over_every_case_the_same_each_time() -> None:
    items = toy_items(7)
    source = make_fit_batches(items, PATCH, seed=3, batch_size=3)
    first = list(source())
    assert [b["image"].shape[0] for b in first] == [3, 3, 1]
    seen = torch.cat([b["case_index"] for b in first]).tolist()
    assert seen == list(range(7))  # every case exactly once, in order
    # The crop shows case i's own values (i + 1 inside the brain), not a random draw.
    for b in first:
        for img, i in zip(b["image"], b["case_index"]):
            assert set(img.unique().tolist()) <= {0.0, float(i) + 1.0}
            assert img.abs().sum() > 0
    again = list(source())
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(first, again))
    assert all(b["available"] == FULL.available and b["subset"] == FULL for b in first)


def test_bank_is_built_from_every_training_case() -> None:
    items = toy_items(5)
    model = build(bank_size=4096).eval()
    model.fit(make_fit_batches(items, PATCH, seed=0, batch_size=2)(), ctx("bank"))
    assert int(model.bank_cases) == len(items)
    # All 4³ bottleneck cells of every crop that lie in the brain; one pass, no repeats.
    assert 0 < int(model.bank_count) <= len(items) * 4**3


TRAIN = build_section(
    TrainSection,
    {
        "steps": 2,
        "batch_size": 1,
        "lr": 1e-3,
        "weight_decay": 0.0,
        "poly_power": 0.9,
        "grad_clip": None,
        "val_every": 1,
        "log_every": 1,
        "amp": "off",
        "deterministic": True,
    },
)


def test_validation_scores_the_model_with_its_bank(tmp_path) -> None:
    items = toy_items(3)
    model = build()
    banks_at_validation: list[tuple[int, int]] = []

    def validator(strategy: RetrievalKNN) -> float:
        banks_at_validation.append((int(strategy.bank_cases), int(strategy.bank_count)))
        return float(len(banks_at_validation))

    def draw(rng: np.random.Generator, n: int) -> dict:
        b = make_batch(FULL, n=n, seed=int(rng.integers(100)))
        return {"image": b["image_full"], "regions": b["regions"], "compartments": b["regions"]}

    trainer = Trainer(
        model,
        TRAIN,
        tmp_path,
        draw,
        fit_batches=make_fit_batches(items, PATCH, seed=0, batch_size=2),
        validator=validator,
        progress=False,
        log=lambda s: None,
    )
    trainer.fit()
    assert len(banks_at_validation) == 2
    assert all(cases == 3 and count > 0 for cases, count in banks_at_validation)
    # The selected checkpoint carries the bank built on its own weights.
    best = torch.load(tmp_path / "checkpoints" / "best.pt", weights_only=True)["model"]
    assert int(best["bank_cases"]) == 3


def test_bank_is_bounded_and_keeps_brain_locations_only() -> None:
    model = build(bank_size=10)
    fit(model)
    assert int(model.bank_count) == 10
    assert model.bank_features.shape == (10, 4, 16)
    # 3 batches × 2 cases × 4³ cells, of which the first slab (depth 0 of 4) is outside the brain.
    big = build(bank_size=1000)
    fit(big)
    assert int(big.bank_count) == 3 * 2 * 3 * 16
    assert torch.isinf(big.bank_keys[int(big.bank_count) :]).all()
    assert big.bank_features[int(big.bank_count) :].abs().sum() == 0


def test_bank_is_a_uniform_sample_of_the_cohort_not_the_first_batches() -> None:
    model = build(bank_size=32)
    model.fit(iter([make_batch(FULL, seed=s) for s in range(6)]), ctx("bank"))
    entries = model.bank_features[: int(model.bank_count)]
    per_batch = []
    for s in range(6):
        b = make_batch(FULL, seed=s)["image_full"]
        with torch.no_grad():
            feats = torch.stack([model.encoders[c](b[:, c : c + 1])[-1] for c in range(4)], 1)
        cells = feats.flatten(3).permute(0, 3, 1, 2).flatten(0, 1)
        dist = torch.cdist(
            entries.flatten(1), cells.flatten(1), compute_mode="donot_use_mm_for_euclid_dist"
        )
        hits = (dist.amin(1) < 1e-4).sum()
        per_batch.append(int(hits))
    assert sum(per_batch) == 32
    assert per_batch[-1] > 0 and per_batch[0] < 32


def test_knn_fill_returns_exact_neighbours_on_a_hand_made_bank() -> None:
    keys = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    values = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    queries = torch.tensor([[10.0, 0.0], [0.0, 10.0], [9.0, 9.5]])
    out = knn_fill(queries, keys, values, k=1)
    assert out.squeeze(1).tolist() == [2.0, 3.0, 4.0]
    # k=2 halfway between two entries: the two values weighted equally.
    mid = knn_fill(torch.tensor([[5.0, 0.0]]), keys, values, k=2)
    torch.testing.assert_close(mid, torch.tensor([[1.5]]))
    # An exact match dominates the inverse-distance weights.
    exact = knn_fill(torch.tensor([[0.0, 10.0]]), keys, values, k=3)
    torch.testing.assert_close(exact, torch.tensor([[3.0]]), atol=1e-4, rtol=0)
    # k larger than the bank is clipped, and chunking does not change the result.
    torch.testing.assert_close(
        knn_fill(queries, keys, values, k=10), knn_fill(queries, keys, values, k=10, chunk=1)
    )


def test_retrieve_uses_the_bank_entry_matching_the_available_descriptor() -> None:
    model = build(k=1).eval()
    c_b = model.bank_features.shape[-1]
    # Hand-made bank: entry j has modality m's feature filled with 10·j + m.
    n_entries = 8
    bank = torch.arange(n_entries, dtype=torch.float32)[:, None, None] * 10
    bank = bank + torch.arange(4, dtype=torch.float32)[None, :, None]
    model.bank_features[:n_entries] = bank.expand(-1, -1, c_b)
    model.bank_count.fill_(n_entries)
    # Query: T1ce and FLAIR features of entries 5 (cell 0) and 2 (cells 1..).
    available = [1, 3]
    shape = (1, c_b, 2, 2, 2)
    bottleneck = {c: torch.full(shape, 20.0 + c) for c in available}
    for c in available:
        bottleneck[c][0, :, 0, 0, 0] = 50.0 + c
    out = model.retrieve(bottleneck, available)
    assert sorted(out) == [0, 2]
    for c in (0, 2):
        assert out[c].shape == shape
        assert torch.all(out[c][0, :, 0, 0, 0] == 50.0 + c)
        rest = out[c].flatten(2)[0, :, 1:]
        assert torch.all(rest == 20.0 + c)


def test_descriptor_ignores_absent_modalities() -> None:
    model = build().eval()
    fit(model)
    subset = Subset.parse("T1+T2")
    batch = make_batch(subset)
    idx = [MODALITIES.index(m) for m in subset.available]
    with torch.inference_mode():
        pyr = model.encode(batch["image"], idx)
        assert sorted(pyr) == idx  # absent modalities are never encoded at test time
        desc = model.descriptor({c: f[-1] for c, f in pyr.items()}, idx)
        assert desc.shape == (2 * 4**3, 2 * model.bank_features.shape[-1])
        # Changing absent channels changes neither the descriptor nor the retrieval.
        noisy = batch["image_full"].clone()
        pyr2 = model.encode(noisy, idx)
        desc2 = model.descriptor({c: f[-1] for c, f in pyr2.items()}, idx)
        assert torch.equal(desc, desc2)
        assert torch.equal(
            model.predict(batch["image"], subset.available),
            model.predict(noisy, subset.available),
        )


def test_predict_uses_the_bank_once_fitted() -> None:
    model = build().eval()
    subset = Subset.parse("FLAIR")
    image = make_batch(subset)["image"]
    with torch.inference_mode():
        before = model.predict(image, subset.available)
        fit(model)
        after = model.predict(image, subset.available)
        full_before = model.predict(make_batch(FULL)["image"], FULL.available)
    assert before.shape == after.shape == (2, 3, *PATCH)
    assert not torch.equal(before, after)
    model.bank_count.zero_()
    with torch.inference_mode():  # complete inputs never consult the bank
        assert torch.equal(full_before, model.predict(make_batch(FULL)["image"], FULL.available))


def test_bank_survives_a_save_load_round_trip_through_a_file(tmp_path) -> None:
    model = build().eval()
    fit(model)
    path = tmp_path / "retrieval.pt"
    torch.save(model.state_dict(), path)
    clone = build(seed=7).eval()
    assert int(clone.bank_count) == 0
    clone.load_state_dict(torch.load(path, weights_only=True))
    assert int(clone.bank_count) == int(model.bank_count)
    subset = Subset.parse("T1ce")
    image = make_batch(subset, seed=4)["image"]
    with torch.inference_mode():
        assert torch.equal(
            model.predict(image, subset.available), clone.predict(image, subset.available)
        )


def test_training_uses_the_true_features_of_absent_modalities() -> None:
    model = build()
    model.train()
    batch = make_batch(Subset.parse("T2"))
    loss = model.training_step(batch, ctx())["main"]
    loss.backward()
    # Absent modalities' encoders train through the oracle bottleneck.
    for enc in model.encoders:
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.parameters())


def test_a_few_dozen_steps_on_a_fixed_batch_reduce_the_segmentation_loss() -> None:
    model = build()
    opt = model.configure_optimizers(lr=3e-3, weight_decay=0.0)["main"]
    batch = make_batch(Subset.parse("T1ce+FLAIR"))
    values = []
    for _ in range(30):
        model.train()
        loss = model.training_step(batch, ctx())["main"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        values.append(float(loss))
    assert min(values[-5:]) < 0.92 * values[0]
