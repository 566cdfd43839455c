"""Segmentation losses shared by the strategies (MONAI's Dice plus BCE on region channels)."""

from __future__ import annotations

import torch
from monai.losses import DiceLoss
from torch import Tensor
from torch.nn import functional as F

_dice = DiceLoss(sigmoid=True, smooth_nr=1e-5, smooth_dr=1e-5)


def dice_bce_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Soft Dice (per sample and channel, averaged) + binary cross-entropy.

    Args:
        logits: N×C×D×H×W raw scores (sigmoid per channel).
        target: N×C×D×H×W binary targets (e.g. WT, TC, ET regions).
    """
    target = target.to(logits.dtype)
    return _dice(logits.float(), target.float()) + F.binary_cross_entropy_with_logits(
        logits.float(), target.float()
    )


def regions_from_compartments(prob: Tensor) -> Tensor:
    """Region probabilities WT, TC, ET from disjoint label probabilities NETC, ED, ET.

    A region is present where any of its labels is; taking the maximum keeps the 0.5 threshold
    equivalent to "some label above 0.5". Shapes: N×3×… → N×3×….
    """
    netc, ed, et = prob[:, 0], prob[:, 1], prob[:, 2]
    wt = torch.maximum(torch.maximum(netc, ed), et)
    tc = torch.maximum(netc, et)
    return torch.stack([wt, tc, et], dim=1)
