"""Region metrics for binary segmentation masks: Dice, IoU, sensitivity, specificity and HD95.

All functions take two boolean masks of the same shape (numpy arrays; torch tensors and
non-boolean arrays are accepted and converted with ``!= 0``), on the case's native grid, and
return a Python ``float``. Distances are in the unit of ``spacing`` (mm for NIfTI headers).

Overlap metrics are exact (no smoothing epsilon); the undefined cases that empty masks create
are resolved by the *empty-mask policy* (``/shared/specs/metrics.md``).
``P`` is the prediction, ``G`` the reference, ``D`` = ``max_distance`` (373.1287 mm by default,
the diagonal of a 240×240×155 mm volume):

=====================  =========  ============  ===========  ==========================
case                   Dice/IoU   sensitivity   specificity  HD95
=====================  =========  ============  ===========  ==========================
P, G both non-empty    exact      exact         exact        exact
P empty, G not         0          0             exact (1)    penalty D, zero 0,
                                                             asymmetric 0, nan D
G empty, P not         0          0 (*)         exact        penalty D, zero 0,
                                                             asymmetric D, nan D
both empty             1          1             1 (**)       0
both empty, ``nan``    NaN        NaN           NaN          NaN
=====================  =========  ============  ===========  ==========================

(*) TP/(TP+FN) is 0/0 when G is empty; a false-positive-only prediction is scored 0 like Dice.
(**) exact TN/(TN+FP) is 1 here. Only when G covers the whole volume is specificity 0/0;
it is then 1 (there are no negatives a prediction could hit), NaN under ``nan``.

HD95 modes:

- ``pooled`` (default; medpy, the BraTS evaluator): the 95th percentile (numpy's linear
  interpolation) of the distances P→G and G→P concatenated. Equals medpy 0.5.2
  ``medpy.metric.binary.hd95(pred, ref, voxelspacing=spacing)`` on non-empty masks.
- ``directed-max`` (MONAI, DeepMind surface-distance): the larger of the two directed 95th
  percentiles. Equals MONAI 1.6 ``compute_hausdorff_distance(..., percentile=95, spacing=...)``
  up to MONAI's float32 rounding: MONAI finds its edges with the same 6-connected scipy erosion
  (zero border) after a foreground crop, then takes exact nearest-edge distances (KD-tree on CPU)
  cast to float32 and ``torch.quantile`` (linear interpolation), so the surfaces and the
  percentile definition are the same as here.

Speed: surfaces and distances are computed on the bounding box of P ∪ G only (exact, see
:func:`surface_distances`), with distance transforms or, for surfaces that are small against
the box (scattered metastases), a KD-tree; ``docs/performance.md`` has the figures.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from scipy import ndimage

EMPTY_POLICIES: tuple[str, ...] = ("penalty", "zero", "asymmetric", "nan")
HD95_MODES: tuple[str, ...] = ("pooled", "directed-max")
DEFAULT_MAX_DISTANCE: float = 373.1287
"""mm; the diagonal of a 240×240×155 mm volume (BraTS legacy, AdaMM code)."""

METRICS: tuple[str, ...] = ("dice", "hd95", "iou", "sensitivity", "specificity")
"""Default metrics of :func:`region_metrics`, in row order."""
COUNT_METRICS: tuple[str, ...] = ("ref_voxels", "pred_voxels")
"""Voxel counts :func:`region_metrics` also writes when asked (``ref_voxels`` feeds
:func:`mmbench.benchmark.aggregate.empty_reference_counts`)."""
VALID_METRICS: tuple[str, ...] = METRICS + COUNT_METRICS

ETPP_MIN_VOXELS: int = 500
"""RFNet-family ET post-processing: a predicted ET smaller than this is set empty."""

_MODE_SOURCES = {"pooled": "medpy/BraTS", "directed-max": "MONAI/DeepMind"}

T = TypeVar("T")
R = TypeVar("R")


def _check_choice(kind: str, value: str, valid: Sequence[str]) -> None:
    if value not in valid:
        raise ValueError(f"unknown {kind} {value!r}; valid: {', '.join(valid)}")


@dataclass(frozen=True)
class MetricPolicy:
    """The conventions a metric value was computed under.

    Attributes:
        empty: empty-mask policy, one of :data:`EMPTY_POLICIES`.
        hd95_mode: one of :data:`HD95_MODES`.
        max_distance: mm; the HD95 of a one-empty pair under ``penalty``/``nan`` (and of a
            false-positive-only pair under ``asymmetric``).
    """

    empty: str = "penalty"
    hd95_mode: str = "pooled"
    max_distance: float = DEFAULT_MAX_DISTANCE

    def __post_init__(self) -> None:
        _check_choice("empty-mask policy", self.empty, EMPTY_POLICIES)
        _check_choice("HD95 mode", self.hd95_mode, HD95_MODES)
        if not (math.isfinite(self.max_distance) and self.max_distance > 0):
            raise ValueError(
                f"max_distance must be a positive finite number, got {self.max_distance}"
            )

    def as_dict(self) -> dict[str, Any]:
        """The policy as the results-schema columns ``empty_policy``, ``hd95_mode``,
        ``max_distance`` (ready to stamp onto result rows)."""
        return {
            "empty_policy": self.empty,
            "hd95_mode": self.hd95_mode,
            "max_distance": float(self.max_distance),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MetricPolicy:
        """Inverse of :meth:`as_dict`; also accepts the field names (``empty``)."""
        return cls(
            empty=data.get("empty_policy", data.get("empty", "penalty")),
            hd95_mode=data.get("hd95_mode", "pooled"),
            max_distance=float(data.get("max_distance", DEFAULT_MAX_DISTANCE)),
        )

    def describe(self) -> str:
        """One line for the foot of a table, e.g.
        ``HD95 pooled (medpy/BraTS); empty masks: penalty (one-empty → 373.13 mm, Dice 0;
        both-empty → 0 mm, Dice 1)``."""
        d = f"{self.max_distance:.2f} mm"
        empty = {
            "penalty": f"one-empty → {d}, Dice 0; both-empty → 0 mm, Dice 1",
            "zero": "one-empty → 0 mm, Dice 0; both-empty → 0 mm, Dice 1",
            "asymmetric": (
                f"missed (prediction empty) → 0 mm, false positive (reference empty) → {d}, "
                "Dice 0; both-empty → 0 mm, Dice 1"
            ),
            "nan": f"one-empty → {d}, Dice 0; both-empty → excluded (NaN)",
        }[self.empty]
        return (
            f"HD95 {self.hd95_mode} ({_MODE_SOURCES[self.hd95_mode]}); "
            f"empty masks: {self.empty} ({empty})"
        )


# --------------------------------------------------------------------------------------------
# input handling


def _as_bool(mask: Any) -> np.ndarray:
    if hasattr(mask, "detach"):  # torch.Tensor, without importing torch
        mask = mask.detach().cpu().numpy()
    arr = np.asarray(mask)
    return arr if arr.dtype == bool else arr != 0


def _pair(pred: Any, ref: Any) -> tuple[np.ndarray, np.ndarray]:
    p, g = _as_bool(pred), _as_bool(ref)
    if p.shape != g.shape:
        raise ValueError(f"prediction and reference shapes differ: {p.shape} vs {g.shape}")
    return p, g


def _spacing(spacing: float | Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    if np.isscalar(spacing):
        out = (float(spacing),) * ndim  # type: ignore[arg-type]
    else:
        out = tuple(float(s) for s in spacing)  # type: ignore[union-attr]
    if len(out) != ndim:
        raise ValueError(f"spacing has {len(out)} entries for a {ndim}-D mask")
    if not all(s > 0 and math.isfinite(s) for s in out):
        raise ValueError(f"spacing must be positive and finite, got {out}")
    return out


def _policy_name(empty: str) -> str:
    _check_choice("empty-mask policy", empty, EMPTY_POLICIES)
    return empty


# --------------------------------------------------------------------------------------------
# overlap metrics


@dataclass(frozen=True)
class _Counts:
    tp: int
    fp: int
    fn: int
    tn: int


def _counts(p: np.ndarray, g: np.ndarray) -> _Counts:
    n_p = int(np.count_nonzero(p))
    n_g = int(np.count_nonzero(g))
    tp = int(np.count_nonzero(p & g)) if n_p and n_g else 0
    return _Counts(tp=tp, fp=n_p - tp, fn=n_g - tp, tn=p.size - n_p - n_g + tp)


def _both_empty_value(empty: str) -> float:
    return math.nan if empty == "nan" else 1.0


def _dice(c: _Counts, empty: str) -> float:
    denom = 2 * c.tp + c.fp + c.fn
    return 2 * c.tp / denom if denom else _both_empty_value(empty)


def _iou(c: _Counts, empty: str) -> float:
    denom = c.tp + c.fp + c.fn
    return c.tp / denom if denom else _both_empty_value(empty)


def _sensitivity(c: _Counts, empty: str) -> float:
    if c.tp + c.fn:
        return c.tp / (c.tp + c.fn)
    return 0.0 if c.fp else _both_empty_value(empty)  # reference empty


def _specificity(c: _Counts, empty: str) -> float:
    if c.tn + c.fp:
        if c.tp + c.fp + c.fn == 0:  # both masks empty: the policy decides, as for Dice
            return _both_empty_value(empty)
        return c.tn / (c.tn + c.fp)
    return _both_empty_value(empty)  # the reference covers the whole volume


def dice(pred: Any, ref: Any, empty: str = "penalty") -> float:
    """Dice = 2|P∩G| / (|P|+|G|) of two masks of equal shape; empty masks per ``empty``."""
    return _dice(_counts(*_pair(pred, ref)), _policy_name(empty))


def iou(pred: Any, ref: Any, empty: str = "penalty") -> float:
    """IoU (Jaccard) = |P∩G| / |P∪G|; empty masks per ``empty``."""
    return _iou(_counts(*_pair(pred, ref)), _policy_name(empty))


def sensitivity(pred: Any, ref: Any, empty: str = "penalty") -> float:
    """Sensitivity (recall) = TP/(TP+FN); empty reference per the module table."""
    return _sensitivity(_counts(*_pair(pred, ref)), _policy_name(empty))


def specificity(pred: Any, ref: Any, empty: str = "penalty") -> float:
    """Specificity = TN/(TN+FP) over the whole volume; degenerate cases per the module table."""
    return _specificity(_counts(*_pair(pred, ref)), _policy_name(empty))


# --------------------------------------------------------------------------------------------
# surface distances


def _bounding_box(p: np.ndarray, g: np.ndarray) -> tuple[slice, ...]:
    """Tight bounding box of P ∪ G (both non-empty)."""
    union = p | g
    box = []
    for axis in range(union.ndim):
        other = tuple(a for a in range(union.ndim) if a != axis)
        idx = np.flatnonzero(np.any(union, axis=other))
        box.append(slice(int(idx[0]), int(idx[-1]) + 1))
    return tuple(box)


def _surface(mask: np.ndarray) -> np.ndarray:
    """Mask minus its 6-connected (connectivity 1) erosion; outside the array counts as
    background, so mask voxels on the array border are surface voxels (as in medpy)."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def surface_distances(
    pred: Any,
    ref: Any,
    spacing: float | Sequence[float] | None = (1.0, 1.0, 1.0),
    crop: bool = True,
    method: str = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """Distances from every surface voxel of P to the nearest surface voxel of G, and back.

    Args:
        pred, ref: non-empty masks of equal shape (any rank).
        spacing: voxel size per axis (mm), a scalar for isotropic, ``None`` for unit spacing.
        crop: compute on the bounding box of P ∪ G (the fast path). ``False`` computes the
            distance transforms on the full volume, as medpy does (reference path for tests);
            both give the same numbers.
        method: ``"edt"``: Euclidean distance transforms of the box (as medpy, on less volume);
            ``"kdtree"``: nearest surface voxel by a KD-tree over the scaled surface-voxel
            coordinates (exact too; cheaper when the surfaces are small against the box, e.g.
            scattered metastases); ``"auto"`` picks by a cost estimate. Ignored when
            ``crop=False``.

    Returns:
        ``(d_pred_to_ref, d_ref_to_pred)``: 1-D float64 arrays (mm), one entry per surface voxel
        of P and of G respectively, in C order of the voxels.
    """
    _check_choice("surface-distance method", method, SURFACE_METHODS)
    p, g = _pair(pred, ref)
    if not p.any() or not g.any():
        raise ValueError("surface distances need two non-empty masks")
    sampling = _spacing(spacing, p.ndim)
    if crop:
        # No margin is needed. (1) Every voxel outside the box is background in P and G, so
        # eroding the box with a background border gives exactly the full-volume surfaces.
        # (2) The EDT value at a voxel is its distance to the nearest zero of ~surface, i.e. to
        # the nearest surface voxel; all surface voxels lie inside the box, so restricting the
        # domain to the box removes no candidate nearest voxel, and every voxel queried (a
        # surface voxel of the other mask) lies inside the box too. A margin would only matter
        # for an erosion that treats the array border as foreground.
        box = _bounding_box(p, g)
        p, g = p[box], g[box]
    sp, sg = _surface(p), _surface(g)
    if crop and method != "edt":
        n_surface = int(np.count_nonzero(sp)) + int(np.count_nonzero(sg))
        # Measured on one core: two EDTs cost ~0.2 µs per box voxel, the two KD-tree
        # builds and queries ~1.5 µs per surface voxel.
        if method == "kdtree" or n_surface * _KDTREE_COST_RATIO < sp.size:
            return _kdtree_distances(sp, sg, sampling)
    d_pg = ndimage.distance_transform_edt(~sg, sampling=sampling)[sp]
    d_gp = ndimage.distance_transform_edt(~sp, sampling=sampling)[sg]
    return d_pg, d_gp


