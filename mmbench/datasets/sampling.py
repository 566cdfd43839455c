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
    items: Any, patch_size: Sequence[int], intensity_jitter: bool = False, name: str = "train"
) -> BatchSource:
    """Random crops of random training items (with flips and optional intensity jitter).

    Args:
        items: an indexable dataset of preprocessed items (:class:`PreparedData.train`).
        patch_size: crop (D, H, W) in voxels.
        name: what the items are, for the error on an empty split.

    Raises:
        RunError: ``items`` is empty.
    """
    from mmbench.datasets.transforms import build_train_augment

    augment = build_train_augment(patch_size, intensity_jitter=intensity_jitter, keys=TARGET_KEYS)
    n = len(items)
    if n == 0:
        raise RunError(f"the {name} split is empty: nothing to train on")

    def draw(rng: np.random.Generator, batch_size: int) -> dict[str, torch.Tensor]:
        samples = []
        for idx in rng.choice(n, size=batch_size, replace=n < batch_size):
            augment.set_random_state(seed=int(rng.integers(2**31 - 1)))
            item = items[int(idx)]
            samples.append(augment({k: item[k] for k in TARGET_KEYS}))
        return collate(samples, TARGET_KEYS)

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
