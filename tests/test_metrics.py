"""Known-answer tests of the region metrics and the empty-mask policies."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mmbench.metrics import (
    DEFAULT_MAX_DISTANCE,
    EMPTY_POLICIES,
    ETPP_MIN_VOXELS,
    MetricPolicy,
    dice,
    hd95,
    iou,
    region_metrics,
    score_many,
    score_unit,
    sensitivity,
    specificity,
    surface_distances,
)

D = DEFAULT_MAX_DISTANCE
SHAPE = (24, 24, 24)


def cube(lo: int, hi: int, shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[lo:hi, lo:hi, lo:hi] = True
    return m


def sphere(centre: tuple[float, ...], radius: float, shape: tuple[int, ...]) -> np.ndarray:
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius**2


EMPTY = np.zeros(SHAPE, bool)
FULL_G = cube(4, 12)  # 512 voxels
N_VOX = EMPTY.size

# (case) -> policy -> metric -> expected value; see the table in the metrics module docstring
CASES = {
    "pred-empty": (EMPTY, FULL_G),
    "ref-empty": (FULL_G, EMPTY),
    "both-empty": (EMPTY, EMPTY),
}


def expected(case: str, policy: str) -> dict[str, float]:
    nan = math.nan
    if case == "both-empty":
        v = nan if policy == "nan" else 1.0
        return {
            "dice": v,
            "iou": v,
            "sensitivity": v,
            "specificity": v,
            "hd95": nan if policy == "nan" else 0.0,
        }
    hd = {
        "penalty": D,
        "zero": 0.0,
        "asymmetric": 0.0 if case == "pred-empty" else D,
        "nan": D,
    }[policy]
    # TN / (TN + FP): no false positives when P is empty; all voxels are negatives when G is
    spec = 1.0 if case == "pred-empty" else (N_VOX - 512) / N_VOX
    return {"dice": 0.0, "iou": 0.0, "sensitivity": 0.0, "specificity": spec, "hd95": hd}


@pytest.mark.parametrize("policy", EMPTY_POLICIES)
@pytest.mark.parametrize("case", list(CASES))
def test_empty_mask_policies(case: str, policy: str) -> None:
    pred, ref = CASES[case]
    want = expected(case, policy)
    got = {
        "dice": dice(pred, ref, empty=policy),
        "iou": iou(pred, ref, empty=policy),
        "sensitivity": sensitivity(pred, ref, empty=policy),
        "specificity": specificity(pred, ref, empty=policy),
        "hd95": hd95(pred, ref, empty=policy),
    }
    for name, value in want.items():
        if math.isnan(value):
            assert math.isnan(got[name]), (name, got[name])
        else:
            assert got[name] == pytest.approx(value, abs=1e-12), name
    # region_metrics applies the same policy
    rows = region_metrics({"ET": pred}, {"ET": ref}, (1, 1, 1), MetricPolicy(empty=policy))
    for row in rows:
        w = want[row["metric"]]
        assert (math.isnan(row["value"]) and math.isnan(w)) or row["value"] == pytest.approx(w)


@pytest.mark.parametrize("policy", EMPTY_POLICIES)
def test_non_empty_pair_is_policy_independent(policy: str) -> None:
    pred, ref = cube(4, 12), cube(6, 14)  # 8³ cubes overlapping in 6³
    tp, n = 216, 512
    assert dice(pred, ref, policy) == pytest.approx(2 * tp / (2 * n))
    assert iou(pred, ref, policy) == pytest.approx(tp / (2 * n - tp))
    assert sensitivity(pred, ref, policy) == pytest.approx(tp / n)
    assert specificity(pred, ref, policy) == pytest.approx((N_VOX - 2 * n + tp) / (N_VOX - n))
    assert hd95(pred, ref, empty=policy) == hd95(pred, ref)


def test_overlap_metrics_are_exact_without_smoothing() -> None:
    ref = cube(4, 12)
    pred = ref.copy()
    pred[4, 4, 4] = False  # one false negative
    assert dice(pred, ref) == 2 * 511 / (511 + 512)
    assert sensitivity(pred, ref) == 511 / 512
    assert specificity(pred, ref) == 1.0
    fp_only = np.zeros(SHAPE, bool)
    fp_only[0, 0, 0] = True
    assert dice(fp_only, EMPTY) == 0.0  # +1 smoothing would give 0.5


def test_reference_covering_whole_volume() -> None:
    full = np.ones((4, 4, 4), bool)
    assert specificity(full, full) == 1.0
    assert math.isnan(specificity(full, full, empty="nan"))
    assert specificity(np.zeros_like(full), full) == 1.0


def test_cube_shifted_by_one_voxel_is_one_mm() -> None:
    a = cube(6, 16)
    b = np.roll(a, 1, axis=0)
    assert hd95(a, b) == 1.0
    assert hd95(a, b, mode="directed-max") == 1.0
    assert hd95(a, a) == 0.0


def test_spacing_scales_the_shift_axis_only() -> None:
    a = cube(6, 16)
    shifted_z = np.roll(a, 1, axis=2)
    assert hd95(a, shifted_z, spacing=(1, 1, 3)) == pytest.approx(3.0)
    assert hd95(a, shifted_z, spacing=None) == pytest.approx(1.0)  # spacing ignored
    assert hd95(a, shifted_z, spacing=2.0) == pytest.approx(2.0)  # scalar = isotropic
    shifted_x = np.roll(a, 1, axis=0)
    assert hd95(a, shifted_x, spacing=(1, 1, 3)) == pytest.approx(1.0)
    assert hd95(a, shifted_x, spacing=(2, 1, 3)) == pytest.approx(2.0)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 6])
def test_spheres_shifted_by_k_voxels(k: int) -> None:
    shape = (48, 48, 48)
    a = sphere((24, 24, 24), 10, shape)
    b = sphere((24 + k, 24, 24), 10, shape)
    d_ab, d_ba = surface_distances(a, b)
    # The poles on the shift axis are exactly k apart and no surface voxel is farther.
    assert max(d_ab.max(), d_ba.max()) == pytest.approx(k)
    value = hd95(a, b)
    # Continuous sphere: the distance at polar angle t is ~k|cos t|, and |cos t| is uniform on
    # the sphere's area, so the 95th percentile is ~0.95 k; small shifts are exactly k voxels.
    if k <= 3:
        assert value == pytest.approx(k)
    else:
        assert 0.9 * k <= value <= k
    assert hd95(a, b) == hd95(b, a)


def test_distant_false_positive_hidden_by_pooled_caught_by_directed_max() -> None:
    shape = (64, 64, 64)
    ref = sphere((20, 32, 32), 12, shape)
    pred = ref | sphere((54, 32, 32), 4, shape)  # a small blob ~18-26 voxels away
    assert hd95(pred, ref, mode="pooled") == 0.0
    directed = hd95(pred, ref, mode="directed-max")
    assert 18.0 < directed < 26.0


def test_torch_tensors_and_integer_masks_are_accepted() -> None:
    torch = pytest.importorskip("torch")  # imported here: joblib workers import this module
    a, b = cube(4, 12), cube(5, 13)
    want = hd95(a, b)
    assert hd95(torch.from_numpy(a), torch.from_numpy(b)) == want
    assert hd95(a.astype(np.uint8) * 2, b.astype(np.int64)) == want
    assert dice(torch.from_numpy(a), b) == dice(a, b)


def test_invalid_arguments() -> None:
    a = cube(4, 12)
    with pytest.raises(ValueError, match="shapes differ"):
        dice(a, a[:-1])
    with pytest.raises(ValueError, match="valid: pooled, directed-max"):
        hd95(a, a, mode="max")
    with pytest.raises(ValueError, match="penalty, zero, asymmetric, nan"):
        hd95(a, a, empty="skip")
    with pytest.raises(ValueError, match="spacing"):
        hd95(a, a, spacing=(1, 1))


def test_metric_policy_validation_and_text() -> None:
    with pytest.raises(ValueError, match="valid: penalty, zero, asymmetric, nan"):
        MetricPolicy(empty="drop")
    with pytest.raises(ValueError, match="valid: pooled, directed-max"):
        MetricPolicy(hd95_mode="monai")
    with pytest.raises(ValueError, match="max_distance"):
        MetricPolicy(max_distance=-1)
    p = MetricPolicy()
    assert p.as_dict() == {
        "empty_policy": "penalty",
        "hd95_mode": "pooled",
        "max_distance": 373.1287,
    }
    assert MetricPolicy.from_dict(p.as_dict()) == p
    assert p.describe() == (
        "HD95 pooled (medpy/BraTS); empty masks: penalty "
        "(one-empty → 373.13 mm, Dice 0; both-empty → 0 mm, Dice 1)"
    )
    for empty in EMPTY_POLICIES:
        text = MetricPolicy(empty=empty, hd95_mode="directed-max").describe()
        assert text.startswith("HD95 directed-max (MONAI/DeepMind); empty masks: " + empty)
    assert "NaN" in MetricPolicy(empty="nan").describe()


def test_region_metrics_rows_and_order() -> None:
    ref = {"WT": cube(2, 14), "TC": cube(4, 12), "ET": cube(6, 10)}
    pred = {"WT": cube(3, 14), "TC": cube(4, 12), "ET": EMPTY}
    rows = region_metrics(pred, ref, (1, 1, 1), metrics=("dice", "hd95", "ref_voxels"))
    assert [(r["region"], r["metric"]) for r in rows] == [
        (reg, m) for reg in ("WT", "TC", "ET") for m in ("dice", "hd95", "ref_voxels")
    ]
    values = {(r["region"], r["metric"]): r["value"] for r in rows}
    assert values["TC", "dice"] == 1.0 and values["TC", "hd95"] == 0.0
    assert values["ET", "dice"] == 0.0 and values["ET", "hd95"] == D
    assert values["ET", "ref_voxels"] == 64.0
    assert values["WT", "hd95"] == hd95(pred["WT"], ref["WT"])
    assert all(isinstance(r["value"], float) for r in rows)
    with pytest.raises(ValueError, match="unknown metric"):
        region_metrics(pred, ref, (1, 1, 1), metrics=("dice", "asd"))
    with pytest.raises(ValueError, match="differ"):
        region_metrics({"WT": pred["WT"]}, ref, (1, 1, 1))


def test_etpp_is_a_separate_region() -> None:
    ref = {"ET": cube(4, 12)}  # 512 voxels
    small = {"ET": cube(4, 11)}  # 343 < 500 voxels: emptied by ETpp
    large = {"ET": cube(4, 13)}  # 729 voxels: kept
    assert ETPP_MIN_VOXELS == 500
    rows = region_metrics(small, ref, (1, 1, 1), metrics=("dice",), etpp=True)
    got = {r["region"]: r["value"] for r in rows}
    assert got["ET"] == pytest.approx(2 * 343 / (343 + 512))
    assert got["ETpp"] == 0.0
    rows = region_metrics(large, ref, (1, 1, 1), metrics=("dice",), etpp=True)
    got = {r["region"]: r["value"] for r in rows}
    assert got["ET"] == got["ETpp"] == pytest.approx(2 * 512 / (729 + 512))
    # ETpp on an empty reference: a small false-positive ET is removed → both empty → Dice 1
    rows = region_metrics(small, {"ET": EMPTY}, (1, 1, 1), metrics=("dice",), etpp=True)
    assert [r["value"] for r in rows] == [0.0, 1.0]
    with pytest.raises(ValueError, match="ET"):
        region_metrics({"WT": EMPTY}, {"WT": EMPTY}, (1, 1, 1), etpp=True)


def _work(seed: int) -> float:
    rng = np.random.default_rng(seed)
    a = np.zeros((16, 16, 16), bool)
    b = np.zeros((16, 16, 16), bool)
    a[tuple(rng.integers(2, 14, (3, 30)))] = True
    b[tuple(rng.integers(2, 14, (3, 30)))] = True
    return hd95(a, b)


def test_score_many_is_ordered_and_independent_of_n_jobs() -> None:
    items = list(range(8))
    serial = score_many(items, n_jobs=1, fn=_work)
    parallel = score_many(items, n_jobs=2, fn=_work)
    assert serial == parallel == [_work(i) for i in items]
    assert len(set(serial)) > 1  # the items really differ, so order is tested


def test_score_many_default_scores_units() -> None:
    ref = {"WT": cube(2, 14), "ET": cube(6, 10)}
    units = [
        {"case": f"c{i}", "subset": "T1", "pred": {"WT": cube(2 + i, 14), "ET": EMPTY}, "ref": ref}
        for i in range(3)
    ]
    for u in units:
        u["spacing"] = (1.0, 1.0, 1.0)
        u["policy"] = MetricPolicy(empty="nan")
    one = score_many(units, n_jobs=1)
    two = score_many(units, n_jobs=2)
    assert one == score_many(units, n_jobs=1, fn=score_unit)
    assert [[r["value"] for r in rows] for rows in one] == [
        [r["value"] for r in rows] for rows in two
    ]
    first = one[0][0]
    assert first["case"] == "c0" and first["subset"] == "T1" and first["region"] == "WT"
    assert first["empty_policy"] == "nan" and first["max_distance"] == 373.1287
    assert [r["case"] for rows in one for r in rows][::10] == ["c0", "c1", "c2"]