_KDTREE_COST_RATIO = 8
SURFACE_METHODS: tuple[str, ...] = ("auto", "edt", "kdtree")


def _kdtree_distances(
    sp: np.ndarray, sg: np.ndarray, sampling: tuple[float, ...]
) -> tuple[np.ndarray, np.ndarray]:
    from scipy.spatial import cKDTree

    scale = np.asarray(sampling, dtype=np.float64)
    xp = np.argwhere(sp) * scale
    xg = np.argwhere(sg) * scale
    d_pg = cKDTree(xg).query(xp, k=1, workers=1)[0]
    d_gp = cKDTree(xp).query(xg, k=1, workers=1)[0]
    return d_pg, d_gp


def _hd95_from_distances(d_pg: np.ndarray, d_gp: np.ndarray, mode: str) -> float:
    if mode == "pooled":
        return float(np.percentile(np.concatenate([d_pg, d_gp]), 95))
    return float(max(np.percentile(d_pg, 95), np.percentile(d_gp, 95)))


def _hd95_empty(p_empty: bool, g_empty: bool, empty: str, max_distance: float) -> float:
    if p_empty and g_empty:
        return math.nan if empty == "nan" else 0.0
    if empty == "zero":
        return 0.0
    if empty == "asymmetric":
        return 0.0 if p_empty else float(max_distance)
    return float(max_distance)  # penalty, nan


