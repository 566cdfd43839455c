"""BBDM (Bi-Bottleneck Distillation Module) losses, the prediction consistency and its ramp, and
the style discriminator, as in the released code (Quanato607/AdaMM@f2e1733, ``losses.py``,
``models/discriminator.py``, ``train_adamm_divide.py``).

All inputs are the *shared-path* tensors of :class:`~mmbench.methods.adamm.backbone.Features`
(``style``, ``content`` = c4d, ``c3d`` before its adapter), for the teacher (T) and the student
(S). Nothing is detached except the discriminator's inputs for its own loss: the teacher also
receives the distillation gradients (online mutual learning, as released).

- Content: MSE(content_T, content_S) (weight 0.2 in the total).
- Style Gram (:func:`style_gram_loss`, already weighted): with F = style.view(B·C, D·H·W) and
  G = F Fᵀ / (B·C·D·H·W) (so at B > 1 G holds cross-sample blocks),
  1e-4 · Σ(G_T − G_S)² / (4 C² (D·H)²) (the released size leaves W out).
- Global style matching (GSM), weight 1:
  - released (:func:`gsm_released`): the helper ``get_GS_loss`` was written for a list of
    feature tensors but receives one tensor G = cat[c3d, style, c4d] (N×3C×d×h×w), so it iterates
    over the batch: sample i is paired with i−1 (mod N; at N = 1 with itself), and for every one
    of the 3C channels k, M_i[k] = G_i[k] G_{i−1}[k]ᵀ / (h·w) with G_i[k] the d×(h·w) slice (a
    d×d matrix over depth slices). GSM = 100 · Σ_i Σ_k ‖M^T_i[k] − M^S_i[k]‖² / (4 d² (h·w)²).
  - intended (:func:`gsm_intended`): the same helper on the list [c3d, style, c4d] it was written
    for: M_i = F_i F_{i−1}ᵀ / V per sample (C×C cross-Grams of feature i and the previous one,
    cyclically: (c3d, c4d), (style, c3d), (c4d, style)), GSM = 100 · Σ_i Σ_samples ‖M^T_i −
    M^S_i‖² / (4 C² V²), V = d·h·w (the helper's H·W for its 2-D features).
- Adversarial (labels: teacher = 0, "source"; student = 1): the generator side is
  BCE-with-logits(D(style_S), 0), weight 2e-4; the discriminator's loss is
  BCE(D(style_T.detach()), 0) + BCE(D(style_S.detach()), 1).
- Consistency: Σ over the three label channels of MSE(sigmoid_T, sigmoid_S), each a mean over
  batch and voxels; weight λ(e) = 10·exp(−5(1 − min(e, 20)/20)²) at epoch e (0-based).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

W_CONTENT = 0.2
W_GRAM = 1e-4
W_GSM = 100.0
W_ADV = 2e-4
CONSISTENCY_PEAK = 10.0
CONSISTENCY_RAMP_EPOCHS = 20.0
TEACHER_LABEL, STUDENT_LABEL = 0.0, 1.0


def _fp32(*tensors: Tensor) -> list[Tensor]:
    return [t.float() for t in tensors]


def content_loss(content_t: Tensor, content_s: Tensor) -> Tensor:
    """MSE between N×C×… content tensors → scalar."""
    t, s = _fp32(content_t, content_s)
    return F.mse_loss(t, s)


def style_gram_sumsq(style_t: Tensor, style_s: Tensor) -> Tensor:
    """Σ(G_T − G_S)² of the released Gram matrices (rows = samples × channels) → scalar."""
    with torch.autocast(style_t.device.type, enabled=False):
        grams = []
        for x in _fp32(style_t, style_s):
            rows = x.reshape(x.shape[0] * x.shape[1], -1)
            grams.append(rows @ rows.t() / x.numel())
        return (grams[0] - grams[1]).pow(2).sum()


def style_gram_loss(style_t: Tensor, style_s: Tensor) -> Tensor:
    """The released style loss (its 1e-4 weight included) of N×C×D×H×W style tensors → scalar."""
    c, d, h = style_t.shape[1:4]
    return W_GRAM * style_gram_sumsq(style_t, style_s) / (4.0 * c**2 * (d * h) ** 2)


def gsm_released(global_t: Tensor, global_s: Tensor) -> Tensor:
    """The released global style matching of N×3C×d×h×w tensors (see the module docstring)."""
    with torch.autocast(global_t.device.type, enabled=False):
        t, s = _fp32(global_t, global_s)
        d, hw = t.shape[2], t.shape[3] * t.shape[4]

        def mix(x: Tensor) -> Tensor:  # N×3C×d×d: slices of sample i against sample i−1
            slices = x.flatten(3)
            return torch.einsum("nkdv,nkev->nkde", slices, slices.roll(1, 0)) / hw

        return W_GSM * (mix(t) - mix(s)).pow(2).sum() / (4.0 * d**2 * hw**2)


def gsm_intended(feats_t: list[Tensor], feats_s: list[Tensor]) -> Tensor:
    """Global style matching over the list [c3d, style, c4d] (each N×C×d×h×w) → scalar."""
    with torch.autocast(feats_t[0].device.type, enabled=False):
        ft = [f.float().flatten(2) for f in feats_t]
        fs = [f.float().flatten(2) for f in feats_s]
        c, v = ft[0].shape[1], ft[0].shape[2]
        total = ft[0].new_zeros(())
        for i in range(len(ft)):
            mt = ft[i] @ ft[i - 1].transpose(1, 2) / v
            ms = fs[i] @ fs[i - 1].transpose(1, 2) / v
            total = total + (mt - ms).pow(2).sum()
        return W_GSM * total / (4.0 * c**2 * v**2)


def consistency_terms(prob_t: Tensor, prob_s: Tensor) -> Tensor:
    """MSE(sigmoid_T[:, c], sigmoid_S[:, c]) for each label channel c: N×L×… → L."""
    t, s = _fp32(prob_t, prob_s)
    return (t - s).pow(2).flatten(2).mean(2).mean(0)


def consistency_weight(epoch: float) -> float:
    """λ(e) = 10·exp(−5(1 − min(max(e, 0), 20)/20)²), the released consistency ramp."""
    phase = 1.0 - min(max(epoch, 0.0), CONSISTENCY_RAMP_EPOCHS) / CONSISTENCY_RAMP_EPOCHS
    return CONSISTENCY_PEAK * math.exp(-5.0 * phase * phase)


def bce_with_label(logits: Tensor, label: float) -> Tensor:
    """BCE-with-logits of a discriminator output (any shape) against a constant label → scalar."""
    x = logits.float()
    return F.binary_cross_entropy_with_logits(x, torch.full_like(x, label))


class StyleDiscriminator(nn.Module):
    """The released style discriminator: N×8C0×d×h×w style → N×1×d'×h'×w' logits.

    conv k4 s2 p1 8C0→4C0, 4C0→8C0, 8C0→16C0 (LeakyReLU 0.2 after each; 64, 128, 256 at
    C0 = 16), then a conv with the released crop-specific kernel (2, 3, 2) to one logit: at the
    released 160×192×128 crop the style map is 20×24×16 and the features 2×3×2. A larger map gives
    a logit map (the BCE averages over it), as released. The released network cannot take
    smaller maps; here a map under 8 voxels on an axis is zero-padded to 8 (so that the three
    stride-2 convs keep a voxel) and features smaller than the kernel are average-pooled
    (adaptively, i.e. repeated) up to it, so any crop works. 3,149,249 parameters at C0 = 16.
    """

    MIN_SIZE = 8
    HEAD_KERNEL = (2, 3, 2)

    def __init__(self, channels: int) -> None:
        super().__init__()
        h = channels // 2
        self.features = nn.Sequential(
            nn.Conv3d(channels, h, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv3d(h, 2 * h, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv3d(2 * h, 4 * h, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
        )
        self.logit = nn.Conv3d(4 * h, 1, self.HEAD_KERNEL)

    def forward(self, x: Tensor) -> Tensor:
        pad: list[int] = []
        for size in reversed(x.shape[2:]):
            extra = max(0, self.MIN_SIZE - size)
            pad += [extra // 2, extra - extra // 2]
        if any(pad):
            x = F.pad(x, pad)
        h = self.features(x)
        size = tuple(max(s, k) for s, k in zip(h.shape[2:], self.HEAD_KERNEL, strict=True))
        if size != tuple(h.shape[2:]):
            h = F.adaptive_avg_pool3d(h, size)
        return self.logit(h)
