"""MONAI preprocessing, targets, augmentation, caching and exact restoration to the native grid."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

import mmbench.datasets as ds
from mmbench import subsets
from mmbench.datasets import get_dataset, load_dataset
from mmbench.datasets.transforms import (
    LabelToTargetsd,
    build_preprocess,
    build_train_augment,
    make_cached_dataset,
    native_affine,
    native_shape,
    native_spacing,
    regions_from_label,
    restore_to_native,
)

SHAPE = (12, 11, 10)
BRAIN = (slice(3, 10), slice(2, 9), slice(2, 8))  # 7×7×6 box inside the volume


def write_case(
    root: Path, dataset: str, case_id: str, label: np.ndarray, affine: np.ndarray, seed: int = 0
) -> dict:
    """Write one case (brain = BRAIN box, random positive intensities); return its data dict."""
    spec = get_dataset(dataset)
    folder = root / case_id
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for k, suffix in enumerate(spec.modality_suffixes.values()):
        img = np.zeros(SHAPE, np.float32)
        img[BRAIN] = rng.uniform(10 + 50 * k, 100 + 80 * k, img[BRAIN].shape)
        nib.save(nib.Nifti1Image(img, affine), folder / f"{case_id}{spec.separator}{suffix}.nii.gz")
    nib.save(
        nib.Nifti1Image(label.astype(np.uint8), affine),
        folder / f"{case_id}{spec.separator}{spec.label_suffix}.nii.gz",
    )
    (case,) = [c for c in load_dataset(dataset, root, strict=True).cases if c.id == case_id]
    return case.as_item()


def tumour_label(values: dict[str, int]) -> np.ndarray:
    """Asymmetric label (so flips and permutations would show) with the given compartment values."""
    label = np.zeros(SHAPE, np.uint8)
    label[4:8, 3:6, 3:5] = values["ED"]
    label[5:7, 4:5, 3:4] = values["NETC"]
    label[6, 4, 4] = values["ET"]
    label[7, 5, 4] = values["ET"]
    if "RC" in values:
        label[8, 7, 6] = values["RC"]
    return label


def test_preprocess_shapes_dtypes_and_zscore(tmp_path):
    item = write_case(
        tmp_path,
        "brats2024",
        "BraTS-GLI-00001-000",
        tumour_label({"NETC": 1, "ED": 2, "ET": 3, "RC": 4}),
        np.eye(4),
    )
    data = build_preprocess("brats2024")(item)
    # Brain box 7×7×6 plus a 2-voxel margin, clipped to the volume.
    crop = (11, 11, 10)
    assert tuple(data["image"].shape) == (4, *crop) and data["image"].dtype == torch.float32
    assert tuple(data["label"].shape) == (1, *crop)
    for key in ("regions", "compartments"):
        assert tuple(data[key].shape) == (3, *crop) and data[key].dtype == torch.float32
    image = data["image"].numpy()
    for c in range(4):
        brain = image[c][image[c] != 0]
        assert brain.size == 7 * 7 * 6
        assert abs(brain.mean()) < 1e-5 and abs(brain.std() - 1) < 0.01
    assert np.count_nonzero(image[0]) == 7 * 7 * 6  # background stays zero
    assert native_shape(data) == SHAPE and native_spacing(data) == (1.0, 1.0, 1.0)
    assert np.allclose(native_affine(data), np.eye(4))


def test_minmax_normalisation(tmp_path):
    item = write_case(
        tmp_path,
        "pretreat-mets",
        "BraTS-MET-00001-000",
        tumour_label({"NETC": 1, "ED": 2, "ET": 3}),
        np.eye(4),
    )
    image = build_preprocess("pretreat-mets", normalization="minmax")(item)["image"].numpy()
    for c in range(4):
        brain = image[c][image[c] != 0]
        assert brain.min() >= 0 and np.isclose(brain.max(), 1.0)
    with pytest.raises(ValueError, match="zscore"):
        build_preprocess("pretreat-mets", normalization="percentile")


@pytest.mark.parametrize(
    "dataset, values, et_value",
    [
        ("brats2018", {"NETC": 1, "ED": 2, "ET": 4}, 4),
        ("brats2024", {"NETC": 1, "ED": 2, "ET": 3, "RC": 4}, 3),
        ("pretreat-mets", {"NETC": 1, "ED": 2, "ET": 3}, 3),
        ("synthetic", {"NETC": 1, "ED": 2, "ET": 3, "RC": 4}, 3),
    ],
)
def test_label_to_regions_and_compartments(dataset, values, et_value):
    label = torch.as_tensor(tumour_label(values)[None].astype(np.float32))
    out = LabelToTargetsd(get_dataset(dataset))({"label": label})
    lab = label[0]
    wt, tc, et = out["regions"]
    netc, ed, et_c = out["compartments"]
    assert torch.equal(et.bool(), lab == et_value) and et.sum() == 2
    assert torch.equal(tc.bool(), (lab == 1) | (lab == et_value))
    assert torch.equal(wt.bool(), (lab == 1) | (lab == 2) | (lab == et_value))
    assert torch.equal(netc.bool(), lab == 1) and torch.equal(ed.bool(), lab == 2)
    assert torch.equal(et_c, et)
    assert out["compartments"].sum(0).max() == 1  # disjoint
    assert torch.equal(out["compartments"].sum(0).bool(), wt.bool())
    if "RC" in values:
        rc = lab == 4
        assert rc.sum() == 1
        # The cavity is outside every region and compartment.
        assert out["regions"][:, rc].sum() == 0 and out["compartments"][:, rc].sum() == 0


def non_ras_affines() -> list[np.ndarray]:
    lps = np.diag([-1.0, -1.0, 1.0, 1.0])
    lps[:3, 3] = [30.0, 20.0, -10.0]
    # Permuted axes with flips and anisotropic spacing: voxel axes (j, i, k) → (x, -y, -z).
    permuted = np.array(
        [[0.0, 1.5, 0.0, -4.0], [-1.0, 0.0, 0.0, 7.0], [0.0, 0.0, -2.0, 3.0], [0, 0, 0, 1]]
    )
    return [lps, permuted]


@pytest.mark.parametrize("affine", non_ras_affines(), ids=["LPS", "permuted"])
def test_restore_to_native_is_exact(tmp_path, affine):
    assert nib.aff2axcodes(affine) != ("R", "A", "S")
    values = {"NETC": 1, "ED": 2, "ET": 3, "RC": 4}
    label = tumour_label(values)
    item = write_case(tmp_path, "brats2024", "BraTS-GLI-00003-000", label, affine)
    data = build_preprocess("brats2024")(item)
    assert nib.aff2axcodes(data["image"].affine.numpy()) == ("R", "A", "S")

    restored = restore_to_native(data["regions"], data)
    spec = get_dataset("brats2024")
    on_disk = np.asanyarray(nib.load(item["label"]).dataobj)
    direct = regions_from_label(on_disk, [spec.regions[r] for r in ("WT", "TC", "ET")])
    assert restored.shape == (3, *SHAPE) and restored.dtype == np.float32
    np.testing.assert_array_equal(restored, direct)
    # The raw label round-trips too, and so does a tensor input.
    np.testing.assert_array_equal(restore_to_native(data["label"], data)[0], on_disk)
    assert np.allclose(native_affine(data), affine)
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(0))
    assert native_spacing(data) == pytest.approx(tuple(zooms))


def test_restore_rejects_wrong_grid(tmp_path):
    item = write_case(
        tmp_path,
        "brats2024",
        "BraTS-GLI-00004-000",
        tumour_label({"NETC": 1, "ED": 2, "ET": 3}),
        np.eye(4),
    )
    data = build_preprocess("brats2024")(item)
    with pytest.raises(ValueError, match="cropped grid"):
        restore_to_native(np.zeros((3, 5, 5, 5), np.float32), data)


def test_train_augment(tmp_path):
    item = write_case(
        tmp_path,
        "brats2024",
        "BraTS-GLI-00005-000",
        tumour_label({"NETC": 1, "ED": 2, "ET": 3}),
        np.eye(4),
    )
    data = build_preprocess("brats2024")(item)
    spec = get_dataset("brats2024")
    for patch in [(8, 8, 8), (16, 6, 12)]:  # inside the volume; larger than it on two axes
        aug = build_train_augment(patch, intensity_jitter=True)
        aug.set_random_state(seed=0)
        hits = 0
        for _ in range(6):
            out = aug(data)
            assert tuple(out["image"].shape) == (4, *patch)
            assert tuple(out["regions"].shape) == (3, *patch)
            assert tuple(out["compartments"].shape) == (3, *patch)
            assert out["image"].dtype == torch.float32
            # All keys moved together: the targets still match the cropped, flipped label.
            regions = regions_from_label(out["label"][0], [spec.regions[r] for r in ds.REGIONS])
            assert torch.equal(regions, out["regions"].as_tensor())
            hits += int(out["regions"][0].sum() > 0)
        assert hits >= 2  # half the crops are centred on tumour

    # The engine's use: a subset of keys, reseeded per sample, reproducible.
    keys = ("image", "regions", "compartments")
    aug = build_train_augment((8, 8, 8), keys=keys)
    outs = []
    for _ in range(2):
        aug.set_random_state(seed=7)
        outs.append(aug({k: data[k] for k in keys}))
    assert set(outs[0]) == set(keys)
    assert all(torch.equal(outs[0][k], outs[1][k]) for k in keys)


@pytest.mark.parametrize("cache", ["memory", "disk", "none"])
def test_make_cached_dataset(tmp_path, cache):
    items = [
        write_case(
            tmp_path / "data",
            "brats2024",
            f"BraTS-GLI-0000{i}-000",
            tumour_label({"NETC": 1, "ED": 2, "ET": 3}),
            np.eye(4),
            seed=i,
        )
        for i in range(2)
    ]
    pre = build_preprocess("brats2024")
    dataset = make_cached_dataset(items, pre, cache=cache, cache_dir=tmp_path / "cache")
    assert len(dataset) == 2
    got = dataset[1]
    expected = pre(items[1])
    assert got["id"] == items[1]["id"]
    assert torch.equal(torch.as_tensor(got["image"]), torch.as_tensor(expected["image"]))
    np.testing.assert_array_equal(restore_to_native(got["regions"], got).shape, (3, *SHAPE))
    if cache == "disk":
        assert len(list((tmp_path / "cache").glob("*.pt"))) == 1
    with pytest.raises(ValueError, match="cache"):
        make_cached_dataset(items, pre, cache="ram")


def test_zero_absent_is_reexported():
    assert ds.zero_absent is subsets.zero_absent


@pytest.mark.slow
def test_synthetic_phantoms_read_like_brats2024(tmp_path):
    from mmbench.datasets.synthetic_cache import ensure_synthetic

    root = ensure_synthetic(tmp_path, 2, (12, 12, 12), "glioma", 0, n_jobs=1, progress=False)
    index = load_dataset("synthetic", root, strict=True)
    assert index.case_ids == ["BraTS-SYN-00000-000", "BraTS-SYN-00001-000"]
    data = build_preprocess(index.spec)(index.cases[0].as_item())
    assert data["image"].shape[0] == 4 and data["regions"].shape[0] == 3
    restored = restore_to_native(data["regions"], data)
    assert restored.shape == (3, 12, 12, 12)
