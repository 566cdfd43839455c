"""The one scorer: a case's predicted region masks against its reference, as tidy rows.

The evaluator (:mod:`mmbench.benchmark.evaluator`), the validation of checkpoint selection
(:mod:`mmbench.benchmark.validation`) and ``mmbench evaluate`` for outside predictions
(:mod:`mmbench.reporting.external`) all score through :func:`score_case`, so a number means the
same thing wherever it comes from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmbench.config import Config
from mmbench.metrics import METRICS, MetricPolicy, score_many
from mmbench.regions import REGIONS, region_masks


@dataclass(frozen=True)
class ScoringSettings:
    """How masks are scored.

    Attributes:
        policy: empty-mask and HD95 conventions (stamped on every row).
        metrics: metric names per region, in row order.
        etpp: also score region ``ETpp`` (ET emptied below 500 predicted voxels).
        n_jobs: joblib workers scoring the subsets of a case (results do not depend on it).
    """

    policy: MetricPolicy = MetricPolicy()
    metrics: tuple[str, ...] = METRICS
    etpp: bool = False
    n_jobs: int = 1

    @classmethod
    def from_config(cls, config: Config) -> ScoringSettings:
        ev = config.eval
        return cls(
            policy=MetricPolicy(
                empty=ev.empty_policy, hd95_mode=ev.hd95_mode, max_distance=ev.max_distance
            ),
            metrics=tuple(ev.metrics),
            etpp=ev.etpp,
            n_jobs=ev.n_jobs,
        )


@dataclass(frozen=True)
class Reference:
    """A case's reference region masks and voxel size.

    Attributes:
        case: the case id.
        masks: region → boolean mask (X×Y×Z), :data:`~mmbench.regions.REGIONS` order.
        spacing: voxel size per axis, mm.
        path: the label file, where the masks come from one.
    """

    case: str
    masks: dict[str, np.ndarray]
    spacing: tuple[float, ...]
    path: Path | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(next(iter(self.masks.values())).shape)


def load_reference(
    case: str,
    label_path: str | Path,
    region_values: Mapping[str, Sequence[int]],
    regions: Sequence[str] = REGIONS,
) -> Reference:
    """The reference of ``case`` from its label file (values → regions by ``region_values``,
    the dataset's :attr:`~mmbench.datasets.DatasetSpec.regions`; spacing from its header)."""
    import nibabel as nib

    img = nib.load(str(label_path))
    label = np.asanyarray(img.dataobj)
    spacing = tuple(float(z) for z in img.header.get_zooms()[:3])
    return Reference(case, region_masks(label, region_values, regions), spacing, Path(label_path))


def score_case(
    reference: Reference,
    predictions: Mapping[str, Mapping[str, np.ndarray]],
    settings: ScoringSettings,
    key: Mapping[str, Any],
    extra: Sequence[tuple[str, str, str, float]] = (),
) -> list[dict[str, Any]]:
    """Score the predictions of one case, one subset at a time.

    Args:
        reference: the case's reference (:func:`load_reference`).
        predictions: subset name → region → boolean mask on the reference's grid.
        settings: metrics and conventions.
        key: columns every row carries (``dataset``, ``method``, ``seed``, ``fold``).
        extra: further rows ``(subset, region, metric, value)`` (e.g. the PSNR of a
            synthesised modality), stamped like the others.

    Returns:
        Rows with :data:`~mmbench.benchmark.schema.RESULT_COLUMNS`: every metric of every region
        per subset (in ``predictions`` order), then per subset the reference size
        (``ref_voxels``) of each region and that subset's ``extra`` rows.

    Raises:
        ValueError: a prediction's grid differs from the reference's.
    """
    units = []
    for subset, masks in predictions.items():
        for region, mask in masks.items():
            if tuple(np.shape(mask)) != reference.shape:
                raise ValueError(
                    f"{reference.case} {subset} {region}: prediction grid {np.shape(mask)} "
                    f"differs from the reference {reference.shape}"
                    + (f" ({reference.path})" if reference.path else "")
                )
        units.append(
            {
                **key,
                "case": reference.case,
                "subset": subset,
                "pred": {r: masks[r] for r in reference.masks},
                "ref": reference.masks,
                "spacing": reference.spacing,
                "policy": settings.policy,
                "metrics": settings.metrics,
                "etpp": settings.etpp,
            }
        )
    rows = [r for unit_rows in score_many(units, n_jobs=settings.n_jobs) for r in unit_rows]
    stamp = settings.policy.as_dict()
    for subset in predictions:
        unit_key = {**key, "case": reference.case, "subset": subset}
        for region, mask in reference.masks.items():
            rows.append(
                {
                    **unit_key,
                    "region": region,
                    "metric": "ref_voxels",
                    "value": float(mask.sum()),
                    **stamp,
                }
            )
        for sub, region, metric, value in extra:
            if sub == subset:
                rows.append(
                    {**unit_key, "region": region, "metric": metric, "value": float(value), **stamp}
                )
    return rows


def mean_dice(rows: Sequence[Mapping[str, Any]]) -> float:
    """Mean of the ``dice`` rows (the checkpoint-selection score)."""
    values = [float(r["value"]) for r in rows if r["metric"] == "dice"]
    return float(np.mean(values)) if values else float("nan")


__all__ = [
    "Reference",
    "ScoringSettings",
    "load_reference",
    "mean_dice",
    "score_case",
]
