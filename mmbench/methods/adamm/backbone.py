"""The SMU-Net-style 3-D U-Net of AdaMM's teacher and student (and of SMU-Net), laid out as the
released ``AdaMMKD`` network (Quanato607/AdaMM@f2e1733, ``models/AdaMMKD.py``).

Layout (C0 = ``width``; resolutions relative to the input D×H×W, which must be divisible by 8):

- Encoder: ``stem`` Conv 3³ 4→C0, ``enc1`` block(C0) = c1 (1/1) · ``down1`` stride-2 Conv 3³
  C0→2C0, [adapter enc 0], ``enc2`` 2 blocks = c2 (1/2) · ``down2`` → c2d (4C0, 1/4),
  [adapter enc 1], ``enc3`` 2 blocks = c3 · ``down3`` → c3d (8C0, 1/8), [adapter enc 2],
  ``enc4`` 4 blocks: c4 = the output of the third, content = c4d = the fourth block on c4.
- Shared bottleneck: style = ``style`` 1×1 conv over cat[maxpool(c2d), c3d, c4d] (20C0→8C0);
  GF = dropout(``fuse`` 1×1 conv over cat[style, c4d]) (16C0→8C0, p = 0.2).
- Code-specific bottleneck (student with a non-full subset only): the 4th encoder adapter is a
  *branch* on c4 (c4' = A3(c4); the shared c4d never sees it); style' = the set's style conv over
  cat[maxpool(A1(c2d)), A2(c3d), c4']; CF = dropout(the set's fuse conv over cat[style', c4']).
  GARM(CF, GF) (or CF itself without GARM) replaces GF as the decoder input.
- Decoder with additive skips: ``reduce3`` 1×1 8C0→4C0, ×2 nearest, + c3, ``dec3`` block,
  [adapter dec 0] · ``reduce2`` 4C0→2C0, ×2, + c2, ``dec2``, [adapter dec 1] · ``reduce1`` 2C0→C0,
  ×2, [adapter dec 2], + c1 = u2 · ``dec1`` block · ``head`` 1×1 C0→4 logits.

The four output channels are the released code's: NETC, ED (SNFH), ET and a background channel
that no loss ever trains (kept so that the authors' checkpoints load as they are).

Residual block (``BasicBlock``): x + conv2(relu(gn2(conv1(relu(gn1(x)))))), Conv 3³ with bias,
GroupNorm(8). Below 8 channels (the tiny test widths only) the group count is gcd(8, channels).
Every layer keeps PyTorch's default initialisation, as the released code does.

What the distillation losses see is the *shared* path, for the adapted student too: ``style``
(not style'), ``content`` = c4d and ``c3d`` before its adapter (GSM's input is cat[c3d, style,
c4d]); the adapters still reach them through the trunk (A0–A2), but A3 does not.
At C0 = 16 the backbone has 4,778,212 parameters (the released network's backbone).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torch.nn import functional as F

if TYPE_CHECKING:
    from mmbench.methods.adamm.adapters import AdapterSet

OUT_CHANNELS = 4
"""Output channels of the released network: NETC, ED, ET, and an untrained background."""
LABELS = 3
"""Trained label channels (NETC, ED, ET): the first three outputs."""


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with 8 groups (fewer only when ``channels`` is not a multiple of 8)."""
    return nn.GroupNorm(math.gcd(8, channels), channels)


class ResBlock(nn.Module):
    """Pre-activation residual block (the released ``BasicBlock``); N×C×D×H×W → same."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gn1 = group_norm(channels)
        self.conv1 = nn.Conv3d(channels, channels, 3, padding=1)
        self.gn2 = group_norm(channels)
        self.conv2 = nn.Conv3d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.relu(self.gn1(x)))
        return x + self.conv2(F.relu(self.gn2(h)))


@dataclass
class Features:
    """One backbone pass (shapes for an N×4×D×H×W input, C0 = width, d = D/8 etc.).

    Attributes:
        logits: N×4×D×H×W output logits (NETC, ED, ET, untrained background).
        u2: N×C0×D×H×W full-resolution decoder feature after the c1 skip (LGRM's input).
        c3d: N×8C0×d×h×w third down-sampling, before its adapter.
        style: N×8C0×d×h×w shared style (Gram loss, discriminator, GSM).
        content: N×8C0×d×h×w shared deepest feature c4d (content loss, GSM).
        gf: N×8C0×d×h×w shared bottleneck GF (after dropout).
        cf: N×8C0×d×h×w code-specific bottleneck CF, or None without adapters.
        bottleneck: the decoder's input (GF, CF, or GARM's output).
    """

    logits: Tensor
    u2: Tensor
    c3d: Tensor
    style: Tensor
    content: Tensor
    gf: Tensor
    cf: Tensor | None
    bottleneck: Tensor

    @property
    def global_style(self) -> Tensor:
        """GSM's input cat[c3d, style, content]: N×24C0×d×h×w."""
        return torch.cat([self.c3d, self.style, self.content], 1)


