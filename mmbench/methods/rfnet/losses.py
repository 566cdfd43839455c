"""RFNet's training losses (official ``utils/criterions.py`` and ``train.py``) on softmax
probabilities P (N×L×D×H×W) and one-hot targets Y (N×L×D×H×W, float).

The criterions are those of mmFormer, whose code took them from RFNet unchanged, so the
functions are shared (:mod:`mmbench.methods.mmformer.losses`): weighted cross-entropy (per
sample and class the weight 1 − the class's voxel fraction, log of probabilities clamped at
0.005, mean over voxels) and Dice (batch-wide sums, background included, eps 1e-7).

``total = fuse_weight · fuse + Σ_4 modalities sep + Σ_4 levels prm`` with each term CE + Dice.
The official ``fuse_weight`` is 0 before ``region_fusion_start_epoch`` (20 of 300 epochs in
``job.sh``) and 1 after it (:func:`fusion_weight`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from mmbench.methods.mmformer.losses import dice_loss, one_hot_classes, weighted_cross_entropy

PUBLISHED_EPOCHS = 300
"""Official ``num_epochs`` (``job.sh``)."""
PUBLISHED_FUSION_START_EPOCH = 20
"""Official ``region_fusion_start_epoch`` (``job.sh``; ``train.py``'s own default is 100)."""


def published_epoch(step: int, total_steps: int, epochs: int = PUBLISHED_EPOCHS) -> int:
    """The official epoch (0-based) that mmbench step ``step`` (1-based) of ``total_steps``
    falls in when the run's steps are shared equally among ``epochs`` epochs:
    ``⌊epochs · (step − 1) / total_steps⌋``, at most ``epochs − 1``."""
    return min(epochs - 1, max(0, step - 1) * epochs // max(1, total_steps))


def fusion_weight(
    step: int, total_steps: int, start_epoch: int = PUBLISHED_FUSION_START_EPOCH
) -> float:
    """Weight of the fused loss at mmbench step ``step`` (1-based) of ``total_steps``: 0 while
    the step's official epoch (:func:`published_epoch`) is below ``start_epoch``, 1 after
    (official: 0 for epochs 0-19 of 300, i.e. the first 1/15 of the run)."""
    return 0.0 if published_epoch(step, total_steps) < start_epoch else 1.0


def _accumulate(terms: Sequence[Tensor]) -> Tensor:
    # The official sums start from a zero tensor and add the terms in order.
    total = torch.zeros((), dtype=torch.float32, device=terms[0].device)
    for t in terms:
        total = total + t
    return total


@dataclass
class RFNetLosses:
    """Every term of the official loss (scalars, accumulated in the official order)."""

    fuse_cross: Tensor
    fuse_dice: Tensor
    sep_cross: list[Tensor]
    sep_dice: list[Tensor]
    prm_cross: list[Tensor]
    prm_dice: list[Tensor]

    @property
    def fuse(self) -> Tensor:
        return self.fuse_cross + self.fuse_dice

    @property
    def sep_cross_sum(self) -> Tensor:
        return _accumulate(self.sep_cross)

    @property
    def sep_dice_sum(self) -> Tensor:
        return _accumulate(self.sep_dice)

    @property
    def sep(self) -> Tensor:
        return self.sep_cross_sum + self.sep_dice_sum

    @property
    def prm_cross_sum(self) -> Tensor:
        return _accumulate(self.prm_cross)

    @property
    def prm_dice_sum(self) -> Tensor:
        return _accumulate(self.prm_dice)

    @property
    def prm(self) -> Tensor:
        return self.prm_cross_sum + self.prm_dice_sum

    def total(self, fuse_weight: float = 1.0) -> Tensor:
        """``fuse · fuse_weight + sep + prm`` (the official order of the sum)."""
        return self.fuse * fuse_weight + self.sep + self.prm


def rfnet_losses(
    fuse_prob: Tensor,
    sep_probs: Sequence[Tensor],
    prm_probs: Sequence[Tensor],
    target: Tensor,
) -> RFNetLosses:
    """CE + Dice of the fused output, of each per-modality output and of each region map
    (upsampled to the input size), all against the full-resolution one-hot ``target``."""
    return RFNetLosses(
        fuse_cross=weighted_cross_entropy(fuse_prob, target),
        fuse_dice=dice_loss(fuse_prob, target),
        sep_cross=[weighted_cross_entropy(p, target) for p in sep_probs],
        sep_dice=[dice_loss(p, target) for p in sep_probs],
        prm_cross=[weighted_cross_entropy(p, target) for p in prm_probs],
        prm_dice=[dice_loss(p, target) for p in prm_probs],
    )


__all__ = [
    "PUBLISHED_EPOCHS",
    "PUBLISHED_FUSION_START_EPOCH",
    "RFNetLosses",
    "dice_loss",
    "fusion_weight",
    "published_epoch",
    "one_hot_classes",
    "rfnet_losses",
    "weighted_cross_entropy",
]
