"""Training batches from preprocessed items, fully determined by a random generator.

The training loop draws step ``t``'s batch with a generator seeded from ``(seed, t)``, so a
resumed run replays exactly the batches of an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from mmbench.errors import RunError
from mmbench.subsets import FULL

TARGET_KEYS: tuple[str, ...] = ("image", "regions", "compartments")
"""Keys of a training batch: images N×4×D×H×W, WT/TC/ET and NETC/ED/ET masks N×3×D×H×W."""

BatchSource = Callable[[np.random.Generator, int], dict[str, torch.Tensor]]
"""``(rng, batch_size) → {"image", "regions", "compartments"}`` (full modalities; the loop
applies the step's subset)."""


def collate(samples: Sequence[dict[str, Any]], keys: Sequence[str]) -> dict[str, torch.Tensor]:
    """Stack per-sample tensors (C×D×H×W) into N×C×D×H×W, key by key."""
    return {k: torch.stack([torch.as_tensor(np.asarray(s[k])) for s in samples]) for k in keys}


def make_batch_source(
    items: Any,
    patch_size: Sequence[int],
    intensity_jitter: bool = False,
    name: str = "train",
    compact: bool = False,
) -> BatchSource:
    """Random crops of random training items (with flips and optional intensity jitter).

    Items cached as arrays (:class:`~mmbench.datasets.arrays.ArrayCache`) are read crop by crop
    from their memory maps; the random draws are the same as for items held whole (same
    generator, same transforms' states), so both give the same batches up to the float16
    rounding of the array cache.

    Args:
        items: an indexable dataset of preprocessed items (:class:`PreparedData.train`).
        patch_size: crop (D, H, W) in voxels.
        name: what the items are, for the error on an empty split.
        compact: for an array cache, keep the stored forms: image float16 and, instead of
            ``regions`` and ``compartments``, ``targets``, the uint8 N×D×H×W bit field
            (:mod:`mmbench.datasets.arrays`) — 35 MB instead of 157 MB per 160×192×128 crop to
            move between processes and to the device; the training loop converts and decodes
            them on the device. Other items are always float32 with the three keys.

    Raises:
        RunError: ``items`` is empty.
    """
    from mmbench.datasets.arrays import ArrayCache
    from mmbench.datasets.transforms import build_train_augment

    augment = build_train_augment(patch_size, intensity_jitter=intensity_jitter, keys=TARGET_KEYS)
    n = len(items)
    if n == 0:
        raise RunError(f"the {name} split is empty: nothing to train on")
    if isinstance(items, ArrayCache):
        return _array_source(items, augment, patch_size, compact)

    def draw(rng: np.random.Generator, batch_size: int) -> dict[str, torch.Tensor]:
        samples = []
        for idx in rng.choice(n, size=batch_size, replace=n < batch_size):
            augment.set_random_state(seed=int(rng.integers(2**31 - 1)))
            item = items[int(idx)]
            samples.append(augment({k: item[k] for k in TARGET_KEYS}))
        return collate(samples, TARGET_KEYS)

    return draw


def _batch_tensor(shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised tensor; in a DataLoader worker, in shared memory (as torch's collate
    does), so handing the batch to the loop copies nothing."""
    if torch.utils.data.get_worker_info() is None:
        return torch.empty(tuple(shape), dtype=dtype)
    numel = int(np.prod(shape))
    storage = torch.empty(0, dtype=dtype)._typed_storage()._new_shared(numel)
    return torch.empty(0, dtype=dtype).new(storage).view(tuple(shape))


def _array_source(
    items: Any, augment: Any, patch_size: Sequence[int], compact: bool
) -> BatchSource:
    """:func:`make_batch_source` over an :class:`~mmbench.datasets.arrays.ArrayCache`.

    The augmentation's transforms are used for their random states only, in their order:
    the pad becomes a crop offset, the tumour crop draws its box from the stored foreground
    voxels, the flips are folded into the copy; an intensity jitter is applied to the crop.
    Each crop is written straight into its slot of the batch.
    """
    from mmbench.datasets.arrays import decode_targets_tensor, read_crop
    from mmbench.datasets.transforms import RandTumourCropd

    patch = np.asarray([int(p) for p in patch_size])
    transforms = list(augment.transforms)
    crop = next(t for t in transforms if isinstance(t, RandTumourCropd))
    flips = [t for t in transforms if type(t).__name__ == "RandFlipd"]
    jitter = transforms[transforms.index(flips[-1]) + 1 :]
    n = len(items)

    def one(case: Any, image: np.ndarray, bits: np.ndarray) -> None:
        shape = np.asarray(case.shape)
        pad_before = np.maximum(patch - shape, 0) // 2
        start = crop.draw_start(np.maximum(shape, patch), case.foreground, offset=pad_before)
        flipped = [False, False, False]
        for t in flips:
            t.randomize(None)
            if t._do_transform:
                for axis in np.atleast_1d(t.flipper.spatial_axis):
                    flipped[int(axis)] = not flipped[int(axis)]
        if jitter:
            crop16, bits[...] = read_crop(case, start, patch, pad_before, flipped)
            sample = {"image": torch.from_numpy(crop16.astype(np.float32))}
            for t in jitter:
                sample = t(sample)
            image[...] = np.asarray(sample["image"])
        else:
            read_crop(case, start, patch, pad_before, flipped, out=(image, bits))

    def draw(rng: np.random.Generator, batch_size: int) -> dict[str, torch.Tensor]:
        idx = rng.choice(n, size=batch_size, replace=n < batch_size)
        image_dtype = torch.float32 if jitter or not compact else torch.float16
        image = _batch_tensor((batch_size, 4, *patch), image_dtype)
        targets = _batch_tensor((batch_size, *patch), torch.uint8)
        for i, k in enumerate(idx):
            augment.set_random_state(seed=int(rng.integers(2**31 - 1)))
            one(items.case(int(k)), image[i].numpy(), targets[i].numpy())
        if compact:
            return {"image": image, "targets": targets}
        return {"image": image, **decode_targets_tensor(targets)}

    return draw


def make_fit_batches(
    items: Any, patch_size: Sequence[int], seed: int, batch_size: int
) -> Callable[[], Iterator[dict[str, Any]]]:
    """Full-modality batches for non-gradient fitting: one pass over every item, in order.

    Each item appears exactly once per pass (item ``i`` in batch ``i // batch_size``), as one
    crop of ``patch_size`` drawn with the training augmentation seeded from ``(seed, i)``; the
    pass is identical every time it is iterated (a bank refitted on other weights sees the same
    crops). Batches carry ``"case_index"`` (int64 N, the items' indices).
    """
    from mmbench.datasets.transforms import build_train_augment

    augment = build_train_augment(patch_size, keys=TARGET_KEYS)

    def batches() -> Iterator[dict[str, Any]]:
        n = len(items)
        for start in range(0, n, batch_size):
            samples = []
            indices = list(range(start, min(n, start + batch_size)))
            for i in indices:
                rng = np.random.default_rng([seed, i, 0xF17])
                augment.set_random_state(seed=int(rng.integers(2**31 - 1)))
                item = items[i]
                samples.append(augment({k: item[k] for k in TARGET_KEYS}))
            raw = collate(samples, TARGET_KEYS)
            yield {
                **raw,
                "image_full": raw["image"],
                "available": FULL.available,
                "subset": FULL,
                "case_index": torch.tensor(indices, dtype=torch.int64),
            }

    return batches


__all__ = ["TARGET_KEYS", "BatchSource", "collate", "make_batch_source", "make_fit_batches"]
