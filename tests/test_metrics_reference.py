"""HD95 against the reference implementations (medpy 0.5.2, MONAI) and the full-volume path."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy import ndimage

from mmbench.metrics import hd95, surface_distances

medpy_binary = pytest.importorskip("medpy.metric.binary")
monai_metrics = pytest.importorskip("monai.metrics")

SPACINGS = [(1.0, 1.0, 1.0), (0.9, 1.2, 3.0), (2.0, 0.5, 1.0)]


def random_shape(seed: int, shape: tuple[int, int, int], border: bool) -> np.ndarray:
    """A smoothed Gaussian random field thresholded: irregular, often several components.
    With ``border=False`` the mask is kept two voxels away from the array border."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=2.5)
    mask = field > 0.9 * field.std()
    if not border:
        inner = np.zeros(shape, bool)
        inner[2:-2, 2:-2, 2:-2] = True
        mask &= inner
    return mask


def pairs(n: int = 6) -> list[tuple[np.ndarray, np.ndarray, bool]]:
    out = []
    for seed in range(n):
        shape = (32 + 4 * seed, 40, 28 + 2 * seed)
        border = seed % 2 == 0
        p = random_shape(seed, shape, border)
        g = random_shape(seed + 100, shape, border)
        assert p.any() and g.any()
        out.append((p, g, border))
    return out


PAIRS = pairs()


def touches_border(m: np.ndarray) -> bool:
    return bool(m[0].any() or m[-1].any() or m[:, 0].any() or m[:, :, -1].any())


def test_random_shapes_cover_border_cases() -> None:
    assert any(touches_border(p) for p, _, border in PAIRS if border)
    assert not any(touches_border(p) or touches_border(g) for p, g, border in PAIRS if not border)


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("index", range(len(PAIRS)))
def test_pooled_equals_medpy(index: int, spacing: tuple[float, float, float]) -> None:
    p, g, _ = PAIRS[index]
    want = medpy_binary.hd95(p, g, voxelspacing=spacing)
    for method in ("auto", "edt", "kdtree"):
        assert hd95(p, g, spacing, mode="pooled", method=method) == pytest.approx(want, abs=1e-6)


def monai_hd95(p: np.ndarray, g: np.ndarray, spacing: tuple[float, ...]) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = monai_metrics.compute_hausdorff_distance(
            torch.from_numpy(p)[None, None],
            torch.from_numpy(g)[None, None],
            include_background=True,
            percentile=95,
            spacing=list(spacing),
        )
    return float(out.item())


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("index", range(len(PAIRS)))
def test_directed_max_equals_monai(index: int, spacing: tuple[float, float, float]) -> None:
    p, g, _ = PAIRS[index]
    want = monai_hd95(p, g, spacing)
    for method in ("auto", "edt", "kdtree"):
        got = hd95(p, g, spacing, mode="directed-max", method=method)
        assert got == pytest.approx(want, abs=1e-4)  # MONAI rounds distances to float32


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("index", range(len(PAIRS)))
def test_bounding_box_equals_full_volume(index: int, spacing: tuple[float, float, float]) -> None:
    p, g, _ = PAIRS[index]
    # small masks in a larger volume, so the box really is smaller than the array
    big_p = np.zeros((80, 80, 70), bool)
    big_g = np.zeros_like(big_p)
    sl = tuple(slice(5, 5 + n) for n in p.shape)
    big_p[sl], big_g[sl] = p, g
    full = surface_distances(big_p, big_g, spacing, crop=False)
    box = surface_distances(big_p, big_g, spacing, crop=True, method="edt")
    for f, b in zip(full, box):
        np.testing.assert_array_equal(f, b)  # same voxels in the same order, same distances
    kd = surface_distances(big_p, big_g, spacing, crop=True, method="kdtree")
    for f, k in zip(full, kd):
        np.testing.assert_allclose(f, k, rtol=0, atol=1e-9)
    for mode in ("pooled", "directed-max"):
        assert hd95(big_p, big_g, spacing, mode=mode) == pytest.approx(
            hd95(big_p, big_g, spacing, mode=mode, crop=False), abs=1e-9
        )
    # masks touching the array border: the box reaches the border too
    assert hd95(p, g, spacing, method="edt") == hd95(p, g, spacing, crop=False)


def test_directed_max_at_least_pooled_and_symmetric() -> None:
    for p, g, _ in PAIRS:
        pooled = hd95(p, g, mode="pooled")
        directed = hd95(p, g, mode="directed-max")
        assert directed >= pooled - 1e-12
        assert hd95(g, p, mode="directed-max") == directed
        assert hd95(g, p) == pytest.approx(pooled, abs=1e-12)
