"""U-HeMIS: HeMIS fusion on a U-Net (family ``robustness-enhancement``).

Dorent et al. (MICCAI 2019) built U-HeMIS as the baseline of U-HVED: the HeMIS abstraction
(Havaei et al., MICCAI 2016: mean and variance of the available modalities' features) applied at
every scale of a U-Net with one encoder per modality and a single decoder. There is no PyTorch
official code; this follows the paper and the official TensorFlow/NiftyNet code
(``ReubenDo/U-HVED``, ``extensions/u_hemis/u_hemis_net.py`` and ``application.py``).
``docs/methods/uhemis.md`` lists what is faithful and what departs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import ClassVar

import torch
from monai.losses import DiceCELoss
from torch import Tensor, nn
from torch.nn import functional as F

from mmbench.methods.base import Batch, MethodConfig, Option, StepContext, Strategy
from mmbench.methods.mmformer.strategy import regions_from_classes
from mmbench.methods.registry import register
from mmbench.subsets import MODALITIES

NEGATIVE_SLOPE = 0.02
"""LeakyReLU slope of NiftyNet's ``leakyrelu`` (0.51·x + 0.49·|x|: slope 0.02 below zero)."""

N_CLASSES = 4
"""Softmax classes: background, NCR/NET, oedema, enhancing tumour."""


def hemis_moments(features: Tensor) -> Tensor:
    """The HeMIS abstraction of K available modalities' features.

    Args:
        features: N×K×C×D×H×W, the features of the K ≥ 1 *available* modalities only (absent
            ones are left out, as the official ``tf.boolean_mask`` does before the moments).

    Returns:
        N×2C×D×H×W: the mean over K (channels 0…C−1) then the population variance over K
        (divided by K, as ``tf.nn.moments``; exactly 0 when K = 1), concatenated on channels.
    """
    mean = features.mean(1)
    var = (features - mean.unsqueeze(1)).square().mean(1)
    return torch.cat([mean, var], dim=1)


def preact_block(in_channels: int, mid: int, out: int) -> nn.Sequential:
    """The official ``ResBlock`` (whose residual sum is commented out): twice instance norm →
    LeakyReLU → 3³ conv without bias, ``in → mid → out`` channels; spatial size kept."""
    layers: list[nn.Module] = []
    for cin, cout in ((in_channels, mid), (mid, out)):
        layers += [
            nn.InstanceNorm3d(cin, affine=True),
            nn.LeakyReLU(NEGATIVE_SLOPE),
            nn.Conv3d(cin, cout, 3, padding=1, bias=False),
        ]
    return nn.Sequential(*layers)


