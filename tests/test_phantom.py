"""Tests of the synthetic phantom generator and its on-disk cache."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from mmbench.datasets import phantom
from mmbench.datasets.phantom import (
    TISSUES,
    PhantomConfig,
    PhantomGenerator,
    case_id,
    grid_affine,
    grid_spacing,
)
from mmbench.datasets.synthetic_cache import (
    GENERATOR_VERSION,
    MANIFEST,
    case_files,
    default_cache_root,
    ensure_synthetic,
    write_phantoms,
)

SMALL = (32, 32, 32)


def _gen(shape=SMALL, mode="glioma", seed=0) -> PhantomGenerator:
    return PhantomGenerator(PhantomConfig(shape=shape, mode=mode, seed=seed))


# --------------------------------------------------------------------------- generator


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        PhantomConfig(shape=(32, 32), mode="glioma")
    with pytest.raises(ValueError):
        PhantomConfig(shape=(32, 32, 32), mode="lgg")
    assert PhantomConfig(shape=[32, 32, 32]).shape == (32, 32, 32)
    assert case_id(7) == "BraTS-SYN-00007-000"


def test_deterministic_and_seed_dependent() -> None:
    a = _gen().generate(1)
    b = _gen().generate(1)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.label, b.label)
    np.testing.assert_array_equal(a.affine, b.affine)
    c = _gen(seed=1).generate(1)
    d = _gen().generate(2)
    assert not np.array_equal(a.images, c.images)
    assert not np.array_equal(a.label, c.label)
    assert not np.array_equal(a.images, d.images)


def test_shapes_dtypes_and_brain_mask() -> None:
    for mode, allowed in (("glioma", {0, 1, 2, 3}), ("mets", {0, 1, 2, 3})):
        images, label, affine = _gen(mode=mode).generate(0)
        assert images.shape == (4, *SMALL) and images.dtype == np.float32
        assert label.shape == SMALL and label.dtype == np.uint8
        assert affine.shape == (4, 4)
        assert set(np.unique(label).tolist()) <= allowed
        assert np.isfinite(images).all() and (images >= 0).all()
        brain = images[0] > 0
        # Skull-stripped: all four modalities share the same non-zero support.
        for m in range(1, 4):
            np.testing.assert_array_equal(images[m] > 0, brain)
        assert (label > 0).any()
        assert not np.any((label > 0) & ~brain), "tumour outside the brain"
        assert 0.05 < brain.mean() < 0.5


def test_spacing_and_affine_cover_brats_fov() -> None:
    assert grid_spacing((240, 240, 155)) == (1.0, 1.0, 1.0)
    assert grid_spacing((48, 48, 48)) == (5.0, 5.0, 155.0 / 48)
    aff = grid_affine((48, 64, 31))
    np.testing.assert_allclose(np.diag(aff)[:3], (5.0, 3.75, 5.0))
    np.testing.assert_allclose(aff[:3, :3], np.diag(np.diag(aff)[:3]))  # RAS, axis-aligned
    # Field of view (voxel edge to edge) is 240 x 240 x 155 mm, centred on the same point.
    for shape in ((48, 64, 31), (240, 240, 155)):
        a = grid_affine(shape)
        lo = a[:3, 3] - np.diag(a)[:3] / 2
        hi = a[:3, :3] @ (np.array(shape) - 0.5) + a[:3, 3]
        np.testing.assert_allclose(hi - lo, (240.0, 240.0, 155.0))
        np.testing.assert_allclose((hi + lo) / 2, phantom._template()["centre"])


def test_some_glioma_cases_have_no_enhancing_rim() -> None:
    gen = _gen()
    et = [int((gen.generate(i).label == 3).sum()) for i in range(12)]
    assert any(v == 0 for v in et), et
    assert sum(v > 0 for v in et) >= 6, et


def test_glioma_size_is_a_few_percent_of_brain() -> None:
    gen = _gen(shape=(48, 48, 48))
    for i in range(4):
        images, label, _ = gen.generate(i)
        wt = np.isin(label, (1, 2, 3)).sum() / (images[0] > 0).sum()
        assert 0.01 < wt < 0.12, (i, wt)


def test_mets_have_several_separate_lesions() -> None:
    gen = _gen(shape=(48, 48, 48), mode="mets")
    counts = []
    for i in range(6):
        label = gen.generate(i).label
        counts.append(ndimage.label(label > 0)[1])
        assert (label == 3).any(), "every metastasis has an enhancing rim"
    assert max(counts) >= 2, counts
    assert min(counts) >= 1, counts


def test_post_treatment_cavity_is_csf_like_and_adjacent() -> None:
    (images, label, _), tissue = _gen(
        shape=(48, 48, 48), mode="post-treatment"
    ).generate_with_tissue(0)
    assert set(np.unique(label).tolist()) <= {0, 1, 2, 3, 4}
    cavity = label == 4
    assert cavity.sum() > 5
    tumour = np.isin(label, (1, 2, 3))
    assert (ndimage.binary_dilation(cavity, iterations=2) & tumour).any(), "cavity not adjacent"
    wm = tissue == TISSUES.index("WM")
    t2, flair = images[2], images[3]
    assert t2[cavity].mean() > 1.5 * t2[wm].mean()
    assert flair[cavity].mean() < 0.6 * flair[wm].mean()


def _zmeans(images: np.ndarray, tissue: np.ndarray) -> dict[str, np.ndarray]:
    brain = images[0] > 0
    z = np.stack([(im - im[brain].mean()) / im[brain].std() for im in images])
    return {t: z[:, tissue == k].mean(axis=1) for k, t in enumerate(TISSUES) if (tissue == k).any()}


def test_contrast_properties() -> None:
    gen = _gen(shape=(48, 48, 48))
    for i in range(10):
        (images, label, _), tissue = gen.generate_with_tissue(i)
        if (label == 1).sum() >= 10 and (label == 3).sum() >= 30:
            break
    else:  # pragma: no cover
        pytest.fail("no glioma case with both a core and an enhancing rim")
    mu = _zmeans(images, tissue)  # per tissue: (4,) z-scored means, order T1, T1ce, T2, FLAIR
    t1, t1ce, t2, flair = range(4)

    # Only T1ce separates the rim from the core and from the oedema.
    sep = mu["ET"][t1ce] - max(mu["NETC"][t1ce], mu["oedema"][t1ce])
    assert sep > 1.5, sep
    # The rim is a few voxels thick, so partial volume pulls it towards its neighbours a little.
    for m in (t1, t2, flair):
        gap = min(abs(mu["ET"][m] - mu["NETC"][m]), abs(mu["ET"][m] - mu["oedema"][m]))
        assert gap < 0.75 and gap < sep / 4, (m, gap)
    # FLAIR: oedema brightest, CSF suppressed.
    for other in ("WM", "GM", "CSF", "NETC"):
        assert mu["oedema"][flair] > mu[other][flair] + 1.0, other
    assert mu["CSF"][flair] < mu["WM"][flair] - 0.5
    # T2: oedema and CSF both bright.
    for bright in ("oedema", "CSF"):
        assert mu[bright][t2] > max(mu["WM"][t2], mu["GM"][t2]) + 0.5, bright
    # T1: core dark; oedema low contrast in T1/T1ce compared with FLAIR.
    assert mu["NETC"][t1] < min(mu["WM"][t1], mu["GM"][t1]) - 0.5
    for m in (t1, t1ce):
        assert abs(mu["oedema"][m] - mu["WM"][m]) < 0.5 * (mu["oedema"][flair] - mu["WM"][flair])


def test_partial_volume_mixes_tissue_intensities() -> None:
    """Tissue borders get intermediate intensities, not only the table values plus noise."""
    (images, _, _), tissue = _gen(shape=(48, 48, 48)).generate_with_tissue(0)
    gm, wm = tissue == TISSUES.index("GM"), tissue == TISSUES.index("WM")
    t1 = images[0]
    lo, hi = np.median(t1[gm]), np.median(t1[wm])
    between = ((t1 > lo) & (t1 < hi) & (gm | wm)).mean() / (gm | wm).mean()
    assert between > 0.2


def test_same_phantom_at_two_resolutions() -> None:
    """Geometry is drawn independently of the grid: same tumour position and size in mm."""
    out = []
    for shape in ((48, 48, 48), (64, 64, 64)):
        _, label, affine = _gen(shape=shape).generate(3)
        idx = np.argwhere(np.isin(label, (1, 2, 3)))
        centre_mm = affine[:3, :3] @ idx.mean(0) + affine[:3, 3]
        vol_ml = len(idx) * abs(np.linalg.det(affine[:3, :3])) / 1000
        out.append((centre_mm, vol_ml))
    assert np.linalg.norm(out[0][0] - out[1][0]) < 5.0
    assert abs(out[0][1] - out[1][1]) < 0.25 * out[1][1]


def test_template_loads_without_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    phantom._template.cache_clear()
    phantom._prefiltered_anatomy.cache_clear()
    tpl = phantom._template()
    assert tpl["mask"].shape == tpl["gm"].shape == tpl["wm"].shape
    assert tpl["mask"].sum() > 1e6  # about 1.9 L at 1 mm


@pytest.mark.slow
def test_full_brats_grid() -> None:
    t0 = time.perf_counter()
    images, label, affine = _gen(shape=(240, 240, 155)).generate(0)
    assert images.shape == (4, 240, 240, 155) and label.shape == (240, 240, 155)
    np.testing.assert_allclose(np.diag(affine)[:3], 1.0)
    assert (label > 0).any()
    assert time.perf_counter() - t0 < 60


# --------------------------------------------------------------------------- files and cache


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("phantoms")
    return write_phantoms(out, 2, SMALL, "post-treatment", seed=3, n_jobs=1, progress=False)


def test_layout_and_nifti_round_trip(written: Path) -> None:
    cases = sorted(p.name for p in written.iterdir() if p.is_dir())
    assert cases == ["BraTS-SYN-00000-000", "BraTS-SYN-00001-000"]
    assert not [p for p in written.iterdir() if p.name.startswith(".")], "temp files left"
    manifest = json.loads((written / MANIFEST).read_text())
    assert manifest["generator_version"] == GENERATOR_VERSION
    assert manifest["shape"] == list(SMALL) and manifest["mode"] == "post-treatment"
    assert manifest["seed"] == 3 and manifest["cases"] == 2

    expected = PhantomGenerator(PhantomConfig(SMALL, "post-treatment", 3)).generate(1)
    files = case_files(written, 1)
    assert [f.name for f in files] == [
        f"BraTS-SYN-00001-000-{s}.nii.gz" for s in ("t1n", "t1c", "t2w", "t2f", "seg")
    ]
    imgs = [nib.load(f) for f in files]
    for m, img in enumerate(imgs[:4]):
        assert img.get_data_dtype() == np.float32
        np.testing.assert_array_equal(np.asarray(img.dataobj), expected.images[m])
    assert imgs[4].get_data_dtype() == np.uint8
    seg = np.asarray(imgs[4].dataobj)
    np.testing.assert_array_equal(seg, expected.label)
    assert set(np.unique(seg).tolist()) <= {0, 1, 2, 3, 4}
    for img in imgs:
        assert img.shape == SMALL
        np.testing.assert_allclose(img.affine, expected.affine, atol=1e-5)
        np.testing.assert_allclose(img.header.get_zooms(), grid_spacing(SMALL), rtol=1e-6)
        assert img.header.get_xyzt_units()[0] == "mm"
        assert nib.aff2axcodes(img.affine) == ("R", "A", "S")


def test_rewrite_with_fewer_cases_drops_stale_cases(tmp_path: Path) -> None:
    write_phantoms(tmp_path, 3, (16, 16, 16), "glioma", 0, n_jobs=1, progress=False)
    write_phantoms(tmp_path, 2, (16, 16, 16), "glioma", 0, n_jobs=1, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == [
        "BraTS-SYN-00000-000",
        "BraTS-SYN-00001-000",
    ]


def _mtimes(folder: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def test_cache_reuse_and_regeneration(tmp_path: Path) -> None:
    kw = dict(cases=2, shape=SMALL, mode="glioma", seed=0, n_jobs=1, progress=False)
    first = ensure_synthetic(tmp_path, **kw)
    before = _mtimes(first)
    assert len(before) == 2 * 5 + 1
    assert ensure_synthetic(tmp_path, **kw) == first
    assert _mtimes(first) == before, "reused cache must not be rewritten"

    other = ensure_synthetic(tmp_path, **{**kw, "seed": 1})
    assert other != first and _mtimes(first) == before
    a = nib.load(case_files(first, 0)[0]).get_fdata()
    b = nib.load(case_files(other, 0)[0]).get_fdata()
    assert not np.array_equal(a, b)

    # A missing file regenerates its case only.
    lost = case_files(first, 1)[2]
    lost.unlink()
    ensure_synthetic(tmp_path, **kw)
    after = _mtimes(first)
    assert lost.is_file()
    assert all(after[k] == v for k, v in before.items() if "00000" in k)

    # A manifest that does not match (e.g. older generator) regenerates everything.
    mpath = first / MANIFEST
    manifest = json.loads(mpath.read_text())
    manifest["generator_version"] = "0"
    mpath.write_text(json.dumps(manifest))
    time.sleep(0.01)
    ensure_synthetic(tmp_path, **kw)
    regen = _mtimes(first)
    assert all(regen[k] != v for k, v in after.items())
    assert json.loads(mpath.read_text())["generator_version"] == GENERATOR_VERSION
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]


def test_default_cache_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MMBENCH_CACHE", str(tmp_path))
    assert default_cache_root() == tmp_path
    monkeypatch.delenv("MMBENCH_CACHE")
    assert default_cache_root() == Path.home() / ".cache" / "mmbench" / "synthetic"
