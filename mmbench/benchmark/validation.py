"""The validation score used to select checkpoints: mean Dice on the val split.

Only the val split is ever read here; the test split is scored once, by the evaluator, after
the weights are chosen.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from mmbench.benchmark.evaluator import predict_volume
from mmbench.benchmark.scorer import Reference, ScoringSettings, mean_dice, score_case
from mmbench.config import Config
from mmbench.methods.base import Strategy
from mmbench.regions import REGIONS
from mmbench.subsets import ALL_SUBSETS, FULL, Subset, as_subset

#: Validation scores Dice under the default conventions, whatever the report's settings.
VALIDATION_SCORING = ScoringSettings(metrics=("dice",))


def validation_subsets(which: Any) -> list[Subset]:
    """``train.val_subsets``: ``"all"`` (the 15), ``"full"``, or a list of subset names."""
    if which == "all":
        return list(ALL_SUBSETS)
    if which == "full":
        return [FULL]
    return [as_subset(s) for s in which]


def make_validator(val_items: Any, config: Config) -> Callable[[Strategy], float] | None:
    """Mean Dice over val cases × ``train.val_subsets`` × (WT, TC, ET), on the preprocessed
    grid; ``None`` when the val split is empty (no selection)."""
    if len(val_items) == 0:
        return None
    subsets: Sequence[Subset] = validation_subsets(config.train.val_subsets)
    window = config.window
    threshold = config.eval.threshold
    sw_batch, overlap = config.eval.sw_batch_size, config.eval.sw_overlap

    def validate(strategy: Strategy) -> float:
        device = next(strategy.parameters()).device
        rows: list[dict[str, Any]] = []
        with torch.inference_mode():
            for i in range(len(val_items)):
                item = val_items[i]
                image = torch.as_tensor(np.asarray(item["image"]), dtype=torch.float32)[None]
                image = image.to(device)
                ref = np.asarray(item["regions"]).astype(bool)
                reference = Reference(
                    str(item.get("id", i)), {r: ref[k] for k, r in enumerate(REGIONS)}, (1.0,) * 3
                )
                predictions = {}
                for subset in subsets:
                    prob = predict_volume(strategy, image, subset, window, sw_batch, overlap)
                    pred = (prob[0] > threshold).cpu().numpy()
                    predictions[subset.name] = {r: pred[k] for k, r in enumerate(REGIONS)}
                rows += score_case(reference, predictions, VALIDATION_SCORING, {})
        return mean_dice(rows)

    return validate


__all__ = ["VALIDATION_SCORING", "make_validator", "validation_subsets"]
