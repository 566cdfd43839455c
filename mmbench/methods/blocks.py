"""Shared network building blocks: a compact 3-D U-Net encoder/decoder from MONAI blocks.

Every re-implemented strategy builds on these, so that differences in the tables come from the
strategy rather than from the plumbing. Channel widths are ``width × 2**level``; the total stride
is ``2**depth`` (inputs must be divisible by it; the evaluator's sliding window guarantees that).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import UnetOutBlock, UnetResBlock, UnetUpBlock
from torch import Tensor, nn

NORM = ("instance", {"affine": True})
ACT = ("leakyrelu", {"negative_slope": 0.01, "inplace": True})


def level_channels(width: int, depth: int) -> list[int]:
    """Channels at each resolution level 0..depth: ``[w, 2w, 4w, ...]``."""
    return [width * 2**i for i in range(depth + 1)]


class Encoder3D(nn.Module):
    """Residual 3-D encoder.

    Input N×C_in×D×H×W; output a list of ``depth + 1`` feature maps, level ``i`` with
    ``width·2**i`` channels at resolution ``D/2**i``.
    """

    def __init__(self, in_channels: int, width: int = 8, depth: int = 3) -> None:
        super().__init__()
        chans = level_channels(width, depth)
        self.channels = chans
        self.stem = UnetResBlock(
            3, in_channels, chans[0], kernel_size=3, stride=1, norm_name=NORM, act_name=ACT
        )
        self.down = nn.ModuleList(
            UnetResBlock(
                3, chans[i], chans[i + 1], kernel_size=3, stride=2, norm_name=NORM, act_name=ACT
            )
            for i in range(depth)
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = [self.stem(x)]
        for block in self.down:
            feats.append(block(feats[-1]))
        return feats


class Decoder3D(nn.Module):
    """U-Net decoder with concatenated skips.

    Input: the encoder's list of feature maps (channels ``width·2**i``). Output of ``forward``:
    N×out_channels×D×H×W logits; ``features`` returns the last N×width×D×H×W feature map.
    """

    def __init__(self, width: int = 8, depth: int = 3, out_channels: int = 3) -> None:
        super().__init__()
        chans = level_channels(width, depth)
        self.up = nn.ModuleList(
            UnetUpBlock(
                3,
                chans[i + 1],
                chans[i],
                kernel_size=3,
                stride=1,
                upsample_kernel_size=2,
                norm_name=NORM,
                act_name=ACT,
            )
            for i in reversed(range(depth))
        )
        self.head = UnetOutBlock(3, chans[0], out_channels)

    def features(self, feats: Sequence[Tensor]) -> Tensor:
        x = feats[-1]
        for block, skip in zip(self.up, reversed(feats[:-1])):
            x = block(x, skip)
        return x

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        return self.head(self.features(feats))


class UNet3D(nn.Module):
    """The compact backbone: :class:`Encoder3D` + :class:`Decoder3D`.

    N×in_channels×D×H×W → N×out_channels×D×H×W logits.
    """

    def __init__(
        self, in_channels: int = 4, out_channels: int = 3, width: int = 8, depth: int = 3
    ) -> None:
        super().__init__()
        self.encoder = Encoder3D(in_channels, width, depth)
        self.decoder = Decoder3D(width, depth, out_channels)
        self.depth = depth

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.encoder(x))


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def pad_to_multiple(x: Tensor, multiple: int) -> tuple[Tensor, tuple[int, int, int]]:
    """Zero-pad the spatial dims of N×C×D×H×W up to a multiple; returns the original size."""
    size = tuple(x.shape[-3:])
    pad = [(-s) % multiple for s in size]
    if any(pad):
        x = torch.nn.functional.pad(x, (0, pad[2], 0, pad[1], 0, pad[0]))
    return x, size  # type: ignore[return-value]