class ModalityEncoder(nn.Module):
    """One modality's encoder (official ``ConvEncoder`` for one modality).

    N×1×D×H×W → ``depth + 1`` feature maps; level ``i`` has ``max(1, width·2**i // 2)``
    channels at ``D/2**i``: a 1³ conv to ``width`` channels + LeakyReLU, then at each level a
    :func:`preact_block` (``width·2**i`` then half that many channels) whose output is the
    level's skip, followed by 2³ max pooling except after the last level.
    """

    def __init__(self, width: int, depth: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv3d(1, width, 1, bias=False), nn.LeakyReLU(NEGATIVE_SLOPE))
        self.channels = [max(1, width * 2**i // 2) for i in range(depth + 1)]
        blocks, cin = [], width
        for i, cout in enumerate(self.channels):
            blocks.append(preact_block(cin, width * 2**i, cout))
            cin = cout
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = []
        x = self.stem(x)
        for i, block in enumerate(self.blocks):
            if i > 0:
                x = F.max_pool3d(x, 2)
            x = block(x)
            feats.append(x)
        return feats


class HeMISDecoder(nn.Module):
    """The single decoder (official ``ConvDecoderImg``, the ``seg`` branch).

    Input: the fused maps of every level (``2·C_i`` channels, level 0 first). From the deepest,
    each level up: trilinear resize to the next skip's size, concatenate [upsampled, skip], a
    :func:`preact_block` with ``width·2**i`` then half that many channels; a final 1³ conv
    (no bias) gives N×4×D×H×W class logits.
    """

    def __init__(self, skip_channels: Sequence[int], width: int, n_classes: int) -> None:
        super().__init__()
        depth = len(skip_channels) - 1
        blocks, cin = [], skip_channels[-1]
        self.out_channels = []
        for i in reversed(range(depth)):
            mid = width * 2**i
            out = max(1, mid // 2)
            blocks.append(preact_block(cin + skip_channels[i], mid, out))
            cin = out
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Conv3d(cin, n_classes, 1, bias=False)

    def forward(self, fused: Sequence[Tensor]) -> Tensor:
        x = fused[-1]
        for block, skip in zip(self.blocks, reversed(fused[:-1])):
            x = F.interpolate(x, size=skip.shape[-3:], mode="trilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return self.head(x)


def class_targets(compartments: Tensor) -> Tensor:
    """One-hot N×4×… (background, NCR/NET, oedema, ET) from the disjoint N×3×… compartments."""
    comp = compartments.float()
    background = (1.0 - comp.sum(1, keepdim=True)).clamp(0.0, 1.0)
    return torch.cat([background, comp], dim=1)


@register(
    "uhemis",
    family="robustness-enhancement",
    paper="Dorent et al., Hetero-Modal Variational Encoder-Decoder for Joint Modality Completion "
    "and Segmentation, MICCAI 2019 (U-HeMIS: HeMIS of Havaei et al., MICCAI 2016, on a U-Net)",
    tags=("multi-encoder", "hemis", "unet"),
)
class UHeMIS(Strategy):
    """U-HeMIS: per-modality encoders, mean and variance of the available features at every
    scale, one decoder.

    Four :class:`ModalityEncoder` (one input channel each) run only on the available
    modalities; at each level :func:`hemis_moments` fuses the available modalities' skips
    (mean and population variance; the variance is exactly 0 with one available modality, as in
    the official code); :class:`HeMISDecoder` predicts 4-class logits (background, NCR/NET,
    oedema, ET). Loss: softmax cross-entropy + soft Dice (squared-probability denominator,
    batch-wide, background included), NiftyNet's ``CrossEntropy`` + ``Dice`` of the official
    application. ``predict`` gives WT = 1 − p_BG, TC = p_NCR + p_ET, ET = p_ET.

    Sizes follow the official layout scaled by the preset: the official ``NB_CONV`` = 8 is
    ``config.width`` and its three poolings are ``config.depth``. Departures: one subset per batch
    drawn by the loop (uniform over the 15) instead of the official "draw a count, then that many
    modalities"; the shared Adam + poly schedule instead of lr/4 every 10k of 60k iterations;
    region probabilities thresholded by the evaluator instead of the arg-max label; affine
    instance norm.
    """

    options: ClassVar[dict[str, Option]] = {}

    def __init__(self, config: MethodConfig) -> None:
        super().__init__(config)
        width, depth = config.width, config.depth
        self.encoders = nn.ModuleList(
            ModalityEncoder(width, depth) for _ in range(config.in_channels)
        )
        fused = [2 * c for c in self.encoders[0].channels]
        self.decoder = HeMISDecoder(fused, width, N_CLASSES)
        self.loss = DiceCELoss(
            include_background=True,
            softmax=True,
            squared_pred=True,
            batch=True,
            smooth_nr=1e-5,
            smooth_dr=1e-5,
        )

    def fuse(self, image: Tensor, present: Iterable[int]) -> list[Tensor]:
        """Per level, :func:`hemis_moments` of the ``present`` channels' encoder features."""
        pyramids = [self.encoders[c](image[:, c : c + 1]) for c in present]
        return [
            hemis_moments(torch.stack([p[level] for p in pyramids], dim=1))
            for level in range(len(pyramids[0]))
        ]

    def forward(self, image: Tensor, present: Sequence[int]) -> Tensor:
        """N×4×D×H×W (only ``present`` channels read) → N×4×D×H×W class logits."""
        return self.decoder(self.fuse(image, present))

    def training_step(self, batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
        present = [MODALITIES.index(m) for m in batch["available"]]
        logits = self(batch["image"], present).float()
        return {"main": self.loss(logits, class_targets(batch["compartments"]))}

    def predict(self, image: Tensor, available: tuple[str, ...]) -> Tensor:
        present = [MODALITIES.index(m) for m in available]
        return regions_from_classes(torch.softmax(self(image, present).float(), dim=1))
