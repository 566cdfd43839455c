"""The evaluator: every test case × every one of the 15 subsets, scored on the native grid.

For each case and subset: zero the absent channels, ``predict`` (MONAI sliding-window inference
with the preset's patch size), threshold, restore the prediction to the label file's grid, and
score each region with the configured :class:`~mmbench.metrics.MetricPolicy`. Rows are
added to the run's results store once per case, atomically; a rerun skips finished
(case, subset) units.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.inferers import sliding_window_inference
from tqdm.auto import tqdm

from mmbench.atomic import atomic_save_nifti
from mmbench.benchmark.results import ResultsStore
from mmbench.benchmark.schema import prediction_file_name
from mmbench.benchmark.trainer import interruption_point
from mmbench.methods.base import Strategy
from mmbench.metrics import DEFAULT_MAX_DISTANCE, MetricPolicy, score_many
from mmbench.regions import REGIONS, label_from_regions, region_masks
from mmbench.subsets import ALL_SUBSETS, Subset, as_subset, zero_absent


@dataclass(frozen=True)
class EvalSettings:
    """The preset's ``eval`` section, typed.

    Attributes:
        patch_size: sliding-window size (D, H, W): ``eval.window``, by default the model's
            training crop (``model.patch_size``). Keep it equal to the crop for networks with
            instance normalisation: on the quick preset, a 48³ window over a model trained on
            32³ crops dropped full-modality WT Dice from 0.87 to 0.70 (measured on one run).
        policy: metric conventions.
        metrics: metric names to compute per region.
        threshold: probability above which a voxel is predicted in a region.
        etpp: also report region ``ETpp``.
        sw_batch_size, sw_overlap: sliding-window parameters.
        n_jobs: joblib workers scoring the 15 subsets of a case.
        save_cases: how many test cases (first in split order) get NIfTI predictions saved.
        save_subsets: the subsets saved for those cases.
    """

    patch_size: tuple[int, int, int]
    policy: MetricPolicy = MetricPolicy()
    metrics: tuple[str, ...] = ("dice", "hd95", "iou", "sensitivity", "specificity")
    threshold: float = 0.5
    etpp: bool = False
    sw_batch_size: int = 1
    sw_overlap: float = 0.25
    n_jobs: int = 1
    save_cases: int = 0
    save_subsets: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> EvalSettings:
        ev = config["eval"]
        if ev.get("extra_regions"):
            raise ValueError(
                "eval.extra_regions is not supported yet: the strategies predict WT, TC and ET "
                f"only (got {ev['extra_regions']})"
            )
        save = ev.get("save_predictions") or {}
        return cls(
            patch_size=tuple(int(v) for v in ev.get("window") or config["model"]["patch_size"]),
            policy=MetricPolicy(
                empty=ev.get("empty_policy", "penalty"),
                hd95_mode=ev.get("hd95_mode", "pooled"),
                max_distance=float(ev.get("max_distance", DEFAULT_MAX_DISTANCE)),
            ),
            metrics=tuple(ev.get("metrics") or cls.metrics),
            threshold=float(ev.get("threshold", 0.5)),
            etpp=bool(ev.get("etpp", False)),
            sw_batch_size=int(ev.get("sw_batch_size", 1)),
            sw_overlap=float(ev.get("sw_overlap", 0.25)),
            n_jobs=int(ev.get("n_jobs", 1)),
            save_cases=int(save.get("cases", 0) or 0),
            save_subsets=tuple(as_subset(s).name for s in save.get("subsets") or ()),
        )


def predict_volume(
    strategy: Strategy,
    image: torch.Tensor,
    subset: Subset,
    patch_size: Sequence[int],
    sw_batch_size: int = 1,
    overlap: float = 0.25,
) -> torch.Tensor:
    """Region probabilities for whole volumes.

    Args:
        image: N×4×D×H×W, canonical order (absent channels are zeroed here whatever they hold).
        subset: the available modalities.

    Returns:
        N×3×D×H×W probabilities (WT, TC, ET) on ``image``'s device, after the strategy's
        whole-volume :meth:`~mmbench.methods.Strategy.postprocess`.
    """
    x = zero_absent(image, subset)
    available = subset.available

    def predictor(window: torch.Tensor) -> torch.Tensor:
        return strategy.predict(window, available)

    # MONAI pads volumes smaller than the window and tiles larger ones; one window when equal.
    prob = sliding_window_inference(
        x,
        roi_size=tuple(int(p) for p in patch_size),
        sw_batch_size=sw_batch_size,
        predictor=predictor,
        overlap=overlap,
        mode="gaussian",
        padding_mode="constant",
    )
    return strategy.postprocess(prob, available)


class Evaluator:
    """Scores a trained strategy on the test cases.

    Args:
        strategy: the trained model (its device is used).
        settings: see :class:`EvalSettings`.
        store: the run's results store.
        key: the columns every row carries (dataset, method, seed, fold).
        region_labels: the dataset's region → label values mapping.
        predictions_dir: where saved NIfTI predictions go.
    """

    def __init__(
        self,
        strategy: Strategy,
        settings: EvalSettings,
        store: ResultsStore,
        key: Mapping[str, Any],
        region_labels: Mapping[str, Sequence[int]],
        predictions_dir: Path | None = None,
        progress: bool = True,
    ) -> None:
        self.strategy = strategy
        self.settings = settings
        self.store = store
        self.key = dict(key)
        self.region_labels = region_labels
        self.predictions_dir = predictions_dir
        self.progress = progress

    @property
    def device(self) -> torch.device:
        try:
            return next(self.strategy.parameters()).device
        except StopIteration:
            return torch.device("cpu")

    def run(
        self,
        case_ids: Sequence[str],
        load_case: Callable[[str], Mapping[str, Any]],
        subsets: Iterable[Subset] = ALL_SUBSETS,
    ) -> int:
        """Evaluate every (case, subset) unit not already in the store; returns units scored.

        ``load_case(case_id)`` returns the preprocessed item (``image``, ``label`` path meta and
        the native-grid bookkeeping of :func:`mmbench.datasets.build_preprocess`).
        """
        subsets = list(subsets)
        done = self.store.finished_units()
        todo = [c for c in case_ids if any((c, s.name) not in done for s in subsets)]
        self.strategy.eval()
        scored = 0
        bar = tqdm(
            todo,
            disable=not self.progress,
            leave=False,
            dynamic_ncols=True,
            desc=f"eval {self.strategy.name}",
        )
        for index, case_id in enumerate(bar):
            missing = [s for s in subsets if (case_id, s.name) not in done]
            save = case_ids.index(case_id) < self.settings.save_cases
            rows = self._evaluate_case(case_id, load_case(case_id), missing, save)
            self.store.add_rows(rows)
            scored += len(missing)
            interruption_point("eval", index + 1)
        return scored

    def _evaluate_case(
        self, case_id: str, data: Mapping[str, Any], subsets: Sequence[Subset], save: bool
    ) -> list[dict[str, Any]]:
        from mmbench.datasets import native_affine, native_spacing, restore_to_native

        s = self.settings
        label_path = _label_path(data)
        label = np.asanyarray(nib.load(str(label_path)).dataobj)
        ref = region_masks(label, self.region_labels)
        spacing = native_spacing(data)
        image = torch.as_tensor(np.asarray(data["image"]), dtype=torch.float32)[None]
        image = image.to(self.device)
        units, extra_rows = [], []
        for subset in subsets:
            with torch.inference_mode():
                prob = predict_volume(
                    self.strategy, image, subset, s.patch_size, s.sw_batch_size, s.sw_overlap
                )
                extras = (
                    self.strategy.extra_metrics(zero_absent(image, subset), image, subset.available)
                    if not subset.is_full
                    else []
                )
            binary = (prob[0] > s.threshold).cpu().numpy()
            native = restore_to_native(binary, data)
            pred = {r: native[i] for i, r in enumerate(REGIONS)}
            unit_key = {**self.key, "case": case_id, "subset": subset.name}
            units.append(
                {
                    **unit_key,
                    "pred": pred,
                    "ref": ref,
                    "spacing": spacing,
                    "policy": s.policy,
                    "metrics": s.metrics,
                    "etpp": s.etpp,
                }
            )
            policy_cols = s.policy.as_dict()
            for region in REGIONS:
                extra_rows.append(
                    {
                        **unit_key,
                        "region": region,
                        "metric": "ref_voxels",
                        "value": float(ref[region].sum()),
                        **policy_cols,
                    }
                )
            for region, metric, value in extras:
                extra_rows.append(
                    {
                        **unit_key,
                        "region": region,
                        "metric": metric,
                        "value": float(value),
                        **policy_cols,
                    }
                )
            if save and self.predictions_dir is not None and subset.name in s.save_subsets:
                out = self.predictions_dir / prediction_file_name(case_id, subset)
                img = nib.Nifti1Image(label_from_regions(*native), native_affine(data))
                atomic_save_nifti(img, out)
        rows = [r for unit_rows in score_many(units, n_jobs=s.n_jobs) for r in unit_rows]
        return rows + extra_rows


def _label_path(data: Mapping[str, Any]) -> Path:
    label = data.get("label_path") or data.get("label")
    meta = getattr(label, "meta", None)
    if meta is not None and "filename_or_obj" in meta:
        return Path(meta["filename_or_obj"])
    if isinstance(label, str | Path):
        return Path(label)
    raise KeyError("the preprocessed item carries no label file path ('label_path')")