def hd95(
    pred: Any,
    ref: Any,
    spacing: float | Sequence[float] | None = (1.0, 1.0, 1.0),
    mode: str = "pooled",
    empty: str = "penalty",
    max_distance: float = DEFAULT_MAX_DISTANCE,
    *,
    crop: bool = True,
    method: str = "auto",
) -> float:
    """95th-percentile Hausdorff distance between two masks of equal shape, in spacing units.

    Args:
        pred, ref: masks of equal shape (3-D for MRI; any rank works).
        spacing: voxel size per axis (mm); a scalar means isotropic, ``None`` unit spacing.
        mode: ``"pooled"`` (medpy) or ``"directed-max"`` (MONAI), see the module docstring.
        empty: empty-mask policy, see the module table.
        max_distance: mm, the value of a penalised one-empty pair.
        crop, method: how the surface distances are computed, see :func:`surface_distances`;
            every choice gives the same value (up to float rounding, ~1e-12 mm).
    """
    _check_choice("HD95 mode", mode, HD95_MODES)
    _policy_name(empty)
    p, g = _pair(pred, ref)
    p_empty, g_empty = not p.any(), not g.any()
    if p_empty or g_empty:
        return _hd95_empty(p_empty, g_empty, empty, max_distance)
    return _hd95_from_distances(*surface_distances(p, g, spacing, crop=crop, method=method), mode)


