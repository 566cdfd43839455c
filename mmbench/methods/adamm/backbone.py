"""SMU-Net-style 3-D U-Net shared by AdaMM's teacher and student (and by SMU-Net).

Layout (C0 = ``width``; resolutions relative to the input D×H×W; 16 at C0 = 16 in the spec):

- Encoder: Conv 3³ 4→C0, block(C0) = ``c1`` (1/1) · stride-2 Conv 3³ C0→2C0, [adapter enc1],
  2 blocks(2C0) = ``c2`` (1/2) · stride-2 conv 2C0→4C0 = ``c2d`` (1/4; ``c2d_p`` = maxpool → 1/8),
  [adapter enc2], 2 blocks(4C0) = ``c3`` (1/4) · stride-2 conv 4C0→8C0 = ``c3d`` (1/8),
  [adapter enc3], 4 blocks(8C0) with [adapter enc4] after the third = ``content`` (1/8).
- Style bottleneck: 1×1 conv over concat[c2d_p, c3d, content] (20C0→8C0).
  Fuse: 1×1 conv over concat[style, content] (16C0→8C0), dropout 0.2 → ``b``.
- Decoder with additive skips: 1×1 8C0→4C0, ×2 nearest, + c3, block(4C0), [adapter dec64] ·
  1×1 4C0→2C0, ×2, + c2, block(2C0), [adapter dec32] · 1×1 2C0→C0, ×2, [adapter dec16],
  + c1 = ``u2``, block(C0) · 1×1 C0→3 (NETC, ED, ET logits).

Residual block: GroupNorm → ReLU → Conv 3³ → GroupNorm → ReLU → Conv 3³, plus identity. The spec's
GroupNorm(8) is used whenever the channel count allows; below 8 channels (only the tiny test
widths) the group count is ``gcd(8, channels)``.

The label head's bias starts at −2 (a prior-probability initialisation; the spec gives no init).
The reference code has a fourth (background) output channel that is never trained; it is left
out (17 parameters at C0 = 16). At C0 = 16 the backbone has 4,778,195 parameters (the spec's
4.78 M).

The bracketed adapter slots are filled only for the student with a non-full modality subset
(:class:`~mmbench.methods.adamm.adapters.AdapterSet`). Then the un-adapted ``c2d_p`` and ``c3d``
(taken before their adapters) and the shared style/fuse convs give the generalisation feature
GF = ``b``; the adapted tensors and the code-specific style/fuse convs give the combination-aware
feature CF. GARM (if given) fuses GF and CF and its output is the decoder input; without GARM the
decoder reads CF directly.
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


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with 8 groups (fewer only when ``channels`` is not a multiple of 8)."""
    return nn.GroupNorm(math.gcd(8, channels), channels)


