"""A preprocessed on-disk cache of training cases that a step reads one crop of.

``dataset.cache: mmap`` keeps each training case as memory-mapped ``.npy`` files, written once
(in parallel, with a progress bar) by :func:`build_array_cache`::

    <cache_dir>/arrays-<key>/settings.json        the preprocessing settings the key hashes
    <cache_dir>/arrays-<key>/<case>/image.npy      float16 4×D×H×W (T1, T1ce, T2, FLAIR), RAS,
                                                   brain-cropped, normalised
    <cache_dir>/arrays-<key>/<case>/targets.npy    uint8 D×H×W: bits 0-2 WT, TC, ET (regions),
                                                   bits 3-5 NETC, ED, ET (compartments)
    <cache_dir>/arrays-<key>/<case>/foreground.npy int16/int32 N×3: the WT voxels in C order
    <cache_dir>/arrays-<key>/<case>/meta.json      shape, native grid, brain box, source files

The key hashes the preprocessing settings (format version, dataset, normalisation, crop margin),
so other settings never read stale arrays; a case whose source files changed (path, size,
modification time) is written again. A training step opens the arrays memory-mapped and copies
only its crop (:func:`read_crop`), so memory does not grow with the number of cases.

Precision: images are stored as float16 (relative rounding error ≤ 2⁻¹¹ ≈ 4.9e-4 of the value;
for z-scored or min-max intensities below 16 that is an absolute error ≤ 0.008). Targets are exact.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmbench.atomic import atomic_write_text

ARRAY_CACHE_VERSION = 1
REGION_BITS: tuple[int, int, int] = (0, 1, 2)
"""Bits of ``targets.npy`` holding WT, TC, ET."""
COMPARTMENT_BITS: tuple[int, int, int] = (3, 4, 5)
"""Bits of ``targets.npy`` holding NETC, ED, ET."""
META_KEYS: tuple[str, ...] = (
    "native_affine",
    "native_shape",
    "native_spacing",
    "foreground_start_coord",
    "foreground_end_coord",
)


def encode_targets(regions: np.ndarray, compartments: np.ndarray) -> np.ndarray:
    """Pack 3×D×H×W region and 3×D×H×W compartment masks into one uint8 D×H×W bit field."""
    out = np.zeros(regions.shape[1:], dtype=np.uint8)
    for channel, bit in zip(np.asarray(regions) > 0.5, REGION_BITS):
        out |= channel.astype(np.uint8) << bit
    for channel, bit in zip(np.asarray(compartments) > 0.5, COMPARTMENT_BITS):
        out |= channel.astype(np.uint8) << bit
    return out


def decode_targets(bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (…)×D×H×W bit field → (regions, compartments), uint8 0/1, channel axis before the
    three spatial axes (3×D×H×W for one case)."""
    bits = np.asarray(bits)
    lead = bits.ndim - 3
    regions = np.stack([(bits >> b) & 1 for b in REGION_BITS], axis=lead)
    compartments = np.stack([(bits >> b) & 1 for b in COMPARTMENT_BITS], axis=lead)
    return regions, compartments


def source_fingerprint(item: Mapping[str, Any]) -> list[list[Any]]:
    """(path, size, mtime ns) of the files of an item ``{"image": [4 paths], "label": path}``."""
    paths = [*item["image"], item["label"]]
    out = []
    for p in paths:
        st = os.stat(p)
        out.append([str(p), int(st.st_size), int(st.st_mtime_ns)])
    return out