# --------------------------------------------------------------------------------------------
# one case, many regions


def _metric_value(
    name: str,
    p: np.ndarray,
    g: np.ndarray,
    counts: _Counts,
    spacing: tuple[float, ...],
    policy: MetricPolicy,
) -> float:
    if name == "dice":
        return _dice(counts, policy.empty)
    if name == "iou":
        return _iou(counts, policy.empty)
    if name == "sensitivity":
        return _sensitivity(counts, policy.empty)
    if name == "specificity":
        return _specificity(counts, policy.empty)
    if name == "hd95":
        p_empty, g_empty = counts.tp + counts.fp == 0, counts.tp + counts.fn == 0
        if p_empty or g_empty:
            return _hd95_empty(p_empty, g_empty, policy.empty, policy.max_distance)
        return _hd95_from_distances(*surface_distances(p, g, spacing), policy.hd95_mode)
    if name == "ref_voxels":
        return float(counts.tp + counts.fn)
    if name == "pred_voxels":
        return float(counts.tp + counts.fp)
    raise ValueError(f"unknown metric {name!r}; valid: {', '.join(VALID_METRICS)}")


def etpp(et_pred: Any, min_voxels: int = ETPP_MIN_VOXELS) -> np.ndarray:
    """RFNet-family ET post-processing: the predicted ET mask, emptied if it has fewer than
    ``min_voxels`` voxels."""
    p = _as_bool(et_pred)
    return np.zeros_like(p) if np.count_nonzero(p) < min_voxels else p