class ResBlock(nn.Module):
    """Pre-activation residual block; N×C×D×H×W → N×C×D×H×W."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            group_norm(channels),
            nn.ReLU(inplace=False),
            nn.Conv3d(channels, channels, 3, padding=1),
            group_norm(channels),
            nn.ReLU(inplace=False),
            nn.Conv3d(channels, channels, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


@dataclass
class Features:
    """What one backbone pass exposes to the losses (shapes for an N×4×D×H×W input, C0 = width).

    Attributes:
        logits: N×3×D×H×W label logits (NETC, ED, ET).
        u2: N×C0×D×H×W full-resolution decoder feature (input of the LGRM presence head).
        c3d: N×8C0×D/8×H/8×W/8 third down-sampling (adapted for an adapted student); GSM's G1.
        style: N×8C0×… style bottleneck (code-specific for an adapted student); GSM's G2, the
            discriminator's input and the Gram loss's input.
        content: N×8C0×… deepest encoder feature; GSM's G3 and the content loss's input.
        bottleneck: N×8C0×… the decoder's input (``b``, CF, or GARM's output).
    """

    logits: Tensor
    u2: Tensor
    c3d: Tensor
    style: Tensor
    content: Tensor
    bottleneck: Tensor


def _up(x: Tensor, like: Tensor) -> Tensor:
    # Nearest ×2; sized on the skip so that odd sizes still line up.
    return F.interpolate(x, size=like.shape[2:], mode="nearest")


class AdaBackbone(nn.Module):
    """The teacher's or the student's network; see the module docstring for the layout."""

    def __init__(
        self,
        in_channels: int = 4,
        out_channels: int = 3,
        width: int = 16,
        dropout: float = 0.2,
        head_bias: float = -2.0,
    ) -> None:
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
        self.up3 = nn.Conv3d(8 * c, 4 * c, 1)
        self.dec3 = ResBlock(4 * c)
        self.up2 = nn.Conv3d(4 * c, 2 * c, 1)
        self.dec2 = ResBlock(2 * c)
        self.up1 = nn.Conv3d(2 * c, c, 1)
        self.dec1 = ResBlock(c)
        self.head = nn.Conv3d(c, out_channels, 1)
        # Prior-probability init (sigmoid(-2) ≈ 0.12, lesions are a small share of the crop): the
        # Dice-only objective then starts near "background" instead of p = 0.5 everywhere.
        nn.init.constant_(self.head.bias, head_bias)

    def bottleneck(
        self,
        c2d_p: Tensor,
        c3d: Tensor,
        content: Tensor,
        style_conv: nn.Module,
        fuse_conv: nn.Module,
    ) -> tuple[Tensor, Tensor]:
        """Style and fused bottleneck from N×4C0, N×8C0, N×8C0 tensors at 1/8 → (style, b)."""
        style = style_conv(torch.cat([c2d_p, c3d, content], 1))
        b = self.drop(fuse_conv(torch.cat([style, content], 1)))
        return style, b

    def forward(
        self,
        x: Tensor,
        adapters: AdapterSet | None = None,
        garm: Callable[[Tensor, Tensor], Tensor] | None = None,
    ) -> Features:
        """N×4×D×H×W (D, H, W divisible by 8) → :class:`Features`.

        Args:
            adapters: the student's adapter set for the current non-full subset, or None (teacher,
                or student with all modalities): then the network is the plain shared U-Net.
            garm: ``garm(cf, gf) → decoder input``; used only together with ``adapters``.
        """
        a = adapters
        c1 = self.enc1(self.stem(x))
        d1 = self.down1(c1)
        if a is not None:
            d1 = a.enc1(d1)
        c2 = self.enc2(d1)
        c2d = self.down2(c2)
        c2d_a = a.enc2(c2d) if a is not None else c2d
        c3 = self.enc3(c2d_a)
        c3d = self.down3(c3)
        c3d_a = a.enc3(c3d) if a is not None else c3d
        h = c3d_a
        for i, block in enumerate(self.enc4):
            h = block(h)
            if i == 2 and a is not None:
                h = a.enc4(h)
        content = h
        if a is None:
            style, b = self.bottleneck(self.pool(c2d), c3d, content, self.style, self.fuse)
        else:
            style, cf = self.bottleneck(self.pool(c2d_a), c3d_a, content, a.style, a.fuse)
            if garm is not None:
                # GF: the shared convs over the un-adapted c2d_p and c3d.
                _, gf = self.bottleneck(self.pool(c2d), c3d, content, self.style, self.fuse)
                b = garm(cf, gf)
            else:
                b = cf
        d3 = self.dec3(_up(self.up3(b), c3) + c3)
        if a is not None:
            d3 = a.dec64(d3)
        d2 = self.dec2(_up(self.up2(d3), c2) + c2)
        if a is not None:
            d2 = a.dec32(d2)
        u = _up(self.up1(d2), c1)
        if a is not None:
            u = a.dec16(u)
        u2 = u + c1
        logits = self.head(self.dec1(u2))
        return Features(logits, u2, c3d_a, style, content, b)
