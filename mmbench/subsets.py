"""Modality subsets: canonical names, 4-bit codes, display order and channel masking.

The canonical modality order is ``T1, T1ce, T2, FLAIR`` (channel index 0..3) everywhere in
mmbench. A subset is written by its modality names joined with ``+`` in that order
(``"T1ce+FLAIR"``) and, where a compact key is needed, by a 4-bit code in the same order
(``"0101"`` = T1ce+FLAIR). Nothing is keyed by bit position alone: peers use other channel
orders, and :func:`reorder_channels` maps from theirs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np

MODALITIES: tuple[str, ...] = ("T1", "T1ce", "T2", "FLAIR")
"""Canonical modality order; channel ``i`` of every image tensor is ``MODALITIES[i]``."""

# Spellings found in datasets and peers' code, mapped to canonical names (lower-case keys).
MODALITY_ALIASES: dict[str, str] = {
    "t1": "T1",
    "t1n": "T1",
    "t1w": "T1",
    "t1ce": "T1ce",
    "t1c": "T1ce",
    "t1gd": "T1ce",
    "t1-gd": "T1ce",
    "t1post": "T1ce",
    "t2": "T2",
    "t2w": "T2",
    "flair": "FLAIR",
    "t2f": "FLAIR",
    "t2-flair": "FLAIR",
}

# Channel orders used by published code bases, in their own spelling.
PEER_CHANNEL_ORDERS: dict[str, tuple[str, ...]] = {
    "mmbench": MODALITIES,
    "brats-folder": ("flair", "t1", "t1ce", "t2"),  # alphabetical file order in BraTS 2018
    "rfnet": ("flair", "t1ce", "t1", "t2"),
    "mmformer": ("flair", "t1ce", "t1", "t2"),
    "adamm": ("t1n", "t1c", "t2w", "t2f"),
    "brats2024": ("t1n", "t1c", "t2w", "t2f"),
    "hved": ("t1", "t1ce", "t2", "flair"),
}


def canonical_modality(name: str) -> str:
    """Return the canonical spelling of a modality name (``"t2f"`` → ``"FLAIR"``)."""
    if name in MODALITIES:
        return name
    key = name.strip().lower()
    if key in MODALITY_ALIASES:
        return MODALITY_ALIASES[key]
    raise ValueError(f"unknown modality {name!r}; valid: {', '.join(MODALITIES)}")


@dataclass(frozen=True, order=False)
class Subset:
    """A non-empty set of available modalities.

    Attributes:
        mask: four booleans in canonical order; ``mask[i]``: is ``MODALITIES[i]`` present.
    """

    mask: tuple[bool, bool, bool, bool]

    def __post_init__(self) -> None:
        if len(self.mask) != len(MODALITIES):
            raise ValueError(f"a subset mask has {len(MODALITIES)} entries, got {len(self.mask)}")
        if not any(self.mask):
            raise ValueError("a subset must contain at least one modality")

    @classmethod
    def from_names(cls, names: Iterable[str]) -> Subset:
        present = {canonical_modality(n) for n in names}
        return cls(tuple(m in present for m in MODALITIES))  # type: ignore[arg-type]

    @classmethod
    def from_code(cls, code: str) -> Subset:
        if len(code) != 4 or set(code) - {"0", "1"}:
            raise ValueError(
                f"a subset code is four 0/1 digits in T1,T1ce,T2,FLAIR order: {code!r}"
            )
        return cls(tuple(c == "1" for c in code))  # type: ignore[arg-type]

    @classmethod
    def parse(cls, text: str) -> Subset:
        """Parse ``"T1ce+FLAIR"``, ``"t1c+t2f"`` or a code such as ``"0101"``."""
        text = text.strip()
        if len(text) == 4 and not set(text) - {"0", "1"}:
            return cls.from_code(text)
        return cls.from_names(part for part in text.split("+") if part)

    @property
    def available(self) -> tuple[str, ...]:
        """Present modality names in canonical order, e.g. ``("T1ce", "FLAIR")``."""
        return tuple(m for m, on in zip(MODALITIES, self.mask) if on)

    @property
    def absent(self) -> tuple[str, ...]:
        return tuple(m for m, on in zip(MODALITIES, self.mask) if not on)

    @property
    def name(self) -> str:
        """Canonical name, e.g. ``"T1ce+FLAIR"``."""
        return "+".join(self.available)

    @property
    def code(self) -> str:
        """4-bit code in canonical order, e.g. ``"0101"``."""
        return "".join("1" if on else "0" for on in self.mask)

    @property
    def size(self) -> int:
        return sum(self.mask)

    @property
    def is_full(self) -> bool:
        return all(self.mask)

    def __str__(self) -> str:
        return self.name


def _display_order() -> tuple[Subset, ...]:
    # Published tables list singles, then pairs, triples and the full set; within a size the
    # combinations follow the canonical modality order.
    out = []
    for k in range(1, len(MODALITIES) + 1):
        for combo in combinations(MODALITIES, k):
            out.append(Subset.from_names(combo))
    return tuple(out)


ALL_SUBSETS: tuple[Subset, ...] = _display_order()
"""The 15 non-empty subsets in the published table order (singles, pairs, triples, full)."""

SUBSET_NAMES: tuple[str, ...] = tuple(s.name for s in ALL_SUBSETS)
FULL: Subset = ALL_SUBSETS[-1]


def as_subset(value: Subset | str | Sequence[str]) -> Subset:
    """Coerce a :class:`Subset`, a name/code string or a sequence of modality names."""
    if isinstance(value, Subset):
        return value
    if isinstance(value, str):
        return Subset.parse(value)
    return Subset.from_names(value)


def subset_order_key(name: str) -> int:
    """Sort key that puts subset names in the published display order."""
    return SUBSET_NAMES.index(as_subset(name).name)


def reorder_channels(array: Any, order: Sequence[str], axis: int = 1) -> Any:
    """Reorder channels given in a peer's ``order`` into the canonical order.

    Args:
        array: numpy array or torch tensor whose ``axis`` holds one channel per modality.
        order: the modality name of each channel as stored, e.g. ``("flair", "t1ce", "t1", "t2")``
            or a key of :data:`PEER_CHANNEL_ORDERS`.
    """
    if isinstance(order, str):
        order = PEER_CHANNEL_ORDERS[order]
    names = [canonical_modality(n) for n in order]
    if sorted(names) != sorted(MODALITIES):
        raise ValueError(f"channel order must name each of {MODALITIES} once, got {tuple(order)}")
    index = [names.index(m) for m in MODALITIES]
    if isinstance(array, np.ndarray):
        return np.take(array, index, axis=axis)
    import torch

    return torch.index_select(array, axis, torch.as_tensor(index, device=array.device))


def zero_absent(image: Any, subset: Subset | str | Sequence[str]) -> Any:
    """Return ``image`` with the channels of absent modalities set to zero.

    This is the one place where missingness is applied; every training step and every evaluation
    goes through it. It never modifies its input.

    Args:
        image: tensor or array N×4×D×H×W (or 4×D×H×W), canonical channel order, normalised.
        subset: the available modalities.
    """
    s = as_subset(subset)
    axis = 1 if image.ndim == 5 else 0
    if image.shape[axis] != len(MODALITIES):
        raise ValueError(f"expected {len(MODALITIES)} channels on axis {axis}, got {image.shape}")
    shape = [1] * image.ndim
    shape[axis] = len(MODALITIES)
    # `where`, not a product: 0 * inf is NaN, and an absent channel must not leak in any form.
    if isinstance(image, np.ndarray):
        keep = np.asarray(s.mask).reshape(shape)
        return np.where(keep, image, np.zeros((), dtype=image.dtype))
    import torch

    keep = torch.tensor(s.mask, device=image.device).reshape(shape)
    return torch.where(keep, image, torch.zeros((), dtype=image.dtype, device=image.device))


__all__ = [
    "ALL_SUBSETS",
    "FULL",
    "MODALITIES",
    "MODALITY_ALIASES",
    "PEER_CHANNEL_ORDERS",
    "SUBSET_NAMES",
    "Subset",
    "as_subset",
    "canonical_modality",
    "reorder_channels",
    "subset_order_key",
    "zero_absent",
]
