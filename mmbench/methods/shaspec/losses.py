"""ShaSpec's training losses (official ``loss_Dual.py`` and ``train_SS.py``).

On logits Z and binary targets Y (both N×3×D×H×W, the same channel order), p = sigmoid(Z):

- :func:`dice_loss` (``DiceLoss4BraTS``): mean over channels c of
  1 − mean_n 2·Σ(p·y) / (Σp + Σy + 1) (sums over voxels, no squares, +1 in the denominator only).
- :func:`bce_loss` (``BCELoss4BraTS``): the *sum* over channels of BCE-with-logits, each a mean
  over all voxels of all samples.
- :func:`shared_l1`: L1(s₀,s₁) + L1(s₁,s₂) + L1(s₂,s₃) + L1(s₃,s₀) over the four slots' shared
  bottleneck features (missing slots included), each a mean absolute difference.
- :func:`domain_loss`: cross-entropy of the domain classifier's logits, target = slot index.
- ``total = dice + bce + α·shared_l1 + β·domain`` with α = 0.1, β = 0.02.

The losses keep the dtype of their inputs (the golden fixture is compared in float64).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F

ALIGN_WEIGHT = 0.1
"""Official α, the weight of the shared-feature L1 term."""

DOMAIN_WEIGHT = 0.02
"""Official β, the weight of the domain-classification term."""

DICE_SMOOTH = 1.0


def dice_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Official ``DiceLoss4BraTS``; a scalar."""
    p = torch.sigmoid(logits).flatten(2)  # N×C×V
    y = target.to(p.dtype).flatten(2)
    score = 2 * (p * y).sum(2) / (p.sum(2) + y.sum(2) + DICE_SMOOTH)  # N×C
    return (1 - score.mean(0)).mean()


def bce_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Official ``BCELoss4BraTS``: per-channel BCE-with-logits means, summed; a scalar."""
    y = target.to(logits.dtype)
    per_channel = [
        F.binary_cross_entropy_with_logits(logits[:, c], y[:, c]) for c in range(logits.shape[1])
    ]
    return torch.stack(per_channel).sum()


def shared_l1(shared: Tensor) -> Tensor:
    """Sum of the L1 means between cyclically adjacent slots; ``shared`` is N×K×A×d×h×w."""
    k = shared.shape[1]
    return torch.stack([F.l1_loss(shared[:, s], shared[:, (s + 1) % k]) for s in range(k)]).sum()


def domain_loss(logits: Tensor) -> Tensor:
    """Cross-entropy of N×K×K domain logits (sample, slot, class) with target class = slot."""
    n, k = logits.shape[:2]
    labels = torch.arange(k, device=logits.device).repeat(n)
    return F.cross_entropy(logits.reshape(n * k, -1), labels)


@dataclass
class ShaSpecLosses:
    """The official loss terms (scalars) and their weighted total."""

    dice: Tensor
    bce: Tensor
    shared_l1: Tensor
    domain: Tensor
    total: Tensor


def shaspec_losses(
    logits: Tensor,
    target: Tensor,
    shared: Tensor,
    domain_logits: Tensor,
    align_weight: float = ALIGN_WEIGHT,
    domain_weight: float = DOMAIN_WEIGHT,
) -> ShaSpecLosses:
    """Every term; see the module docstring for the shapes."""
    dice = dice_loss(logits, target)
    bce = bce_loss(logits, target)
    l1 = shared_l1(shared)
    dom = domain_loss(domain_logits)
    total = dice + bce + align_weight * l1 + domain_weight * dom
    return ShaSpecLosses(dice, bce, l1, dom, total)


__all__ = [
    "ALIGN_WEIGHT",
    "DOMAIN_WEIGHT",
    "ShaSpecLosses",
    "bce_loss",
    "dice_loss",
    "domain_loss",
    "shaspec_losses",
    "shared_l1",
]
