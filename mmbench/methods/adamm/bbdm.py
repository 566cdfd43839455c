"""BBDM: Bi-Bottleneck Distillation Module (teacher → student on style and content), plus the
prediction-consistency term and its ramp-up.

- Content: MSE(content_T, content_S) (weight 0.2 in the strategy).
- Style Gram: Gram matrices (channel×channel, normalised by C·V) of the style tensors, summed
  squared difference per sample, batch mean (weight 1e-4).
- Global style matching (GSM): for G1 = c3d, G2 = style, G3 = content of each network, cross-Gram
  matrices M12, M13, M23 (per sample, normalised by C·V); loss = Σ over the three pairs of the
  summed squared teacher–student differences, batch mean.
  ``faithful``: the released code passes one channel-concatenated tensor to a helper written for a
  list of tensors; the helper then pairs up the entries of the tensor's first axis (the samples of
  the batch) instead of the three features. We reproduce that reading: cross-Grams between pairs
  of *samples* of the concatenated feature, which is exactly zero at the reference's batch size 1.
- Adversarial alignment: :class:`StyleDiscriminator` on the style tensor. Generator side
  BCE-with-logits(D(style_S), 1) (weight 2e-4, teacher label = 1); discriminator
  BCE(D(style_T.detach()), 1) + BCE(D(style_S.detach()), 0).
- Consistency: Σ over the three label channels of MSE(sigmoid_T, sigmoid_S), weight
  10·exp(−5(1 − t)²), t = min(progress / rampup_fraction, 1) (the reference ramps over the first
  20 of 200 epochs: rampup_fraction 0.1).

Gradients of the distillation terms flow into both networks (online mutual learning, as the
teacher and student are trained jointly from scratch); the spec does not say that the teacher side
is detached.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def content_loss(content_t: Tensor, content_s: Tensor) -> Tensor:
    """MSE between N×C×… content tensors → scalar."""
    return F.mse_loss(content_s.float(), content_t.float())


def gram(x: Tensor, y: Tensor | None = None) -> Tensor:
    """(Cross-)Gram matrix per sample: N×C×… (and N×C'×…) → N×C×C', normalised by C·V."""
    y = x if y is None else y
    a, b = x.flatten(2).float(), y.flatten(2).float()
    with torch.autocast(a.device.type, enabled=False):  # fp32 even under autocast
        return a @ b.transpose(1, 2) / (a.shape[1] * a.shape[2])


def gram_loss(style_t: Tensor, style_s: Tensor) -> Tensor:
    """Summed squared difference of the Gram matrices of N×C×… style tensors, batch mean."""
    return (gram(style_t) - gram(style_s)).pow(2).sum((1, 2)).mean()


def global_style_matching(feats_t: list[Tensor], feats_s: list[Tensor]) -> Tensor:
    """GSM over [G1, G2, G3] (each N×C×D×H×W, same spatial size) → scalar.

    Σ over pairs (1,2), (1,3), (2,3) of Σ_ij (M_T − M_S)², batch mean.
    """
    total = feats_t[0].new_zeros(())
    n = len(feats_t)
    for i in range(n):
        for j in range(i + 1, n):
            diff = gram(feats_t[i], feats_t[j]) - gram(feats_s[i], feats_s[j])
            total = total + diff.pow(2).sum((1, 2)).mean()
    return total


def global_style_matching_faithful(feats_t: list[Tensor], feats_s: list[Tensor]) -> Tensor:
    """The released code's degenerate GSM (see the module docstring) → scalar (0 at batch 1)."""
    cat_t, cat_s = torch.cat(feats_t, 1), torch.cat(feats_s, 1)
    total = (cat_t.sum() + cat_s.sum()) * 0.0  # keeps the graph, so backward works at batch 1
    n = len(cat_t)  # the helper's len(list) is now the batch size
    for i in range(n):
        for j in range(i + 1, n):
            mt = gram(cat_t[i : i + 1], cat_t[j : j + 1])
            ms = gram(cat_s[i : i + 1], cat_s[j : j + 1])
            total = total + (mt - ms).pow(2).sum()
    return total


class StyleDiscriminator(nn.Module):
    """3-D discriminator on the N×8C0×… style tensor → N logits (1 = teacher).

    conv k4 s2 8C0→4C0, 4C0→8C0, 8C0→16C0 with LeakyReLU 0.2, then global average pooling and a
    1×1 conv to one logit (the reference's last conv has a crop-specific kernel; pooling makes it
    crop-independent). Inputs smaller than 8 voxels on an axis (small crops: 1/8 of the crop) are
    zero-padded to 8 so that the three stride-2 convs keep at least one voxel. 3.15 M parameters
    at C0 = 16.
    """

    MIN_SIZE = 8

    def __init__(self, channels: int) -> None:
        super().__init__()
        h = channels // 2
        self.features = nn.Sequential(
            nn.Conv3d(channels, h, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv3d(h, channels, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv3d(channels, 2 * channels, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
        )
        self.logit = nn.Conv3d(2 * channels, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        pad: list[int] = []
        for size in reversed(x.shape[2:]):
            extra = max(0, self.MIN_SIZE - size)
            pad += [extra // 2, extra - extra // 2]
        if any(pad):
            x = F.pad(x, pad)
        h = self.features(x).mean((2, 3, 4), keepdim=True)
        return self.logit(h).flatten()


def generator_adversarial_loss(disc: nn.Module, style_s: Tensor) -> Tensor:
    """BCE-with-logits(D(style_S), teacher label 1) → scalar (the student's side)."""
    logits = disc(style_s)
    logits = logits.float()
    return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))


def discriminator_loss(disc: nn.Module, style_t: Tensor, style_s: Tensor) -> Tensor:
    """BCE(D(style_T), 1) + BCE(D(style_S), 0) on detached inputs → scalar."""
    lt, ls = disc(style_t.detach()).float(), disc(style_s.detach()).float()
    return F.binary_cross_entropy_with_logits(
        lt, torch.ones_like(lt)
    ) + F.binary_cross_entropy_with_logits(ls, torch.zeros_like(ls))


def consistency_loss(prob_t: Tensor, prob_s: Tensor) -> Tensor:
    """Σ over label channels of MSE between N×3×… sigmoid outputs → scalar."""
    return (prob_t - prob_s).pow(2).flatten(2).mean(2).mean(0).sum()


def rampup_weight(progress: float, fraction: float = 0.1, peak: float = 10.0) -> float:
    """peak·exp(−5(1 − t)²), t = min(progress / fraction, 1): 10·exp(−5) at 0, 10 from fraction."""
    t = 1.0 if fraction <= 0 else min(max(progress, 0.0) / fraction, 1.0)
    return peak * math.exp(-5.0 * (1.0 - t) ** 2)
