"""The embedded default (``synthetic``): generated phantoms read back like BraTS 2024.

The generator (:mod:`mmbench.datasets.synthetic_cache`) writes the BraTS 2024 layout with the
``BraTS-SYN-`` prefix and labels 0..3 (4 = resection cavity in post-treatment mode); this entry
reads that folder through the very same discovery, validation and transforms as real data.
"""

from __future__ import annotations

from mmbench.datasets.base import DatasetSpec
from mmbench.datasets.brats2024 import BRATS2024_SUFFIXES

SPEC = DatasetSpec(
    name="synthetic",
    description="Generated phantoms (MNI152 anatomy, painted tumours), BraTS 2024 layout",
    modality_suffixes=dict(BRATS2024_SUFFIXES),
    label_suffix="seg",
    label_values=(0, 1, 2, 3, 4),
    regions={"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,), "RC": (4,)},
    extra_regions=("RC",),
    compartments={"NETC": 1, "ED": 2, "ET": 3},
    group_key="case",
    stratify_key=None,
    case_pattern=r"BraTS-SYN-[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*",
    separator="-",
)
