"""The RFNet network (Ding et al., ICCV 2021), written for mmbench from the paper and the behaviour
of the official code (dyh127/RFNet @1e475fa, checked number for number against its golden
fixture, see ``docs/methods/rfnet.md``).

Modality slots follow the official order **FLAIR, T1ce, T1, T2** (:data:`SLOT_ORDER`): the gate
network of every region-aware fusion reads the slots' descriptors in that order, so the slot
order is part of the weights. The strategy permutes canonical inputs with
:data:`SLOT_FROM_CANONICAL`.

Shapes use N (batch), K = 4 (slots), R = 4 (classes: background, NCR/NET, edema, enhancing; the
fusion's "regions" are these classes), ``b`` (basic width; level ``l`` = 1..4 has
``C_l = b·2**(l-1)`` channels at ``1/2**(l-1)`` of the input size).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from mmbench.subsets import MODALITIES

SLOT_ORDER: tuple[str, ...] = ("FLAIR", "T1ce", "T1", "T2")
"""Modality of each slot: the official channel order (``preprocess.py`` stacks them so)."""

SLOT_FROM_CANONICAL: tuple[int, ...] = tuple(MODALITIES.index(m) for m in SLOT_ORDER)
"""Canonical channel index of each slot: ``x_slots = x_canonical[:, SLOT_FROM_CANONICAL]``."""

LEVELS = 4
"""Resolution levels of the encoders (three stride-2 stages: total stride 8)."""

TOTAL_STRIDE = 2 ** (LEVELS - 1)

NUM_CLASSES = 4
"""Softmax classes: 0 background, 1 NCR/NET, 2 edema, 3 enhancing tumour."""

LEAKY_SLOPE = 0.2
NORM_EPS = 1e-5
REGION_EPS = 1e-7
"""Added to a region map's spatial mean before it divides the descriptors (official)."""

OFFICIAL_BASIC = 16
"""Official ``models.basic_dims``: the width of level 1 at the ``paper`` preset's width 16."""
OFFICIAL_PRM_HIDDEN = 16
"""Official hidden width of every prm head (a literal 16 in ``layers.py``)."""
OFFICIAL_GATE_HIDDEN = 128
"""Official hidden width of every modality-gate network (a literal 128 in ``layers.py``)."""
MIN_BASIC = 4
"""Smallest basic width: the prm embedding narrows level 1 to ``b // 4`` channels."""


@dataclass(frozen=True)
class RFNetDims:
    """Sizes of an RFNet network.

    Attributes:
        basic: channels of level 1 (official ``basic_dims`` = 16); level ``l`` has
            ``basic·2**(l-1)``.
        prm_hidden: hidden channels of the prm heads (official 16).
        gate_hidden: hidden channels of the modality-gate networks (official 128).
        num_classes: softmax classes (4 for BraTS 2018-2021).
    """

    basic: int = OFFICIAL_BASIC
    prm_hidden: int = OFFICIAL_PRM_HIDDEN
    gate_hidden: int = OFFICIAL_GATE_HIDDEN
    num_classes: int = NUM_CLASSES

    def __post_init__(self) -> None:
        if self.basic < MIN_BASIC or self.basic % MIN_BASIC:
            raise ValueError(
                f"rfnet needs a basic width that is a positive multiple of {MIN_BASIC} (the prm "
                f"embedding narrows level 1 to basic // 4 channels); got {self.basic}"
            )

    def channels(self, level: int) -> int:
        """Channels of level ``level`` (1..4)."""
        return self.basic * 2 ** (level - 1)

    @classmethod
    def from_width(cls, width: int, multiplier: float = 1.0) -> RFNetDims:
        """Dimensions for an mmbench preset width C0.

        One multiplier rule: every official channel count (``basic_dims`` 16, the prm heads'
        16, the gates' 128) is scaled by ``m = multiplier · width / 16``, with ``basic`` rounded
        to a multiple of 4 (at least 4). At the ``paper`` preset (width 16, multiplier 1) this is
        the official network; the strategy's default multiplier 0.5 gives ``basic`` 4 at the
        ``quick`` preset's width 8.
        """
        scale = float(multiplier) * int(width) / OFFICIAL_BASIC
        basic = max(MIN_BASIC, MIN_BASIC * round(OFFICIAL_BASIC * scale / MIN_BASIC))
        factor = basic / OFFICIAL_BASIC
        return cls(
            basic=basic,
            prm_hidden=max(1, round(OFFICIAL_PRM_HIDDEN * factor)),
            gate_hidden=max(1, round(OFFICIAL_GATE_HIDDEN * factor)),
        )


