"""mmFormer's training losses (official ``utils/criterions.py`` and ``train.py``), on softmax
probabilities P (N×L×D×H×W) and one-hot targets Y (N×L×D×H×W, float).

- :func:`weighted_cross_entropy`: per sample and class the weight w = 1 − (the class's voxel
  fraction in that sample); loss = mean over (N, D, H, W) of Σ_c −w_c · Y_c · log(clamp(P_c,
  0.005, 1)). Background included.
- Dice: 1 − mean over classes of 2·Σ P_c Y_c / (Σ P_c + Σ Y_c + 1e-7), sums over the whole batch
  (MONAI :class:`~monai.losses.DiceLoss` with ``batch=True``, no numerator smoothing).
- ``total = fuse + Σ_modalities sep + Σ_levels deep`` with every weight 1, each term CE + Dice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from monai.losses import DiceLoss
from torch import Tensor

PROBABILITY_FLOOR = 0.005
"""Official clamp of the probabilities inside the log."""

DICE_EPS = 1e-7

_dice = DiceLoss(include_background=True, batch=True, smooth_nr=0.0, smooth_dr=DICE_EPS)


def one_hot_classes(compartments: Tensor) -> Tensor:
    """One-hot 4-class targets from mmbench's disjoint compartments.

    Args:
        compartments: N×3×D×H×W binary NETC (NCR/NET), ED, ET; background where none is set.

    Returns:
        N×4×D×H×W float: background, NCR/NET, edema, enhancing (the official label order).
    """
    comp = compartments.float()
    background = (1 - comp.sum(1, keepdim=True)).clamp_min(0)
    return torch.cat([background, comp], dim=1)


def weighted_cross_entropy(prob: Tensor, target: Tensor) -> Tensor:
    """Official ``softmax_weighted_loss``; see the module docstring. Returns a scalar."""
    prob, target = prob.float(), target.float()
    counts = target.flatten(2).sum(2)  # N×L
    weight = 1.0 - counts / counts.sum(1, keepdim=True)
    weight = weight.reshape(*weight.shape, *([1] * (prob.ndim - 2)))
    log_p = torch.log(prob.clamp(PROBABILITY_FLOOR, 1.0))
    return (-(weight * target * log_p)).sum(1).mean()


def dice_loss(prob: Tensor, target: Tensor) -> Tensor:
    """Official ``dice_loss`` (batch-wide sums, background included); a scalar."""
    return _dice(prob.float(), target.float())


@dataclass
class MMFormerLosses:
    """Every term of the official loss (scalars; the sums accumulate in the official order)."""

    fuse_cross: Tensor
    fuse_dice: Tensor
    sep_cross: list[Tensor]
    sep_dice: list[Tensor]
    deep_cross: list[Tensor]
    deep_dice: list[Tensor]

    @property
    def fuse(self) -> Tensor:
        return self.fuse_cross + self.fuse_dice

    @staticmethod
    def _accumulate(terms: Sequence[Tensor]) -> Tensor:
        total = torch.zeros((), dtype=torch.float32, device=terms[0].device)
        for t in terms:
            total = total + t
        return total

    @property
    def sep_cross_sum(self) -> Tensor:
        return self._accumulate(self.sep_cross)

    @property
    def sep_dice_sum(self) -> Tensor:
        return self._accumulate(self.sep_dice)

    @property
    def sep(self) -> Tensor:
        return self.sep_cross_sum + self.sep_dice_sum

    @property
    def deep_cross_sum(self) -> Tensor:
        return self._accumulate(self.deep_cross)

    @property
    def deep_dice_sum(self) -> Tensor:
        return self._accumulate(self.deep_dice)

    @property
    def deep(self) -> Tensor:
        return self.deep_cross_sum + self.deep_dice_sum

    @property
    def total(self) -> Tensor:
        return self.fuse + self.sep + self.deep


def mmformer_losses(
    fuse_prob: Tensor,
    sep_probs: Sequence[Tensor],
    deep_probs: Sequence[Tensor],
    target: Tensor,
) -> MMFormerLosses:
    """CE + Dice of the fused output, of each per-modality output and of each upsampled
    deep-supervision output, all against the full-resolution one-hot ``target``."""
    return MMFormerLosses(
        fuse_cross=weighted_cross_entropy(fuse_prob, target),
        fuse_dice=dice_loss(fuse_prob, target),
        sep_cross=[weighted_cross_entropy(p, target) for p in sep_probs],
        sep_dice=[dice_loss(p, target) for p in sep_probs],
        deep_cross=[weighted_cross_entropy(p, target) for p in deep_probs],
        deep_dice=[dice_loss(p, target) for p in deep_probs],
    )


def official_loss_values(terms: MMFormerLosses, modalities: Sequence[str]) -> dict[str, float]:
    """Every term under the golden fixtures' names (shared by the mmFormer and M2FTrans
    ports): ``sep_cross_<m>``/``sep_dice_<m>`` for the official modality names ``modalities``
    (slot order), ``prm_cross_<j>``/``prm_dice_<j>`` (j from 1), the fused terms and the sums."""
    out: dict[str, float] = {}
    for m, ce, dice in zip(modalities, terms.sep_cross, terms.sep_dice):
        out[f"sep_cross_{m}"], out[f"sep_dice_{m}"] = float(ce), float(dice)
    for j, (ce, dice) in enumerate(zip(terms.deep_cross, terms.deep_dice), start=1):
        out[f"prm_cross_{j}"], out[f"prm_dice_{j}"] = float(ce), float(dice)
    out.update(
        fuse_cross=float(terms.fuse_cross),
        fuse_dice=float(terms.fuse_dice),
        fuse_loss=float(terms.fuse),
        sep_cross=float(terms.sep_cross_sum),
        sep_dice=float(terms.sep_dice_sum),
        sep_loss=float(terms.sep),
        prm_cross=float(terms.deep_cross_sum),
        prm_dice=float(terms.deep_dice_sum),
        prm_loss=float(terms.deep),
        total=float(terms.total),
    )
    return out


__all__ = [
    "MMFormerLosses",
    "dice_loss",
    "mmformer_losses",
    "official_loss_values",
    "one_hot_classes",
    "weighted_cross_entropy",
]
