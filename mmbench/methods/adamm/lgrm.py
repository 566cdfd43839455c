"""LGRM: Lesion-presence-Guided Reliability Module, and the segmentation Dice it weights, as in
the released code (Quanato607/AdaMM@f2e1733: the ``cls_*`` head of ``models/AdaMMKD.py``,
``unet_Co_loss`` in ``losses.py``, the gate in ``train_adamm_divide.py``).

- Presence head on u2 (full-resolution decoder feature after the c1 skip, N×C0×D×H×W):
  conv 3³ C0→C0 (bias) → BatchNorm3d → ReLU → conv 1×1 C0→3 → global average pool → N×3 logits;
  sigmoid = presence probabilities p̂ of NETC, ED (SNFH), ET. The teacher and the student have
  one each (7,011 parameters at C0 = 16). Because the pool comes last and the 1×1 conv is linear,
  the logit is the mean of a per-voxel presence-logit map (:meth:`PresenceHead.logit_map`), which
  is what lets the gate be decided on a whole volume blended from sliding windows.
- Target y_c = 1 if any voxel of label c is in the crop (:func:`presence_targets`).
- Losses: BCE(p̂_T, y) + BCE(p̂_S, y) on probabilities (``nn.BCELoss``, log clamped at −100);
  each label's per-sample Dice loss 1 − 2Σpy/(Σp² + Σy² + 1e-7) multiplied by 1 + |p̂_c − y_c|
  (not detached), then averaged over the batch.
- Gate (:func:`presence_gate`): a label whose p̂ ≤ 0.5 is erased from the whole prediction.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

DICE_EPS = 1e-7
GATE_THRESHOLD = 0.5


class PresenceHead(nn.Module):
    """N×C0×D×H×W → N×3 presence logits (see the module docstring)."""

    def __init__(self, width: int, labels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(width, width, 3, padding=1)
        self.bn = nn.BatchNorm3d(width)
        self.conv2 = nn.Conv3d(width, labels, 1)

    def logit_map(self, u2: Tensor) -> Tensor:
        """Per-voxel presence logits N×3×D×H×W (their spatial mean is :meth:`forward`)."""
        return self.conv2(F.relu(self.bn(self.conv1(u2))))

    def forward(self, u2: Tensor) -> Tensor:
        return self.logit_map(u2).mean((2, 3, 4))


def presence_targets(compartments: Tensor) -> Tensor:
    """N×3×D×H×W binary labels → N×3 float: is any voxel of the label present."""
    return (compartments.flatten(2) > 0.5).any(2).float()


def dice_loss_per_sample(prob: Tensor, target: Tensor) -> Tensor:
    """Per-sample, per-label Dice loss 1 − 2Σpy/(Σp² + Σy² + 1e-7): N×L×… → N×L (fp32)."""
    p, y = prob.flatten(2).float(), target.flatten(2).float()
    return 1 - 2 * (p * y).sum(2) / (p.pow(2).sum(2) + y.pow(2).sum(2) + DICE_EPS)


def reliability_weights(presence_prob: Tensor, targets: Tensor) -> Tensor:
    """1 + |p̂ − y|: N×3 → N×3 (not detached)."""
    return (presence_prob.float() - targets.float()).abs() + 1.0


def presence_bce(presence_prob: Tensor, targets: Tensor) -> Tensor:
    """BCE of N×3 presence probabilities against N×3 targets (log clamped at −100) → scalar."""
    with torch.autocast(presence_prob.device.type, enabled=False):
        return F.binary_cross_entropy(presence_prob.float(), targets.float())


def presence_gate(prob: Tensor, presence_prob: Tensor, threshold: float = GATE_THRESHOLD) -> Tensor:
    """Erase labels whose presence probability ≤ threshold.

    Args:
        prob: N×L×D×H×W label probabilities (L ≥ 3; the first three are gated).
        presence_prob: N×3 presence probabilities.
    """
    keep = (presence_prob > threshold).to(prob.dtype)
    gated = prob[:, : keep.shape[1]] * keep.view(*keep.shape, *([1] * (prob.ndim - 2)))
    return torch.cat([gated, prob[:, keep.shape[1] :]], 1)
