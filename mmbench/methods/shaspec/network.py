"""The ShaSpec network (official ``DualNet_SS`` of billhhh/ShaSpec @081fe7a), written for mmbench.

Five encoders of one design (:class:`Encoder`: a 3-D ResNet-50 with bottleneck blocks 3/4/6/3,
then a 1×1 reduction and an ASPP): one *shared* encoder applied to each of the four modality
slots and one *specific* encoder per modality. A present modality's slot is
``shared + conv3³_ws([shared, specific])`` (:class:`Composition`, one layer for all
modalities); a missing one receives the *generated* feature, the shared feature of a donor
modality. The four slots are concatenated at the bottleneck and decoded by
:class:`Decoder`, whose skips are the shared backbone's stage outputs of all four slots.

Tensor layout: ``x`` is N×4×D×H×W in the official slot order (FLAIR, T1, T1ce, T2), absent
slots zero. D must be a multiple of 16 and H, W multiples of 32 (the backbone's strides);
:func:`padded_size` gives the next size that is. Outputs are logits in the official channel
order (ET, WT, TC) at the input size.

Every convolution standardises its weights (:class:`WSConv3d`) except the transposed
convolutions and the final classifier, as in the official code. Channel counts are the official
ones times :attr:`ShaSpecDims.scale` (1 at the official width).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

SLOT_ORDER: tuple[str, ...] = ("FLAIR", "T1", "T1ce", "T2")
"""The official modality order of the input channels and of the feature slots."""

SLOT_FROM_CANONICAL: tuple[int, ...] = (3, 0, 1, 2)
"""``slots = canonical[:, SLOT_FROM_CANONICAL]`` (canonical order T1, T1ce, T2, FLAIR)."""

OUTPUT_ORDER: tuple[str, ...] = ("ET", "WT", "TC")
"""Channel order of the official logits."""

BLOCKS: tuple[int, ...] = (3, 4, 6, 3)
"""Bottleneck blocks per ResNet-50 stage."""

EXPANSION = 4
STRIDE: tuple[int, int, int] = (16, 32, 32)
"""Total stride of the backbone (D, H, W): the stem halves H and W only."""

LEAKY_SLOPE = 0.01
NORM_EPS = 1e-5
WS_EPS = 1e-12
OFFICIAL_WIDTH = 16
"""The preset width (``model.width``) at which the channel counts are the official ones."""

# Official channel counts (scale 1).
STEM = 64
PLANES: tuple[int, ...] = (64, 128, 256, 320)
ASPP_CHANNELS = 256
DECODER: tuple[int, ...] = (32, 64, 128, 256)  # decoder stage 0..3
CLASSES = 3


MIN_CHANNELS = 4
"""Fewest channels of a scaled layer: a weight-standardised 1×1 convolution from one channel has
one tap per filter, whose variance is undefined."""


def scaled(channels: int, scale: float) -> int:
    """``channels · scale`` rounded, at least :data:`MIN_CHANNELS`."""
    return max(MIN_CHANNELS, int(round(channels * scale)))


@dataclass(frozen=True)
class ShaSpecDims:
    """Channel counts of one network.

    Attributes:
        scale: the channel multiplier (1 = official).
        stem: stem output channels (official 64).
        planes: bottleneck planes of the four stages (official 64, 128, 256, 320); a stage's
            output has ``4 · planes`` channels.
        aspp: ASPP / bottleneck feature channels (official 256).
        decoder: decoder channels of stages 0..3 (official 32, 64, 128, 256).
    """

    scale: float = 1.0
    stem: int = STEM
    planes: tuple[int, ...] = PLANES
    aspp: int = ASPP_CHANNELS
    decoder: tuple[int, ...] = DECODER

    @classmethod
    def from_scale(cls, scale: float) -> ShaSpecDims:
        return cls(
            scale=scale,
            stem=scaled(STEM, scale),
            planes=tuple(scaled(p, scale) for p in PLANES),
            aspp=scaled(ASPP_CHANNELS, scale),
            decoder=tuple(scaled(c, scale) for c in DECODER),
        )

    @classmethod
    def from_width(cls, width: int) -> ShaSpecDims:
        """The width rule: ``scale = (width / 16) ** 3`` (official at the paper preset's 16;
        1/8 at ``quick``'s 8, 1/64 at ``smoke``'s 4; every layer keeps at least
        :data:`MIN_CHANNELS`)."""
        return cls.from_scale((width / OFFICIAL_WIDTH) ** 3)

    @property
    def stage_channels(self) -> tuple[int, ...]:
        """Channels of the backbone outputs: stem, layer1..layer4."""
        return (self.stem, *(EXPANSION * p for p in self.planes))


def padded_size(size: Sequence[int]) -> tuple[int, int, int]:
    """The smallest (D, H, W) ≥ ``size`` divisible by the backbone's stride (16, 32, 32)."""
    return tuple(-(-int(s) // k) * k for s, k in zip(size, STRIDE))  # type: ignore[return-value]


class WSConv3d(nn.Conv3d):
    """Conv3d with weight standardisation: each filter minus its mean, divided by
    √(unbiased variance + 1e-12) (official ``Conv3d_wd``)."""

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight
        w = w - w.mean(dim=(1, 2, 3, 4), keepdim=True)
        std = torch.sqrt(w.flatten(1).var(dim=1) + WS_EPS).reshape(-1, 1, 1, 1, 1)
        return F.conv3d(
            x, w / std, self.bias, self.stride, self.padding, self.dilation, self.groups
        )


class InstanceNorm(nn.InstanceNorm3d):
    """Affine InstanceNorm3d (eps 1e-5, no running statistics) that also normalises a single
    voxel: the official code deletes torch's size check, and then the output is the bias."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, eps=NORM_EPS, affine=True)

    def forward(self, x: Tensor) -> Tensor:
        if x[0, 0].numel() > 1:
            return super().forward(x)
        centred = x - x.mean(dim=(2, 3, 4), keepdim=True)  # exactly 0: one voxel
        shape = (1, -1, 1, 1, 1)
        return centred / (NORM_EPS**0.5) * self.weight.reshape(shape) + self.bias.reshape(shape)


def act(x: Tensor) -> Tensor:
    return F.leaky_relu(x, LEAKY_SLOPE)


class ConvNormAct(nn.Module):
    """WS conv → InstanceNorm → LeakyReLU (the official ``nn.Sequential(conv, norm, act)``)."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, dilation: int = 1) -> None:
        super().__init__()
        pad = dilation * (kernel // 2)
        self.conv = WSConv3d(cin, cout, kernel, padding=pad, dilation=dilation, bias=False)
        self.norm = InstanceNorm(cout)

    def forward(self, x: Tensor) -> Tensor:
        return act(self.norm(self.conv(x)))


class Bottleneck(nn.Module):
    """ResNet bottleneck: 1×1 → 3³ (stride) → 1×1 (×4), plus a 1×1 projection shortcut
    (type B) in each stage's first block."""

    def __init__(self, cin: int, planes: int, stride: int, project: bool) -> None:
        super().__init__()
        cout = EXPANSION * planes
        self.conv1 = WSConv3d(cin, planes, 1, bias=False)
        self.norm1 = InstanceNorm(planes)
        self.conv2 = WSConv3d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.norm2 = InstanceNorm(planes)
        self.conv3 = WSConv3d(planes, cout, 1, bias=False)
        self.norm3 = InstanceNorm(cout)
        self.shortcut_conv = WSConv3d(cin, cout, 1, stride=stride, bias=False) if project else None
        self.shortcut_norm = InstanceNorm(cout) if project else None

    def forward(self, x: Tensor) -> Tensor:
        out = act(self.norm1(self.conv1(x)))
        out = act(self.norm2(self.conv2(out)))
        out = self.norm3(self.conv3(out))
        if self.shortcut_conv is not None and self.shortcut_norm is not None:
            x = self.shortcut_norm(self.shortcut_conv(x))
        return act(out + x)


class BasicBlock(nn.Module):
    """Two 3³ WS convs with InstanceNorm and an identity shortcut (the decoder's block)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = WSConv3d(channels, channels, 3, padding=1, bias=False)
        self.norm1 = InstanceNorm(channels)
        self.conv2 = WSConv3d(channels, channels, 3, padding=1, bias=False)
        self.norm2 = InstanceNorm(channels)

    def forward(self, x: Tensor) -> Tensor:
        out = act(self.norm1(self.conv1(x)))
        return act(self.norm2(self.conv2(out)) + x)


class Backbone(nn.Module):
    """3-D ResNet-50 on one channel: 7³ stem (stride 1, 2, 2) → 3³ max-pool (stride 2) → four
    bottleneck stages (strides 1, 2, 2, 2). Returns the stem output and the four stage outputs
    (N×C_k×…, resolutions D×H/2×W/2, then /2, /4, /8, /16 of that in every axis)."""

    def __init__(self, dims: ShaSpecDims) -> None:
        super().__init__()
        self.stem_conv = WSConv3d(1, dims.stem, 7, stride=(1, 2, 2), padding=3, bias=False)
        self.stem_norm = InstanceNorm(dims.stem)
        stages = []
        cin = dims.stem
        for k, (planes, blocks) in enumerate(zip(dims.planes, BLOCKS)):
            stride = 1 if k == 0 else 2
            stage = [Bottleneck(cin, planes, stride, project=True)]
            cin = EXPANSION * planes
            stage += [Bottleneck(cin, planes, 1, project=False) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*stage))
        self.stages = nn.ModuleList(stages)

    def forward(self, x: Tensor) -> list[Tensor]:
        x = act(self.stem_norm(self.stem_conv(x)))
        layers = [x]
        x = F.max_pool3d(x, 3, stride=2, padding=1)
        for stage in self.stages:
            x = stage(x)
            layers.append(x)
        return layers


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: a 1×1 branch, 3³ branches with dilation 2, 4, 8, an
    image-pool branch (1×1 conv + norm on the spatial mean, broadcast back), a 1×1 merge."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.point = ConvNormAct(channels, channels, 1)
        self.dilated = nn.ModuleList(ConvNormAct(channels, channels, 3, d) for d in (2, 4, 8))
        self.pool = ConvNormAct(channels, channels, 1)
        self.merge = ConvNormAct(5 * channels, channels, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x: N×A×d×h×w → (N×A×d×h×w, the spatial mean of x N×A×1×1×1)."""
        branches = [self.point(x), *(b(x) for b in self.dilated)]
        mean = x.mean(dim=(2, 3, 4), keepdim=True)
        # The official branch: InstanceNorm of a 1×1×1 map is its bias (a learned constant),
        # trilinearly "interpolated" (align_corners=True) to the map's size.
        pooled = F.interpolate(self.pool(mean), x.shape[2:], mode="trilinear", align_corners=True)
        return self.merge(torch.cat([*branches, pooled], dim=1)), mean


@dataclass
class EncoderOutput:
    """One encoder's outputs for a batch of B one-channel images.

    Attributes:
        feature: B×A×d×h×w ASPP output (the bottleneck feature).
        pooled: B×A×1×1×1 spatial mean of the ASPP input (the official ``global_f``).
        layers: the backbone's stem and stage outputs (B×C_k×…).
    """

    feature: Tensor
    pooled: Tensor
    layers: list[Tensor]


class Encoder(nn.Module):
    """Backbone → 1×1 reduction (4·planes₄ → A, norm, LeakyReLU) → ASPP (official
    ``U_Res3D_enc``). Input B×1×D×H×W."""

    def __init__(self, dims: ShaSpecDims) -> None:
        super().__init__()
        self.backbone = Backbone(dims)
        self.reduce = ConvNormAct(dims.stage_channels[-1], dims.aspp, 1)
        self.aspp = ASPP(dims.aspp)

    def forward(self, x: Tensor) -> EncoderOutput:
        layers = self.backbone(x)
        feature, pooled = self.aspp(self.reduce(layers[-1]))
        return EncoderOutput(feature, pooled, layers)


class Decoder(nn.Module):
    """Official ``U_Res3D_dec``: from stage 3 down to stage 0, a 2³ stride-2 transposed conv,
    plus a skip (1×1 conv + norm + LeakyReLU of the four slots' backbone output concatenated),
    then a :class:`BasicBlock`; a 1×1 classifier (plain conv, no bias) at D×H/2×W/2 and a
    trilinear (1, 2, 2) upsampling of the logits (align_corners False)."""

    def __init__(self, dims: ShaSpecDims, slots: int = len(SLOT_ORDER)) -> None:
        super().__init__()
        inputs = (slots * dims.aspp, *dims.decoder[:0:-1])  # into stage 3, 2, 1, 0
        ups = {
            k: nn.ConvTranspose3d(cin, dims.decoder[k], 2, stride=2, bias=False)
            for k, cin in zip((3, 2, 1, 0), inputs)
        }
        self.up = nn.ModuleList(ups[k] for k in range(4))
        self.skip = nn.ModuleList(
            ConvNormAct(slots * dims.stage_channels[k], dims.decoder[k], 1) for k in range(4)
        )
        self.refine = nn.ModuleList(BasicBlock(dims.decoder[k]) for k in range(4))
        self.head = nn.Conv3d(dims.decoder[0], CLASSES, 1, bias=False)

    def forward(self, x: Tensor, skips: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """x: N×(4·A)×… bottleneck; skips: the four slots' stem, layer1..3 outputs
        concatenated (N×4·C_k×…). Returns (logits N×3×D×H×W, the last feature N×C₀×D×H/2×W/2)."""
        for k in (3, 2, 1, 0):
            x = self.refine[k](self.up[k](x) + self.skip[k](skips[k]))
        logits = self.head(x)
        logits = F.interpolate(
            logits, scale_factor=(1, 2, 2), mode="trilinear", align_corners=False
        )
        return logits, x


class Composition(nn.Module):
    """The shared composition layer: ``shared + conv3³_ws([shared, specific])`` (2A → A,
    padding 1, no norm, no activation)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = WSConv3d(2 * channels, channels, 3, padding=1, bias=False)

    def forward(self, shared: Tensor, specific: Tensor) -> Tensor:
        return shared + self.conv(torch.cat([shared, specific], dim=1))


@dataclass
class ShaSpecOutput:
    """Everything one forward pass computes (N samples, K = 4 slots in :data:`SLOT_ORDER`).

    Attributes:
        logits: N×3×D×H×W, channels (ET, WT, TC).
        shared: N×K×A×d×h×w shared bottleneck features of every slot (missing ones too).
        shared_pooled: N×K×A shared encoder's spatial means of the ASPP input.
        specific: per slot, N×A×d×h×w specific bottleneck feature, or None if not run.
        specific_pooled: per slot, N×A (the domain classifier's input), or None.
        generated: N×A×d×h×w, the feature put into missing slots.
        fused: N×(K·A)×d×h×w, the decoder's input.
        shared_layers: the four slots' backbone outputs, N×(K·C_k)×… for stem, layer1..4.
        decoder_last: N×C₀×D×H/2×W/2, before the classifier.
    """

    logits: Tensor
    shared: Tensor
    shared_pooled: Tensor
    specific: list[Tensor | None]
    specific_pooled: list[Tensor | None]
    generated: Tensor
    fused: Tensor
    shared_layers: list[Tensor]
    decoder_last: Tensor


class ShaSpecNet(nn.Module):
    """The ShaSpec network; see the module docstring."""

    def __init__(self, dims: ShaSpecDims) -> None:
        super().__init__()
        self.dims = dims
        self.shared_encoder = Encoder(dims)
        self.specific_encoders = nn.ModuleList(Encoder(dims) for _ in SLOT_ORDER)
        self.composition = Composition(dims.aspp)
        self.decoder = Decoder(dims)

    def forward(
        self,
        x: Tensor,
        available: Sequence[int],
        donor: int | None,
        run_missing_specific: bool = True,
    ) -> ShaSpecOutput:
        """The network on x (N×4×D×H×W, slot order, absent slots zero).

        Args:
            available: indices of the present slots.
            donor: the slot whose shared feature fills the missing slots; None = the mean of
                the available slots' shared features (the paper's formulation).
            run_missing_specific: also run the specific encoders of missing slots (the
                official code does; their features only reach the training losses).
        """
        n, k = x.shape[0], x.shape[1]
        shared = self.shared_encoder(x.reshape(n * k, 1, *x.shape[2:]))
        feat = shared.feature.reshape(n, k, *shared.feature.shape[1:])
        specific: list[Tensor | None] = [None] * k
        specific_pooled: list[Tensor | None] = [None] * k
        for s in range(k):
            if s in available or run_missing_specific:
                out = self.specific_encoders[s](x[:, s : s + 1])
                specific[s] = out.feature
                specific_pooled[s] = out.pooled.flatten(1)
        if donor is None:
            generated = feat[:, list(available)].mean(dim=1)
        else:
            generated = feat[:, donor]
        slots = []
        for s in range(k):
            spec = specific[s]
            if s in available and spec is not None:
                slots.append(self.composition(feat[:, s], spec))
            else:
                slots.append(generated)
        fused = torch.cat(slots, dim=1)
        layers = [t.reshape(n, k * t.shape[1], *t.shape[2:]) for t in shared.layers]
        logits, last = self.decoder(fused, layers)
        return ShaSpecOutput(
            logits=logits,
            shared=feat,
            shared_pooled=shared.pooled.reshape(n, k, -1),
            specific=specific,
            specific_pooled=specific_pooled,
            generated=generated,
            fused=fused,
            shared_layers=layers,
            decoder_last=last,
        )


__all__ = [
    "CLASSES",
    "OUTPUT_ORDER",
    "SLOT_FROM_CANONICAL",
    "SLOT_ORDER",
    "STRIDE",
    "Composition",
    "Decoder",
    "Encoder",
    "ShaSpecDims",
    "ShaSpecNet",
    "ShaSpecOutput",
    "WSConv3d",
    "padded_size",
]
