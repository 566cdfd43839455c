"""MONAI dictionary transforms of the data path, and the way back to the native grid.

Data dicts start as ``{"id": str, "image": [4 paths in canonical order], "label": path}``
(:meth:`mmbench.datasets.base.Case.as_item`). After :func:`build_preprocess` they hold

* ``image``: float32 4×D×H×W, RAS, cropped to the brain, normalised per modality;
* ``label``: float32 1×D×H×W on the same grid, the dataset's raw label values;
* ``regions``: float32 3×D×H×W, nested WT, TC, ET;
* ``compartments``: float32 3×D×H×W, disjoint NETC, ED, ET (RC and anything else: background);
* ``native_affine`` (4×4), ``native_shape`` (3,), ``native_spacing`` (3,): the label file's grid;
* ``foreground_start_coord``/``foreground_end_coord`` (3,): the brain box on the RAS grid.

:func:`restore_to_native` maps a prediction on the preprocessed grid back to the label file's grid
exactly (crop undone by zero padding, then the orientation undone).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.data import CacheDataset, Dataset, PersistentDataset
from monai.data.utils import pickle_hashing
from monai.transforms import (
    Compose,
    CropForegroundd,
    EnsureChannelFirstd,
    LoadImaged,
    MapTransform,
    NormalizeIntensityd,
    Orientationd,
    RandFlipd,
    Randomizable,
    RandScaleIntensityd,
    RandShiftIntensityd,
    SpatialCrop,
    SpatialPadd,
)

from mmbench.datasets.base import COMPARTMENTS, REGIONS, DatasetSpec
from mmbench.datasets.registry import get_dataset
from mmbench.errors import ConfigError
from mmbench.regions import region_channels as regions_from_label

NORMALIZATIONS: tuple[str, ...] = ("zscore", "minmax")
TARGET_AXCODES = "RAS"
RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))
CROP_MARGIN = 2
"""Voxels kept around the brain bounding box."""
TRAIN_KEYS: tuple[str, ...] = ("image", "label", "regions", "compartments")
"""Keys that random crops and flips move together."""


def nonzero(x: torch.Tensor) -> torch.Tensor:
    """Brain mask of one modality (skull-stripped data: brain = nonzero)."""
    return x != 0


class RecordNatived(MapTransform):
    """Store the label file's grid (``native_affine``, ``native_shape``, ``native_spacing``).

    Must run right after loading, before any spatial transform; spacing comes from the header's
    ``pixdim`` (what distance metrics need), affine and shape from the loaded label.
    """

    def __init__(self, key: str = "label") -> None:
        super().__init__(keys=[key])
        self.key = key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        label = d[self.key]
        meta = getattr(label, "meta", {})
        # The affine Orientationd will read, i.e. the file's affine as nibabel sees it.
        affine = np.asarray(label.affine, dtype=np.float64)
        pixdim = meta.get("pixdim")
        if pixdim is not None:
            spacing = np.abs(np.asarray(pixdim, dtype=np.float64)[1:4])
        else:
            spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
        d["native_affine"] = torch.as_tensor(affine)
        d["native_shape"] = torch.as_tensor(label.shape[-3:], dtype=torch.int64)
        d["native_spacing"] = torch.as_tensor(spacing)
        return d


class AsTensorsd(MapTransform):
    """Turn numpy bookkeeping values (e.g. MONAI's crop coordinates) into torch tensors.

    Disk caches load with ``weights_only=True``, which refuses numpy arrays.
    """

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = torch.as_tensor(np.asarray(d[key], dtype=np.int64))
        return d


class MinMaxBraind(MapTransform):
    """Min–max to [0, 1] per channel over that channel's nonzero (brain) voxels; zeros stay 0."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key].float().clone()
            for c in range(img.shape[0]):
                channel = img[c]
                mask = channel != 0
                if not mask.any():
                    continue
                lo, hi = channel[mask].min(), channel[mask].max()
                scale = hi - lo
                channel[mask] = (channel[mask] - lo) / scale if scale > 0 else 0.0
            d[key] = img
        return d


class LabelToTargetsd(MapTransform):
    """Build ``regions`` (WT, TC, ET) and ``compartments`` (NETC, ED, ET) from a label map.

    Input: label 1×D×H×W with the dataset's values. Output: two float32 3×D×H×W tensors on the
    same grid (MetaTensors keep the label's affine).
    """

    def __init__(self, spec: DatasetSpec, label_key: str = "label") -> None:
        super().__init__(keys=[label_key])
        self.label_key = label_key
        self.regions = [tuple(spec.regions[r]) for r in REGIONS]
        self.compartments = [spec.compartments[c] for c in COMPARTMENTS]

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        label = d[self.label_key]
        lab = label[0] if label.ndim == 4 else label
        d["regions"] = regions_from_label(lab, self.regions)
        d["compartments"] = torch.stack([lab == v for v in self.compartments]).float()
        return d


def build_preprocess(
    spec: DatasetSpec | str, normalization: str = "zscore", margin: int = CROP_MARGIN
) -> Compose:
    """Deterministic (cacheable) loading pipeline: load, stack, orient, crop, normalise, targets.

    Args:
        spec: the dataset (its label values define the targets).
        normalization: ``"zscore"`` (mean 0, std 1 over each modality's brain voxels) or
            ``"minmax"`` ([0, 1] over brain voxels, as AdaMM).
        margin: voxels kept around the brain bounding box (union of nonzero voxels over the four
            modalities).
    """
    spec = get_dataset(spec)
    if normalization == "zscore":
        normalise = NormalizeIntensityd(keys="image", nonzero=True, channel_wise=True)
    elif normalization == "minmax":
        normalise = MinMaxBraind(keys="image")
    else:
        raise ValueError(f"unknown normalization {normalization!r}; valid: {NORMALIZATIONS}")
    return Compose(
        [
            # MetaTensors keep affine and header meta; a list of 4 paths is stacked on dim 0.
            LoadImaged(keys=["image", "label"], reader="NibabelReader", image_only=True),
            EnsureChannelFirstd(keys=["image", "label"]),
            RecordNatived(key="label"),
            Orientationd(keys=["image", "label"], axcodes=TARGET_AXCODES, labels=RAS_LABELS),
            CropForegroundd(
                keys=["image", "label"],
                source_key="image",
                select_fn=nonzero,
                margin=margin,
                allow_smaller=True,
            ),
            AsTensorsd(keys=["foreground_start_coord", "foreground_end_coord"]),
            normalise,
            LabelToTargetsd(spec),
        ]
    )


class RandTumourCropd(Randomizable, MapTransform):
    """Crop ``keys`` to ``spatial_size`` around a tumour voxel with probability ``pos_ratio``, else
    around a uniformly drawn voxel; the box is shifted to lie inside the volume.

    MONAI's :class:`RandCropByPosNegLabeld` does the same but lists every foreground and
    background voxel on each call (about 0.5 s for a BraTS-sized brain on one CPU core) and
    returns a list; this one looks up the foreground only and returns a dict. Volumes must already
    be at least ``spatial_size`` (pad first).

    Args:
        label_key: C×D×H×W mask; a voxel is tumour if channel 0 is nonzero (WT for ``regions``).
    """

    def __init__(
        self,
        keys: Sequence[str],
        label_key: str,
        spatial_size: Sequence[int],
        pos_ratio: float = 0.5,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.label_key = label_key
        self.spatial_size = tuple(int(s) for s in spatial_size)
        self.pos_ratio = pos_ratio

    def _start(self, label: torch.Tensor) -> np.ndarray:
        return self.draw_start(
            label.shape[1:], lambda: torch.nonzero(torch.as_tensor(label)[0]).cpu().numpy()
        )

    def draw_start(
        self,
        shape: Sequence[int],
        foreground: Callable[[], Any],
        offset: Sequence[int] | None = None,
    ) -> np.ndarray:
        """The crop's first voxel in a volume of ``shape``, drawn with this transform's state.

        ``foreground()`` gives the tumour voxels as an N×3 array-like in C order (what
        ``torch.nonzero`` returns), called only when a tumour-centred crop is drawn; ``offset``
        is added to the chosen voxel (the padding before a volume stored unpadded). Both data
        paths (:mod:`mmbench.datasets.sampling`, :mod:`mmbench.datasets.arrays`) draw through
        here, so they consume the random state identically.
        """
        shape = np.asarray(shape)
        size = np.asarray(self.spatial_size)
        if np.any(shape < size):
            raise ConfigError(
                f"a case of shape {tuple(shape)} is smaller than the crop {tuple(size)}: "
                "lower model.patch_size"
            )
        centre = None
        if self.R.rand() < self.pos_ratio:
            fg = foreground()
            if len(fg):
                centre = np.asarray(fg[self.R.randint(len(fg))], dtype=np.int64)
                if offset is not None:
                    centre = centre + np.asarray(offset)
        if centre is None:
            centre = np.array([self.R.randint(s) for s in shape])
        return np.clip(centre - size // 2, 0, shape - size)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        start = self._start(d[self.label_key])
        crop = SpatialCrop(roi_start=start, roi_end=start + np.asarray(self.spatial_size))
        for key in self.key_iterator(d):
            d[key] = crop(d[key])
        return d


def build_train_augment(
    patch_size: Sequence[int],
    intensity_jitter: bool = False,
    keys: Sequence[str] = TRAIN_KEYS,
) -> Compose:
    """Random training augmentation on preprocessed dicts.

    A ``patch_size`` crop (volumes smaller than the patch are zero-padded first), centred on a
    tumour (WT) voxel or on any voxel with equal probability; flips on each axis with p = 0.5;
    optionally a per-channel intensity scale (±10 %) and shift (±0.1) of the image. ``keys`` move
    together; other keys are left alone.
    """
    keys = [k for k in keys]
    patch = tuple(int(p) for p in patch_size)
    transforms: list = [
        SpatialPadd(keys=keys, spatial_size=patch, allow_missing_keys=True),
        RandTumourCropd(
            keys=keys,
            label_key="regions",
            spatial_size=patch,
            pos_ratio=0.5,
            allow_missing_keys=True,
        ),
        *(
            RandFlipd(keys=keys, prob=0.5, spatial_axis=a, allow_missing_keys=True)
            for a in range(3)
        ),
    ]
    if intensity_jitter:
        transforms += [
            RandScaleIntensityd(keys="image", factors=0.1, prob=1.0, channel_wise=True),
            RandShiftIntensityd(keys="image", offsets=0.1, prob=1.0, channel_wise=True),
        ]
    return Compose(transforms)


def _as_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _one(x: Any, ndim: int) -> np.ndarray:
    # Accept values collated into a batch of one.
    arr = _as_numpy(x)
    while arr.ndim > ndim and arr.shape[0] == 1:
        arr = arr[0]
    return arr


def native_affine(data: Mapping[Hashable, Any]) -> np.ndarray:
    """4×4 affine of the label file of a preprocessed item."""
    return _one(data["native_affine"], 2).astype(np.float64)


def native_spacing(data: Mapping[Hashable, Any]) -> tuple[float, float, float]:
    """Voxel size (mm) of the label file of a preprocessed item, from its header."""
    return tuple(float(s) for s in _one(data["native_spacing"], 1))  # type: ignore[return-value]


def native_shape(data: Mapping[Hashable, Any]) -> tuple[int, int, int]:
    """Spatial shape of the label file of a preprocessed item."""
    return tuple(int(s) for s in _one(data["native_shape"], 1))  # type: ignore[return-value]


def restore_to_native(pred: Any, data: Mapping[Hashable, Any]) -> np.ndarray:
    """Map a prediction on the preprocessed grid of ``data`` to the label file's grid.

    Args:
        pred: array or tensor C×d×h×w on the grid of ``data["image"]`` (RAS, brain-cropped).
        data: the item after :func:`build_preprocess` (a batch of one is accepted).

    Returns:
        numpy C×D×H×W on the native grid: outside the brain box is 0; same dtype as ``pred``.
    """
    pred = _as_numpy(pred)
    if pred.ndim != 4:
        raise ValueError(f"pred must be C×d×h×w, got shape {pred.shape}")
    affine = native_affine(data)
    shape = native_shape(data)
    start = _one(data["foreground_start_coord"], 1).astype(int)
    end = _one(data["foreground_end_coord"], 1).astype(int)
    if tuple(end - start) != pred.shape[1:]:
        raise ValueError(f"pred grid {pred.shape[1:]} is not the cropped grid {tuple(end - start)}")

    # The orientation MONAI applied: nibabel's closest-axes transform from the file to RAS.
    to_ras = nib.orientations.ornt_transform(
        nib.orientations.io_orientation(affine), nib.orientations.axcodes2ornt(TARGET_AXCODES)
    )
    ras_shape = nib.orientations.apply_orientation(np.empty(shape, dtype=bool), to_ras).shape
    full = np.zeros((pred.shape[0], *ras_shape), dtype=pred.dtype)
    full[:, start[0] : end[0], start[1] : end[1], start[2] : end[2]] = pred
    back = nib.orientations.ornt_transform(
        nib.orientations.axcodes2ornt(TARGET_AXCODES), nib.orientations.io_orientation(affine)
    )
    native = nib.orientations.apply_orientation(np.moveaxis(full, 0, -1), back)
    return np.ascontiguousarray(np.moveaxis(native, -1, 0))


def make_cached_dataset(
    items: Sequence[Mapping[str, Any]],
    transform: Compose | Sequence,
    cache: str = "memory",
    cache_dir: str | Path | None = None,
    num_workers: int = 0,
) -> Dataset:
    """A MONAI dataset that decodes each NIfTI once per run.

    ``cache="memory"``: :class:`CacheDataset` (the deterministic prefix of ``transform`` is cached
    in RAM); ``"disk"``: :class:`PersistentDataset` under ``cache_dir`` (the transform's pickle
    is hashed into the cache key, so changing the pipeline does not reuse stale files);
    ``"none"``: a plain :class:`Dataset`. ``transform`` may nest Composes (it is flattened so the
    cache reaches the first random transform).
    """
    flat = (transform if isinstance(transform, Compose) else Compose(list(transform))).flatten()
    items = list(items)
    if cache == "memory":
        return CacheDataset(
            items, flat, cache_rate=1.0, num_workers=max(1, num_workers), progress=False
        )
    if cache == "disk":
        if cache_dir is None:
            raise ValueError('cache="disk" needs a cache_dir')
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        return PersistentDataset(items, flat, cache_dir=cache_dir, hash_transform=pickle_hashing)
    if cache == "none":
        return Dataset(items, flat)
    raise ValueError(f"unknown cache {cache!r}; valid: memory, disk, none")
