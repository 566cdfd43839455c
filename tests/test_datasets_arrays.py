"""The memory-mapped array cache: same batches as whole items, crops, reuse, bounded memory."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from mmbench.config import load_config
from mmbench.datasets.arrays import (
    ArrayCache,
    build_array_cache,
    decode_targets,
    decode_targets_tensor,
    encode_targets,
    read_crop,
)
from mmbench.datasets.prepare import prepare_data
from mmbench.datasets.sampling import make_batch_source
from mmbench.datasets.validation import load_dataset

# float16 keeps 11 significant bits: |x16 - x| <= 2**-11 |x|; intensities here are below 8.
FLOAT16_ATOL = 8 * 2.0**-11


@pytest.fixture(scope="module")
def cached(tmp_path_factory: pytest.TempPathFactory):
    config = load_config("smoke")
    data = prepare_data("synthetic", config, progress=False, log=lambda s: None)
    by_id = {c.id: c for c in load_dataset("synthetic", data.root).cases}
    items = [by_id[i].as_item() for i in data.split.train]
    folder = tmp_path_factory.mktemp("arrays")
    arrays = build_array_cache(items, "synthetic", folder, num_workers=2, progress=False)
    return data, arrays, items, folder


def test_targets_round_trip() -> None:
    rng = np.random.default_rng(0)
    regions = rng.random((3, 5, 6, 7)) > 0.5
    compartments = rng.random((3, 5, 6, 7)) > 0.5
    r, c = decode_targets(encode_targets(regions, compartments))
    assert r.dtype == np.uint8 and np.array_equal(r, regions) and np.array_equal(c, compartments)


@pytest.mark.parametrize("patch", [(16, 16, 16), (28, 12, 26)])
@pytest.mark.parametrize("jitter", [False, True])
def test_array_cache_gives_the_batches_of_whole_items(cached, patch, jitter) -> None:
    data, arrays, _, _ = cached
    whole = make_batch_source(data.train, patch, jitter)
    mapped = make_batch_source(arrays, patch, jitter)
    compact = make_batch_source(arrays, patch, jitter, compact=True)
    for step in range(12):
        a = whole(np.random.default_rng([5, step]), 2)
        b = mapped(np.random.default_rng([5, step]), 2)
        c = compact(np.random.default_rng([5, step]), 2)
        assert b["image"].dtype == torch.float32 and c["image"].dtype == (
            torch.float32 if jitter else torch.float16
        )
        assert c["targets"].dtype == torch.uint8 and c["targets"].shape == (2, *patch)
        c = {"image": c["image"].float(), **decode_targets_tensor(c["targets"])}
        for key in ("image", "regions", "compartments"):
            assert a[key].shape == b[key].shape == (2, 4 if key == "image" else 3, *patch)
            atol = FLOAT16_ATOL if key == "image" else 0.0
            torch.testing.assert_close(b[key], a[key], atol=atol, rtol=0)
            torch.testing.assert_close(c[key], b[key])


def test_read_crop_pads_and_flips_like_numpy(cached) -> None:
    _, arrays, _, _ = cached
    case = arrays.case(0)
    image = np.asarray(case.image(), dtype=np.float32)
    size = np.asarray(case.shape) + [4, -3, 0]
    pad = np.maximum(size - case.shape, 0) // 2
    padded = np.pad(
        image, [(0, 0)] + [(p, max(0, s - c - p)) for p, s, c in zip(pad, size, case.shape)]
    )
    start = np.array([0, 2, 0])
    flips = (True, False, True)
    got, bits = read_crop(case, start, size, pad, flips)
    want = padded[:, start[0] :, start[1] : start[1] + size[1], :][:, ::-1, :, ::-1]
    np.testing.assert_array_equal(got.astype(np.float32), want)
    assert bits.shape == tuple(size)


def test_cache_is_written_once_and_keyed_by_settings(cached) -> None:
    _, arrays, items, folder = cached
    image = arrays.case(0).folder / "image.npy"
    before = image.stat().st_mtime_ns
    again = build_array_cache(items, "synthetic", folder, progress=False)
    assert image.stat().st_mtime_ns == before and [c.id for c in again.cases] == [
        c.id for c in arrays.cases
    ]
    other = build_array_cache(items[:1], "synthetic", folder, "minmax", progress=False)
    assert other.case(0).folder.parent != arrays.case(0).folder.parent
    item = arrays[0]
    assert item["image"].dtype == torch.float32 and item["regions"].shape[0] == 3


def test_the_cache_holds_no_voxels(cached) -> None:
    # What a worker process receives (and what a 1,000-case run keeps) is paths and shapes only.
    _, arrays, _, _ = cached
    assert isinstance(arrays, ArrayCache)
    assert len(pickle.dumps(arrays)) < 400 * len(arrays)


def test_prepare_data_with_mmap_cache(tmp_path: Path) -> None:
    config = load_config("smoke", ["dataset.cache=mmap"])
    data = prepare_data("synthetic", config, cache_dir=tmp_path, progress=False, log=lambda s: None)
    assert isinstance(data.train, ArrayCache) and len(data.train) == len(data.split.train)
    assert data.test_item(data.split.test[0])["image"].dtype == torch.float32


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    pytest.skip("no /proc/self/status")


def test_memory_does_not_grow_with_the_number_of_cases(tmp_path: Path) -> None:
    # 600 cases of 4×40³ float16 (0.5 MB each, 300 MB in all): drawing a batch from every
    # case must leave resident memory about where it was, since no case stays mapped.
    import json

    from mmbench.datasets.arrays import CaseArrays

    rng = np.random.default_rng(0)
    image = rng.standard_normal((4, 40, 40, 40)).astype(np.float16)
    targets = (rng.random((40, 40, 40)) > 0.9).astype(np.uint8) * 7
    cases = []
    for i in range(600):
        folder = tmp_path / f"c{i}"
        folder.mkdir()
        np.save(folder / "image.npy", image)
        np.save(folder / "targets.npy", targets)
        np.save(folder / "foreground.npy", np.argwhere(targets & 1).astype(np.int16))
        (folder / "meta.json").write_text(json.dumps({"shape": [40, 40, 40]}))
        cases.append(CaseArrays(f"c{i}", folder, (40, 40, 40)))
    source = make_batch_source(ArrayCache(cases), (32, 32, 32), compact=True)
    source(np.random.default_rng(0), 4)
    before = _rss_mb()
    for step in range(300):
        source(np.random.default_rng([1, step]), 4)  # 1,200 crops: every case about twice
    assert _rss_mb() - before < 60