def check_size(size: Sequence[int]) -> None:
    """Raise ``ValueError`` unless every side is a multiple of 8 and at least 16 (three
    stride-2 levels whose skips must halve exactly; an 8-voxel side leaves one voxel at 1/8,
    where instance norm and reflect padding are undefined)."""
    size = tuple(int(s) for s in size)
    if len(size) != 3 or any(s < 2 * TOTAL_STRIDE or s % TOTAL_STRIDE for s in size):
        raise ValueError(
            f"rfnet needs spatial sides that are multiples of {TOTAL_STRIDE} and at least "
            f"{2 * TOTAL_STRIDE}; got {size}"
        )


# --------------------------------------------------------------------------------- blocks
class ConvBlock(nn.Module):
    """Conv3d (bias, reflect padding for 3³) → instance norm (no affine, eps 1e-5) →
    LeakyReLU(0.2): the official ``general_conv3d``. N×C_in×… → N×C_out×…/stride."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv3d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=kernel_size // 2,
            padding_mode="reflect",
        )

    def forward(self, x: Tensor) -> Tensor:
        x = F.instance_norm(self.conv(x), eps=NORM_EPS)
        return F.leaky_relu(x, LEAKY_SLOPE, inplace=True)


class ModalityEncoder(nn.Module):
    """The encoder of one modality (official ``Encoder``): N×1×D×H×W → four feature maps.

    Level 1: a conv block 1 → b, then ``x + refine(x)``. Levels 2-4: a stride-2 conv block
    doubling the channels, then ``x + refine(x)``; ``refine`` is two 3³ conv blocks.
    """

    def __init__(self, basic: int) -> None:
        super().__init__()
        c = [basic * 2**i for i in range(LEVELS)]
        self.stem = ConvBlock(1, c[0])
        self.down = nn.ModuleList(ConvBlock(c[i - 1], c[i], stride=2) for i in range(1, LEVELS))
        self.refine = nn.ModuleList(nn.Sequential(ConvBlock(ch, ch), ConvBlock(ch, ch)) for ch in c)

    def forward(self, x: Tensor) -> list[Tensor]:
        """Features ``[x1..x4]``, level ``l``: N×C_l×(D/2**(l-1))×…"""
        x = self.stem(x)
        feats = [x + self.refine[0](x)]
        for i, down in enumerate(self.down, start=1):
            x = down(feats[-1])
            feats.append(x + self.refine[i](x))
        return feats


def up2(x: Tensor) -> Tensor:
    """Trilinear ×2 upsampling with ``align_corners=True`` (official ``nn.Upsample``)."""
    return F.interpolate(x, scale_factor=2, mode="trilinear", align_corners=True)


class DecoderLevels(nn.Module):
    """The per-level conv blocks of both decoders, indexed by output level ``l`` = 1..3 at
    position ``l - 1``: ``up`` (3³, C_{l+1} → C_l after ×2 upsampling; official ``d<l>_c1``),
    ``merge`` (3³, 2·C_l → C_l on a concatenation; ``d<l>_c2``), ``out`` (1×1; ``d<l>_out``),
    and ``head`` (1×1 conv C_1 → classes; ``seg_layer``)."""

    def __init__(self, basic: int, num_classes: int) -> None:
        super().__init__()
        c = [basic * 2**i for i in range(LEVELS)]
        self.up = nn.ModuleList(ConvBlock(c[i + 1], c[i]) for i in range(LEVELS - 1))
        self.merge = nn.ModuleList(ConvBlock(2 * c[i], c[i]) for i in range(LEVELS - 1))
        self.out = nn.ModuleList(ConvBlock(c[i], c[i], 1) for i in range(LEVELS - 1))
        self.head = nn.Conv3d(c[0], num_classes, 1)


class SeparateDecoder(DecoderLevels):
    """The per-modality decoder (official ``Decoder_sep``, training only): one set of weights
    applied to each slot's raw (unmasked) encoder features; concatenation order decoder
    **first**, skip second. Four N×C_l maps → N×classes×D×H×W logits."""

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        d = feats[LEVELS - 1]
        for i in reversed(range(LEVELS - 1)):
            d = self.up[i](up2(d))
            d = self.out[i](self.merge[i](torch.cat([d, feats[i]], 1)))
        return self.head(d)


def mask_slots(stacked: Tensor, mask: Tensor) -> Tensor:
    """Zero the absent slots of N×K×… (``mask`` N×K bool): a selection, not a product, so that
    non-finite values in an absent slot cannot leak (official ``y[mask] = x[mask]``)."""
    keep = mask.reshape(*mask.shape, *([1] * (stacked.ndim - 2)))
    return torch.where(keep, stacked, torch.zeros((), dtype=stacked.dtype, device=stacked.device))


def embedding(channels: int, slots: int) -> nn.Sequential:
    """1×1 (K·C → C/4), 3³ (C/4 → C/4), 1×1 (C/4 → C) conv blocks on the masked slot-major
    features (official ``embedding_layer``)."""
    return nn.Sequential(
        ConvBlock(slots * channels, channels // 4, 1),
        ConvBlock(channels // 4, channels // 4),
        ConvBlock(channels // 4, channels, 1),
    )


class RegionMapGenerator(nn.Module):
    """Probability region map of one level (official ``prm_generator`` /
    ``prm_generator_laststage``): softmax over classes of ``head(cat[decoder, embed(slots)])``
    (without the decoder feature at level 4). ``head`` = 1×1 conv block to ``hidden`` channels,
    1×1 conv to the classes. → N×R×… probabilities."""

    def __init__(self, channels: int, dims: RFNetDims, with_decoder: bool, slots: int = 4):
        super().__init__()
        self.embed = embedding(channels, slots)
        head_in = 2 * channels if with_decoder else channels
        self.head = nn.Sequential(
            ConvBlock(head_in, dims.prm_hidden, 1), nn.Conv3d(dims.prm_hidden, dims.num_classes, 1)
        )

    def forward(self, masked: Tensor, decoder: Tensor | None = None) -> Tensor:
        """``masked``: N×K×C×… masked slot features; ``decoder``: N×C×… or ``None``."""
        y = self.embed(masked.flatten(1, 2))
        if decoder is not None:
            y = torch.cat([decoder, y], 1)
        return torch.softmax(self.head(y), 1)


class RegionAwareFusion(nn.Module):
    """Region-aware modal fusion of one level (official ``region_aware_modal_fusion``, "RFM").

    For each region (class) r of the (detached) region map P (N×R×…) and slot k with masked
    feature y_k (N×C×…): the descriptor ``mean(y_k·P_r) / (mean(P_r) + 1e-7)`` (N×C); the
    K·C descriptors (slot-major) and ``mean(P_r) + 1e-7`` go through ``gates[r]`` (1×1 conv
    K·C+1 → hidden, LeakyReLU 0.2, 1×1 conv → K) and a sigmoid: one gate per slot (an absent
    slot's gate multiplies zeros). The region feature is ``Σ_k gate_rk · y_k · P_r``; the R
    region features (region-major) go through ``region`` (1×1 R·C → C, 3³, 1×1 → C/2); the
    masked slot features (slot-major) through ``shortcut`` (1×1 K·C → C, 3³, 1×1 → C/2). Output:
    ``cat[region, shortcut]``, N×C×….
    """

    def __init__(self, channels: int, dims: RFNetDims, slots: int = 4) -> None:
        super().__init__()
        classes = dims.num_classes
        self.slots = slots
        self.gates = nn.ModuleList(
            nn.Sequential(
                nn.Conv3d(slots * channels + 1, dims.gate_hidden, 1),
                nn.LeakyReLU(LEAKY_SLOPE),
                nn.Conv3d(dims.gate_hidden, slots, 1),
            )
            for _ in range(classes)
        )
        self.region = nn.Sequential(
            ConvBlock(classes * channels, channels, 1),
            ConvBlock(channels, channels),
            ConvBlock(channels, channels // 2, 1),
        )
        self.shortcut = nn.Sequential(
            ConvBlock(slots * channels, channels, 1),
            ConvBlock(channels, channels),
            ConvBlock(channels, channels // 2, 1),
        )

    def gate_values(self, masked: Tensor, prm: Tensor) -> Tensor:
        """N×R×K sigmoid gates from N×K×C×… masked features and an N×R×… region map."""
        n, k, c = masked.shape[:3]
        flat = masked.flatten(3)  # N×K×C×S
        p = prm.flatten(2)  # N×R×S
        mass = p.mean(-1) + REGION_EPS  # N×R
        pooled = torch.einsum("nkcs,nrs->nrkc", flat, p) / flat.shape[-1]
        descriptors = pooled / mass[:, :, None, None]
        gates = []
        for r, gate in enumerate(self.gates):
            inp = torch.cat([descriptors[:, r].reshape(n, k * c), mass[:, r : r + 1]], 1)
            gates.append(gate(inp.reshape(n, -1, 1, 1, 1)).reshape(n, k))
        return torch.sigmoid(torch.stack(gates, 1))

    def forward(self, masked: Tensor, prm: Tensor) -> Tensor:
        """``masked``: N×K×C×… masked slot features; ``prm``: N×R×… region map (detached by
        the caller). → N×C×…"""
        weights = self.gate_values(masked, prm)  # N×R×K
        mixed = torch.einsum("nrk,nkc...->nrc...", weights, masked)  # Σ_k gate·y_k per region
        regions = mixed * prm.unsqueeze(2)  # N×R×C×…
        region = self.region(regions.flatten(1, 2))
        return torch.cat([region, self.shortcut(masked.flatten(1, 2))], 1)


class FusionDecoder(DecoderLevels):
    """The fused path's decoder (official ``Decoder_fuse``).

    Level 4: ``P4 = prm[3](x4)``, ``d = up[2](up2(fusion[3](x4, P4)))``. Levels l = 3, 2:
    ``P_l = prm[l-1](x_l, d)``, ``d = up[l-2](up2(out[l-1](merge[l-1](cat[fusion[l-1](x_l, P_l),
    d]))))``. Level 1 likewise without the final upsampling, then ``head`` and a softmax. Every
    fusion receives its region map detached, so the fusion path trains no prm generator.
    """

    def __init__(self, dims: RFNetDims, slots: int = 4) -> None:
        super().__init__(dims.basic, dims.num_classes)
        c = [dims.channels(level) for level in range(1, LEVELS + 1)]
        self.fusion = nn.ModuleList(RegionAwareFusion(ch, dims, slots) for ch in c)
        self.prm = nn.ModuleList(
            RegionMapGenerator(ch, dims, with_decoder=i < LEVELS - 1, slots=slots)
            for i, ch in enumerate(c)
        )

    def forward(self, masked: Sequence[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """Masked slot features per level (N×K×C_l×…, levels 1-4) → (N×R×D×H×W logits of the
        fused prediction, region maps of levels 1-4 at their own resolutions)."""
        top = LEVELS - 1
        prms: list[Tensor] = [masked[0]] * LEVELS  # placeholders, all overwritten
        prms[top] = self.prm[top](masked[top])
        d = self.up[top - 1](up2(self.fusion[top](masked[top], prms[top].detach())))
        for i in reversed(range(top)):
            prms[i] = self.prm[i](masked[i], d)
            fused = self.fusion[i](masked[i], prms[i].detach())
            d = self.out[i](self.merge[i](torch.cat([fused, d], 1)))
            if i > 0:
                d = self.up[i - 1](up2(d))
        return self.head(d), prms


@dataclass
class RFNetOutput:
    """What one forward pass computed.

    Attributes:
        logits: N×R×D×H×W logits of the fused prediction (softmax: official ``fuse_pred``).
        prms: region maps (softmax probabilities) of levels 1-4 at 1, 1/2, 1/4, 1/8 of the
            input size (official ``prm_pred1..4`` before upsampling).
        features: per slot the four raw encoder maps, ``None`` for a slot whose encoder did
            not run.
    """

    logits: Tensor
    prms: list[Tensor]
    features: list[list[Tensor] | None]


class RFNetNet(nn.Module):
    """The fused path of RFNet: four modality encoders and the fusion decoder (the
    per-modality decoder is a separate module, :class:`SeparateDecoder`, used in training)."""

    def __init__(self, dims: RFNetDims) -> None:
        super().__init__()
        self.dims = dims
        slots = len(SLOT_ORDER)
        self.encoders = nn.ModuleList(ModalityEncoder(dims.basic) for _ in range(slots))
        self.decoder = FusionDecoder(dims, slots)

    def forward(self, x: Tensor, mask: Tensor, run: Sequence[int] | None = None) -> RFNetOutput:
        """One forward pass.

        Args:
            x: N×K×D×H×W input in slot order (FLAIR, T1ce, T1, T2).
            mask: N×K bool, True where the slot's modality is available (per sample).
            run: slots whose encoder runs; default: the slots available in at least one sample.
                Slots outside it are never read: they enter the fusion as zeros, which is what
                masking their computed features gives (the fused output is the same).

        Raises:
            ValueError: a bad spatial size, or no slot to run.
        """
        check_size(x.shape[-3:])
        mask = mask.to(device=x.device, dtype=torch.bool)
        if run is None:
            run = [k for k in range(len(SLOT_ORDER)) if bool(mask[:, k].any())]
        run = sorted(int(k) for k in run)
        if not run:
            raise ValueError("rfnet needs at least one available modality")
        features: list[list[Tensor] | None] = [None] * len(SLOT_ORDER)
        for k in run:
            features[k] = self.encoders[k](x[:, k : k + 1])
        ref = features[run[0]]
        assert ref is not None
        masked = []
        for lvl in range(LEVELS):
            zero = torch.zeros_like(ref[lvl])
            stacked = torch.stack([f[lvl] if f is not None else zero for f in features], 1)
            masked.append(mask_slots(stacked, mask))
        logits, prms = self.decoder(masked)
        return RFNetOutput(logits=logits, prms=prms, features=features)


def upsample_probabilities(prob: Tensor, factor: int) -> Tensor:
    """A region map upsampled by ``factor`` (trilinear, ``align_corners=True``, applied to the
    probabilities as the official ``up2``/``up4``/``up8``)."""
    if factor == 1:
        return prob
    return F.interpolate(prob, scale_factor=factor, mode="trilinear", align_corners=True)


__all__ = [
    "LEVELS",
    "NUM_CLASSES",
    "SLOT_FROM_CANONICAL",
    "SLOT_ORDER",
    "TOTAL_STRIDE",
    "ConvBlock",
    "FusionDecoder",
    "ModalityEncoder",
    "RFNetDims",
    "RFNetNet",
    "RFNetOutput",
    "RegionAwareFusion",
    "RegionMapGenerator",
    "SeparateDecoder",
    "check_size",
    "mask_slots",
    "upsample_probabilities",
]
