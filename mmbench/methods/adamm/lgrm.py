"""LGRM: Lesion-presence-Guided Reliability Module.

- Presence head on u2 (full-resolution decoder feature, N×C0×D×H×W): conv 3³ C0→C0 → GroupNorm →
  ReLU → conv 1×1 C0→3 → global average pool → N×3 logits; sigmoid = presence probabilities p̂ for
  NETC, ED (SNFH), ET. One head for the teacher and one for the student (7,011 parameters each at
  C0 = 16). The spec says "norm"; GroupNorm as in the backbone.
- Target y_c = 1 if any voxel of label c is in the crop (:func:`presence_targets`).
- Losses: BCE(p̂_T, y) + BCE(p̂_S, y) (:func:`presence_bce`); each label's per-sample Dice loss
  weighted by 1 + |p̂_c − y_c| (:func:`reliability_weights`). The weight is not detached (the spec
  does not say it is), so the Dice term also pushes p̂ towards y.
- Inference gate (:func:`presence_gate`): a label whose p̂ ≤ 0.5 is erased from the whole
  prediction (its probability set to 0 everywhere). With sliding-window inference the gate acts per
  window, as the reference's acts on the crop it sees.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from mmbench.methods.adamm.backbone import group_norm


class PresenceHead(nn.Module):
    """N×C0×D×H×W → N×3 presence logits (see the module docstring)."""

    def __init__(self, width: int, labels: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv3d(width, width, 3, padding=1),
            group_norm(width),
            nn.ReLU(inplace=False),
            nn.Conv3d(width, labels, 1),
        )

    def forward(self, u2: Tensor) -> Tensor:
        return self.body(u2).mean((2, 3, 4))


def presence_targets(compartments: Tensor) -> Tensor:
    """N×3×D×H×W binary labels → N×3 float: is any voxel of the label present."""
    return (compartments.flatten(2) > 0.5).any(2).to(compartments.dtype)


def soft_dice_loss(prob: Tensor, target: Tensor) -> Tensor:
    """Per-sample, per-label Dice loss 1 − 2Σpy/(Σp² + Σy² + 1e-7): N×3×… → N×3."""
    p, y = prob.flatten(2).float(), target.flatten(2).float()
    return 1 - 2 * (p * y).sum(2) / (p.pow(2).sum(2) + y.pow(2).sum(2) + 1e-7)


def reliability_weights(presence_logits: Tensor, targets: Tensor) -> Tensor:
    """1 + |p̂ − y|: N×3 → N×3."""
    return 1 + (presence_logits.sigmoid() - targets).abs()


def presence_bce(presence_logits: Tensor, targets: Tensor) -> Tensor:
    """BCE of N×3 presence logits against N×3 targets → scalar."""
    return F.binary_cross_entropy_with_logits(presence_logits.float(), targets.float())


def presence_gate(prob: Tensor, presence_prob: Tensor, threshold: float = 0.5) -> Tensor:
    """Erase labels whose presence probability ≤ threshold.

    Args:
        prob: N×3×D×H×W label probabilities.
        presence_prob: N×3 presence probabilities.
    """
    keep = (presence_prob > threshold).to(prob.dtype)
    return prob * keep.view(*keep.shape, *([1] * (prob.ndim - 2)))