def region_metrics(
    pred: Mapping[str, Any],
    ref: Mapping[str, Any],
    spacing: float | Sequence[float] | None,
    policy: MetricPolicy | None = None,
    metrics: Sequence[str] = METRICS,
    etpp: bool = False,
) -> list[dict[str, Any]]:
    """All metrics of all regions of one case.

    Args:
        pred, ref: region name → mask (e.g. ``WT``, ``TC``, ``ET``), same keys, masks of one
            shape (X, Y, Z) on the native grid.
        spacing: voxel size (mm) per axis.
        policy: conventions; ``None`` means ``MetricPolicy()`` (penalty, pooled, 373.1287 mm).
        metrics: names from :data:`VALID_METRICS`, in output order.
        etpp: also report region ``ETpp`` (the ET prediction emptied below
            :data:`ETPP_MIN_VOXELS` voxels, scored against the ET reference); needs ``ET``.

    Returns:
        ``[{"region", "metric", "value"}, ...]`` for each region (in ``pred`` order, then
        ``ETpp``) and each metric (in ``metrics`` order); values are floats.
    """
    policy = policy if policy is not None else MetricPolicy()
    for m in metrics:
        _check_choice("metric", m, VALID_METRICS)
    if set(pred) != set(ref):
        raise ValueError(f"prediction regions {sorted(pred)} differ from reference {sorted(ref)}")
    pairs: list[tuple[str, np.ndarray, np.ndarray]] = []
    for region in pred:
        p, g = _pair(pred[region], ref[region])
        pairs.append((region, p, g))
    if etpp:
        if "ET" not in pred:
            raise ValueError("etpp=True needs an 'ET' region")
        _, p_et, g_et = next(x for x in pairs if x[0] == "ET")
        pairs.append(("ETpp", _etpp(p_et), g_et))
    rows: list[dict[str, Any]] = []
    for region, p, g in pairs:
        sp = _spacing(spacing, p.ndim)
        counts = _counts(p, g)
        for m in metrics:
            rows.append(
                {"region": region, "metric": m, "value": _metric_value(m, p, g, counts, sp, policy)}
            )
    return rows


_etpp = etpp  # region_metrics' ``etpp`` flag shadows the function name inside it


# --------------------------------------------------------------------------------------------
# many units in parallel


def score_many(
    items: Iterable[T],
    n_jobs: int = 1,
    fn: Callable[[T], R] | None = None,
    *,
    backend: str = "loky",
) -> list[R]:
    """Apply ``fn`` to every work item, in parallel with joblib, results in input order.

    Args:
        items: work items, e.g. one per (case, subset).
        n_jobs: joblib workers; 1 runs in this process. The results do not depend on it.
        fn: a picklable function of one item. ``None`` uses :func:`score_unit`.
        backend: joblib backend (``"loky"``: worker processes, ``fn`` and items are pickled).
    """
    func: Callable[[Any], Any] = fn if fn is not None else score_unit
    items = list(items)
    if n_jobs == 1 or len(items) <= 1:
        return [func(item) for item in items]
    from joblib import Parallel, delayed

    return list(Parallel(n_jobs=n_jobs, backend=backend)(delayed(func)(it) for it in items))


def score_unit(unit: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Score one (case, subset) unit given as a mapping.

    Keys: ``pred`` and ``ref`` (region → mask), ``spacing``; optional ``policy``
    (:class:`MetricPolicy`), ``metrics``, ``etpp``. Every other key (``case``, ``subset``, ...)
    is copied into each returned row, followed by the policy columns
    (:meth:`MetricPolicy.as_dict`).
    """
    policy = unit.get("policy") or MetricPolicy()
    reserved = {"pred", "ref", "spacing", "policy", "metrics", "etpp"}
    extra = {k: v for k, v in unit.items() if k not in reserved}
    rows = region_metrics(
        unit["pred"],
        unit["ref"],
        unit["spacing"],
        policy,
        metrics=unit.get("metrics", METRICS),
        etpp=bool(unit.get("etpp", False)),
    )
    return [{**extra, **row, **policy.as_dict()} for row in rows]


__all__ = [
    "COUNT_METRICS",
    "DEFAULT_MAX_DISTANCE",
    "EMPTY_POLICIES",
    "ETPP_MIN_VOXELS",
    "HD95_MODES",
    "METRICS",
    "MetricPolicy",
    "SURFACE_METHODS",
    "VALID_METRICS",
    "dice",
    "etpp",
    "hd95",
    "iou",
    "region_metrics",
    "score_many",
    "score_unit",
    "sensitivity",
    "specificity",
    "surface_distances",
]