def settings_key(settings: Mapping[str, Any]) -> str:
    """Folder name of the arrays written with ``settings`` (a hash of their JSON)."""
    text = json.dumps({"version": ARRAY_CACHE_VERSION, **settings}, sort_keys=True)
    return "arrays-" + hashlib.sha1(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class CaseArrays:
    """One cached case: its folder and the small facts needed to draw a crop.

    Nothing here holds voxel data; :meth:`image`, :meth:`targets` and :meth:`foreground` open
    memory maps that the caller drops after copying what it needs.
    """

    id: str
    folder: Path
    shape: tuple[int, int, int]

    def image(self) -> np.ndarray:
        return np.load(self.folder / "image.npy", mmap_mode="r")

    def targets(self) -> np.ndarray:
        return np.load(self.folder / "targets.npy", mmap_mode="r")

    def foreground(self) -> np.ndarray:
        return np.load(self.folder / "foreground.npy", mmap_mode="r")

    def meta(self) -> dict[str, Any]:
        return json.loads((self.folder / "meta.json").read_text())


class ArrayCache(Sequence):
    """The training cases of a split, cached as memory-mapped arrays (see the module docstring).

    ``cache[i]`` is the whole preprocessed item in the form of the other caches (float32
    ``image``, ``regions`` and ``compartments``, the native-grid keys) for code that wants a full
    volume; the training path reads crops through :meth:`case` and :func:`read_crop`.
    """

    def __init__(self, cases: Sequence[CaseArrays]) -> None:
        self.cases = list(cases)

    def __len__(self) -> int:
        return len(self.cases)

    def case(self, index: int) -> CaseArrays:
        return self.cases[index]

    def __getitem__(self, index: int) -> dict[str, Any]:  # type: ignore[override]
        case = self.cases[index]
        regions, compartments = decode_targets(case.targets())
        item: dict[str, Any] = {
            "id": case.id,
            "image": torch.from_numpy(np.asarray(case.image(), dtype=np.float32)),
            "regions": torch.from_numpy(regions.astype(np.float32)),
            "compartments": torch.from_numpy(compartments.astype(np.float32)),
        }
        meta = case.meta()
        for key in META_KEYS:
            item[key] = torch.as_tensor(np.asarray(meta[key]))
        return item


def read_crop(
    case: CaseArrays,
    start: Sequence[int],
    size: Sequence[int],
    pad_before: Sequence[int] = (0, 0, 0),
    flips: Sequence[bool] = (False, False, False),
    out: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Copy one crop of a cached case, zero-padded and flipped, reading only its voxels.

    Args:
        start: first voxel of the crop on the padded grid (the volume with ``pad_before`` zeros
            before each axis and enough after it to hold the crop).
        size: crop (D, H, W).
        flips: reverse the crop along each spatial axis.
        out: arrays to write into (image 4×D×H×W, targets D×H×W), e.g. a slot of a batch in
            shared memory; by default new ones.

    Returns:
        image (float16 unless ``out`` says otherwise) 4×D×H×W and targets uint8 D×H×W (the bit
        field).
    """
    size = tuple(int(v) for v in size)
    src, dst = [], []
    for a in range(3):
        lo = int(start[a]) - int(pad_before[a])
        s0, s1 = max(lo, 0), min(lo + size[a], case.shape[a])
        d0, d1 = s0 - lo, s0 - lo + max(0, s1 - s0)
        if flips[a]:
            d0, d1 = size[a] - d1, size[a] - d0
            src.append(slice(s1 - 1, s0 - 1 if s0 > 0 else None, -1))
        else:
            src.append(slice(s0, s1))
        dst.append(slice(d0, d1))
    if out is None:
        out = (np.empty((4, *size), dtype=np.float16), np.empty(size, dtype=np.uint8))
    image, targets = out
    if not all(d.stop > d.start for d in dst):  # the crop misses the volume
        image[...] = 0
        targets[...] = 0
        return image, targets
    for a, (d, n) in enumerate(zip(dst, size)):  # zero only the padding around the copy
        for margin in (slice(0, d.start), slice(d.stop, n)):
            if margin.stop > margin.start:
                index = [slice(None)] * 3
                index[a] = margin
                image[(slice(None), *index)] = 0
                targets[tuple(index)] = 0
    image[(slice(None), *dst)] = case.image()[(slice(None), *src)]
    targets[tuple(dst)] = case.targets()[tuple(src)]
    return image, targets


def decode_targets_tensor(bits: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{"regions", "compartments"}`` (float32 N×3×D×H×W) from a uint8 N×D×H×W bit field, on
    the bit field's device: the training loop decodes compact batches where they will be used."""
    shifts = torch.tensor(REGION_BITS + COMPARTMENT_BITS, dtype=torch.uint8, device=bits.device)
    planes = (bits.unsqueeze(1) >> shifts.view(1, 6, 1, 1, 1)) & 1
    return {"regions": planes[:, :3].float(), "compartments": planes[:, 3:].float()}


def decode_targets_into(bits: np.ndarray, regions: np.ndarray, compartments: np.ndarray) -> None:
    """:func:`decode_targets` written into ``regions`` and ``compartments`` (uint8 3×D×H×W
    each); two vectorised passes per channel, no temporaries."""
    for out, channels in ((regions, REGION_BITS), (compartments, COMPARTMENT_BITS)):
        for c, bit in enumerate(channels):
            np.right_shift(bits, bit, out=out[c])
            np.bitwise_and(out[c], 1, out=out[c])


# ----------------------------------------------------------------------------------- writing
def _write_case(
    item: Mapping[str, Any], dataset: str, normalization: str, margin: int, folder: Path
) -> str:
    """Preprocess one case and write its arrays atomically (temporary folder, then rename)."""
    from mmbench.datasets.transforms import build_preprocess

    pre = build_preprocess(dataset, normalization=normalization, margin=margin)
    out = pre({k: item[k] for k in ("image", "label")})
    image = np.asarray(out["image"], dtype=np.float32)
    regions = np.asarray(out["regions"])
    targets = encode_targets(regions, np.asarray(out["compartments"]))
    fg = np.argwhere(regions[0] > 0.5)
    fg = fg.astype(np.int16 if max(image.shape[1:]) < 2**15 else np.int32)
    meta: dict[str, Any] = {
        "id": item["id"],
        "shape": list(image.shape[1:]),
        "source": source_fingerprint(item),
    }
    for key in META_KEYS:
        meta[key] = np.asarray(out[key]).tolist()
    final = folder / str(item["id"])
    tmp = folder / f".tmp-{item['id']}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        np.save(tmp / "image.npy", image.astype(np.float16))
        np.save(tmp / "targets.npy", targets)
        np.save(tmp / "foreground.npy", fg)
        atomic_write_text(tmp / "meta.json", json.dumps(meta))
        if final.exists():
            shutil.rmtree(final)
        try:
            os.rename(tmp, final)
        except OSError:  # another process wrote the same case first
            if not (final / "meta.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(item["id"])


def _ready(folder: Path, item: Mapping[str, Any]) -> dict[str, Any] | None:
    path = folder / str(item["id"]) / "meta.json"
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return meta if meta.get("source") == source_fingerprint(item) else None


def build_array_cache(
    items: Sequence[Mapping[str, Any]],
    dataset: str,
    cache_dir: str | Path,
    normalization: str = "zscore",
    margin: int | None = None,
    num_workers: int = 1,
    progress: bool = True,
) -> ArrayCache:
    """Write the arrays of every case not cached yet (``num_workers`` processes, a progress bar)
    and return the cache of ``items`` in their order.

    Args:
        items: ``{"id", "image": [4 paths], "label": path}`` (:meth:`Case.as_item`).
        dataset: registry name (its label values define the targets).
        cache_dir: parent folder; the arrays go to ``cache_dir/arrays-<key>/``.
        normalization, margin: the preprocessing settings (:func:`build_preprocess`).
    """
    from joblib import Parallel, delayed
    from tqdm.auto import tqdm

    from mmbench.datasets.transforms import CROP_MARGIN

    margin = CROP_MARGIN if margin is None else int(margin)
    settings = {"dataset": dataset, "normalization": normalization, "margin": margin}
    folder = Path(cache_dir) / settings_key(settings)
    folder.mkdir(parents=True, exist_ok=True)
    settings_file = folder / "settings.json"
    if not settings_file.exists():
        atomic_write_text(settings_file, json.dumps({"version": ARRAY_CACHE_VERSION, **settings}))
    items = list(items)
    todo = [it for it in items if _ready(folder, it) is None]
    if todo:
        jobs = (delayed(_write_case)(it, dataset, normalization, margin, folder) for it in todo)
        n_jobs = max(1, min(int(num_workers), len(todo)))
        results = Parallel(n_jobs=n_jobs, backend="loky", return_as="generator_unordered")(jobs)
        desc = f"caching {dataset} arrays"
        for _ in tqdm(results, total=len(todo), desc=desc, disable=not progress, unit="case"):
            pass
    cases = []
    for it in items:
        meta = _ready(folder, it)
        if meta is None:
            raise RuntimeError(f"the array cache of case {it['id']} in {folder} was not written")
        cases.append(CaseArrays(str(it["id"]), folder / str(it["id"]), tuple(meta["shape"])))
    return ArrayCache(cases)


__all__ = [
    "ARRAY_CACHE_VERSION",
    "ArrayCache",
    "CaseArrays",
    "build_array_cache",
    "decode_targets",
    "decode_targets_into",
    "decode_targets_tensor",
    "encode_targets",
    "read_crop",
    "settings_key",
]
