"""Tumour regions and label conventions: the one place that turns label maps into region masks
and region masks back into label maps.

Evaluation uses the three nested regions of the BraTS challenges, in this channel order
everywhere (targets, predictions, tables): whole tumour ``WT`` ⊇ tumour core ``TC`` ⊇ enhancing
tumour ``ET``. Training may also use the three disjoint compartments ``NETC`` (necrosis /
non-enhancing core), ``ED`` (oedema) and ``ET``. Which label values make up a region is a
property of the dataset (:attr:`mmbench.datasets.DatasetSpec.regions`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

REGIONS: tuple[str, ...] = ("WT", "TC", "ET")
"""The nested evaluation regions, in channel order of targets and predictions."""

COMPARTMENTS: tuple[str, ...] = ("NETC", "ED", "ET")
"""The disjoint tumour compartments, in channel order of ``batch["compartments"]``."""

OUTPUT_LABELS: dict[str, int] = {"NETC": 1, "ED": 2, "ET": 3}
"""Label values of the maps mmbench writes (BraTS 2021–2024 convention; 0 is background)."""

LABEL_CONVENTIONS: dict[str, dict[str, tuple[int, ...]]] = {
    "brats2024": {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)},
    "brats2018": {"WT": (1, 2, 4), "TC": (1, 4), "ET": (4,)},
}
"""Region → label values of the two label conventions of the BraTS challenges: 2021–2024 (and
every map mmbench writes, :data:`OUTPUT_LABELS`) and 2015–2020 (ET labelled 4)."""


def region_masks(
    label: np.ndarray, regions: Mapping[str, Sequence[int]], names: Sequence[str] = REGIONS
) -> dict[str, np.ndarray]:
    """Boolean masks ``{region: D×H×W}`` of a label map, region ``r`` = ``label ∈ regions[r]``."""
    return {r: np.isin(label, np.asarray(regions[r])) for r in names}


def region_channels(label: Any, regions: Sequence[Sequence[int]]) -> Any:
    """Float32 masks C×D×H×W, channel ``i`` = voxels whose label is in ``regions[i]``.

    ``label`` is a D×H×W numpy array or torch tensor; the result is of the same kind.
    """
    if isinstance(label, np.ndarray):
        return np.stack([np.isin(label, list(r)) for r in regions]).astype(np.float32)
    import torch

    return torch.stack(
        [torch.isin(label, torch.as_tensor(list(r), dtype=label.dtype)) for r in regions]
    ).float()


def label_from_regions(wt: Any, tc: Any, et: Any) -> np.ndarray:
    """A uint8 label map in :data:`OUTPUT_LABELS` (1 NETC, 2 ED, 3 ET) from nested region masks.

    TC voxels outside ET become NETC, WT voxels outside TC become ED; a voxel in ET but not in
    WT or TC (a non-nested prediction) is written as ET.
    """
    label = np.zeros(np.shape(wt), dtype=np.uint8)
    label[np.asarray(wt, bool)] = OUTPUT_LABELS["ED"]
    label[np.asarray(tc, bool)] = OUTPUT_LABELS["NETC"]
    label[np.asarray(et, bool)] = OUTPUT_LABELS["ET"]
    return label