def _up(x: Tensor, like: Tensor) -> Tensor:
    # Nearest ×2 (the released nn.Upsample(scale_factor=2)), sized on the skip.
    return F.interpolate(x, size=like.shape[2:], mode="nearest")


class AdaBackbone(nn.Module):
    """The teacher's or the student's network; see the module docstring.

    Args:
        in_channels: input modalities (4, canonical order).
        width: C0.
        dropout: the bottleneck dropout on GF and CF (0.2 in the released code).
    """

    def __init__(self, in_channels: int = 4, width: int = 16, dropout: float = 0.2) -> None:
        super().__init__()
        c = width
        self.width = width
        self.stem = nn.Conv3d(in_channels, c, 3, padding=1)
        self.enc1 = ResBlock(c)
        self.down1 = nn.Conv3d(c, 2 * c, 3, stride=2, padding=1)
        self.enc2 = nn.Sequential(ResBlock(2 * c), ResBlock(2 * c))
        self.down2 = nn.Conv3d(2 * c, 4 * c, 3, stride=2, padding=1)
        self.enc3 = nn.Sequential(ResBlock(4 * c), ResBlock(4 * c))
        self.down3 = nn.Conv3d(4 * c, 8 * c, 3, stride=2, padding=1)
        self.enc4 = nn.ModuleList(ResBlock(8 * c) for _ in range(4))
        self.pool = nn.MaxPool3d(2)
        self.style = nn.Conv3d(20 * c, 8 * c, 1)
        self.fuse = nn.Conv3d(16 * c, 8 * c, 1)
        self.drop = nn.Dropout(dropout)
        self.reduce3 = nn.Conv3d(8 * c, 4 * c, 1)
        self.dec3 = ResBlock(4 * c)
        self.reduce2 = nn.Conv3d(4 * c, 2 * c, 1)
        self.dec2 = ResBlock(2 * c)
        self.reduce1 = nn.Conv3d(2 * c, c, 1)
        self.dec1 = ResBlock(c)
        self.head = nn.Conv3d(c, OUT_CHANNELS, 1)

    def forward(
        self,
        x: Tensor,
        adapters: AdapterSet | None = None,
        garm: Callable[[Tensor, Tensor], Tensor] | None = None,
    ) -> Features:
        """N×4×D×H×W (D, H, W divisible by 8) → :class:`Features`.

        Args:
            adapters: the student's adapter set of the current non-full subset, or None (the
                teacher, or the student with all modalities: the plain shared U-Net).
            garm: ``garm(cf, gf) → decoder input``; used only together with ``adapters``.
        """
        a = adapters
        c1 = self.enc1(self.stem(x))
        d1 = self.down1(c1)
        c2 = self.enc2(a.enc[0](d1) if a is not None else d1)
        c2d = self.down2(c2)
        c2d_a = a.enc[1](c2d) if a is not None else c2d
        c3 = self.enc3(c2d_a)
        c3d = self.down3(c3)
        c3d_a = a.enc[2](c3d) if a is not None else c3d
        c4 = c3d_a
        for block in self.enc4[:3]:
            c4 = block(c4)
        content = self.enc4[3](c4)
        style = self.style(torch.cat([self.pool(c2d), c3d, content], 1))
        gf = self.drop(self.fuse(torch.cat([style, content], 1)))
        cf: Tensor | None = None
        b = gf
        if a is not None:
            c4_a = a.enc[3](c4)  # a branch: the shared c4d above never sees this adapter
            style_a = a.style(torch.cat([self.pool(c2d_a), c3d_a, c4_a], 1))
            cf = self.drop(a.fuse(torch.cat([style_a, c4_a], 1)))
            b = garm(cf, gf) if garm is not None else cf
        d3 = self.dec3(_up(self.reduce3(b), c3) + c3)
        if a is not None:
            d3 = a.dec[0](d3)
        d2 = self.dec2(_up(self.reduce2(d3), c2) + c2)
        if a is not None:
            d2 = a.dec[1](d2)
        u = _up(self.reduce1(d2), c1)
        if a is not None:
            u = a.dec[2](u)
        u2 = u + c1
        logits = self.head(self.dec1(u2))
        return Features(logits, u2, c3d, style, content, gf, cf, b)
