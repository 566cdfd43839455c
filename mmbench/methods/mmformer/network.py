"""The mmFormer network (Zhang et al., MICCAI 2022), written for mmbench from the paper and the
behaviour of the official code (YaoZhang93/mmFormer @b18663a, checked number for number against
its golden fixture, see ``docs/methods/mmformer.md``).

Modality slots follow the official order **FLAIR, T1ce, T1, T2** (:data:`SLOT_ORDER`), not
mmbench's canonical order: the inter-modal token reshape (:func:`tokens_to_volume`) ties each
bottleneck voxel to one slot, so the slot order is part of the architecture. The strategy
permutes canonical inputs with :data:`SLOT_FROM_CANONICAL`.

Shapes use N (batch), K = 4 (slots), L (classes: background, NCR/NET, edema, enhancing),
``b`` (basic width; level ``l`` has ``b·2**l`` channels at ``1/2**l`` of the input size,
levels 0..4), T (transformer width), G = gd·gh·gw (tokens per slot, the 1/16 grid).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from monai.networks.blocks import MLPBlock
from torch import Tensor, nn
from torch.nn import functional as F

from mmbench.subsets import MODALITIES

SLOT_ORDER: tuple[str, ...] = ("FLAIR", "T1ce", "T1", "T2")
"""Modality of each slot: the official channel order (``preprocess.py`` stacks them so)."""

SLOT_FROM_CANONICAL: tuple[int, ...] = tuple(MODALITIES.index(m) for m in SLOT_ORDER)
"""Canonical channel index of each slot: ``x_slots = x_canonical[:, SLOT_FROM_CANONICAL]``."""

LEVELS = 5
"""Resolution levels of the encoders (four stride-2 stages: total stride 16)."""

TOTAL_STRIDE = 2 ** (LEVELS - 1)

NUM_CLASSES = 4
"""Softmax classes: 0 background, 1 NCR/NET, 2 edema, 3 enhancing tumour."""

LEAKY_SLOPE = 0.2
NORM_EPS = 1e-5


@dataclass(frozen=True)
class MMFormerDims:
    """Sizes of an mmFormer network.

    Attributes:
        basic: channels of level 0 (official ``basic_dims`` = 8); level ``l`` has ``basic·2**l``.
        transformer: token width T (official ``transformer_basic_dims`` = 512).
        mlp: hidden width of the transformer MLP (official ``mlp_dim`` = 4096).
        heads: attention heads (official 8).
        depth: layers of each transformer (official 1).
        grid: bottleneck token grid (gd, gh, gw) = input size / 16 (official 8³ for 128³).
        dropout: dropout of the transformers (official 0.1).
        num_classes: softmax classes (4 for BraTS 2018-2021).
    """

    basic: int = 8
    transformer: int = 512
    mlp: int = 4096
    heads: int = 8
    depth: int = 1
    grid: tuple[int, int, int] = (8, 8, 8)
    dropout: float = 0.1
    num_classes: int = NUM_CLASSES

    @property
    def tokens(self) -> int:
        """Tokens per slot, G = gd·gh·gw."""
        gd, gh, gw = self.grid
        return gd * gh * gw

    def channels(self, level: int) -> int:
        return self.basic * 2**level

    @classmethod
    def from_width(cls, width: int, patch_size: Sequence[int], **overrides: object) -> MMFormerDims:
        """Dimensions for an mmbench preset width C0 and training crop.

        One multiplier rule: the official sizes belong to C0 = 16 (the ``paper`` preset), and
        every official channel count and transformer width is scaled by ``basic / 8`` with
        ``basic = max(1, width // 2)`` (= width / 16 · 8 for even widths): basic 8, T 512,
        MLP 4096 at C0 16; 4, 256, 2048 at C0 8; 2, 128, 1024 at C0 4. Heads stay 8. The token
        grid is the crop divided by the total stride 16.

        Raises:
            ValueError: a crop side is not a multiple of 16.
        """
        basic = max(1, int(width) // 2)
        grid = grid_for(patch_size)
        values: dict[str, object] = {
            "basic": basic,
            "transformer": 64 * basic,
            "mlp": 512 * basic,
            "grid": grid,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]


def grid_for(size: Sequence[int]) -> tuple[int, int, int]:
    """Token grid of an input of spatial ``size`` (each side a multiple of 16)."""
    size = tuple(int(s) for s in size)
    if len(size) != 3 or any(s <= 0 or s % TOTAL_STRIDE for s in size):
        raise ValueError(
            f"mmformer needs a crop whose sides are positive multiples of {TOTAL_STRIDE} "
            f"(four stride-2 stages); got {size}"
        )
    return size[0] // TOTAL_STRIDE, size[1] // TOTAL_STRIDE, size[2] // TOTAL_STRIDE


# --------------------------------------------------------------------------------- conv blocks
def instance_norm(x: Tensor) -> Tensor:
    """Instance normalisation without affine parameters (eps 1e-5), N×C×… → N×C×….

    A map of one voxel (the bottleneck of a 16³ crop) normalises to exactly zero, the value of
    (x − mean) / sqrt(var + eps) there; PyTorch refuses that case, the official 128³ model never
    meets it.
    """
    if x[0, 0].numel() == 1:
        return torch.zeros_like(x)
    return F.instance_norm(x, eps=NORM_EPS)


def conv3d(conv: nn.Conv3d, x: Tensor) -> Tensor:
    """``conv(x)``, except that reflect padding along a side too short to reflect (one voxel:
    the bottleneck of a 16-voxel crop side) falls back to replicate padding on that side, the
    only values a mirror of one voxel can hold; the other sides are still reflected. The
    official 128³ model never meets that case."""
    pad = conv.padding[0] if isinstance(conv.padding, tuple) else 0
    if conv.padding_mode != "reflect" or not pad or min(x.shape[2:]) > pad:
        return conv(x)
    for axis in range(3):  # D, H, W; F.pad lists the last axis first
        widths = [0] * 6
        widths[2 * (2 - axis)] = widths[2 * (2 - axis) + 1] = pad
        mode = "reflect" if x.shape[2 + axis] > pad else "replicate"
        x = F.pad(x, tuple(widths), mode=mode)
    return F.conv3d(x, conv.weight, conv.bias, conv.stride)


class PreNormConv(nn.Module):
    """Instance norm (no affine, eps 1e-5) → LeakyReLU(0.2) → Conv3d, normalisation **before**
    the convolution (official ``general_conv3d_prenorm``). N×C_in×… → N×C_out×…/stride."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding_mode: str = "reflect",
    ) -> None:
        super().__init__()
        self.conv = nn.Conv3d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=kernel_size // 2,
            padding_mode=padding_mode,
        )

    def forward(self, x: Tensor) -> Tensor:
        return conv3d(self.conv, F.leaky_relu(instance_norm(x), LEAKY_SLOPE, inplace=True))


class ResidualPair(nn.Sequential):
    """Two 3³ pre-norm convs whose output is added to the input by the caller."""

    def __init__(self, channels: int) -> None:
        super().__init__(PreNormConv(channels, channels), PreNormConv(channels, channels))


class ModalityEncoder(nn.Module):
    """The encoder of one modality (official ``Encoder``): N×1×D×H×W → five feature maps.

    Level 0: a plain 3³ conv (reflect padding, no norm) 1 → b, then ``x + refine(x)``. Levels
    1-4: a pre-norm 3³ conv of stride 2 doubling the channels, then ``x + refine(x)``.
    """

    def __init__(self, basic: int) -> None:
        super().__init__()
        self.stem = nn.Conv3d(1, basic, 3, padding=1, padding_mode="reflect")
        self.down = nn.ModuleList(
            PreNormConv(basic * 2 ** (lvl - 1), basic * 2**lvl, stride=2)
            for lvl in range(1, LEVELS)
        )
        self.refine = nn.ModuleList(ResidualPair(basic * 2**lvl) for lvl in range(LEVELS))

    def forward(self, x: Tensor) -> list[Tensor]:
        """Features ``[x0..x4]``, level ``l``: N×(b·2**l)×(D/2**l)×…"""
        x = conv3d(self.stem, x)
        feats = [x + self.refine[0](x)]
        for lvl in range(1, LEVELS):
            x = self.down[lvl - 1](feats[-1])
            feats.append(x + self.refine[lvl](x))
        return feats


# --------------------------------------------------------------------------------- transformer
class SelfAttention(nn.Module):
    """Multi-head self-attention: ``qkv`` Linear T → 3T **without bias** (features laid out as
    (q|k|v, head, head_dim)), softmax(q·kᵀ / sqrt(head_dim)) with dropout on the attention
    weights, ``proj`` Linear T → T with bias, dropout. N×S×T → N×S×T.

    MONAI's ``SABlock`` computes the same but needs ``einops`` (not an mmbench dependency) and
    applies its dropout even in eval mode on its fused-attention path.
    """

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"token width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.dropout = dropout
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        n, s, t = x.shape
        q, k, v = self.qkv(x).reshape(n, s, 3, self.heads, t // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0
        )
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(n, s, t)))


class TransformerLayer(nn.Module):
    """One pre-norm transformer layer with the positional embedding added to the residual
    stream at the start of the layer (official ``Transformer`` body; N×S×T → N×S×T):

    ``x = x + pos; x = x + drop(attn(LN(x))); x = x + mlp(LN(x))``.

    The MLP is MONAI's :class:`MLPBlock` (Linear, exact GELU, dropout, Linear, dropout). The
    extra ``drop`` after the attention is the official ``PreNormDrop``'s: in training the
    attention branch passes two dropouts, as in the official code.
    """

    def __init__(self, dims: MMFormerDims) -> None:
        super().__init__()
        t = dims.transformer
        self.attn_norm = nn.LayerNorm(t)
        self.attn = SelfAttention(t, dims.heads, dims.dropout)
        self.attn_drop = nn.Dropout(dims.dropout)
        self.mlp_norm = nn.LayerNorm(t)
        self.mlp = MLPBlock(t, dims.mlp, dropout_rate=dims.dropout, act="GELU")

    def forward(self, x: Tensor, pos: Tensor) -> Tensor:
        x = x + pos
        x = x + self.attn_drop(self.attn(self.attn_norm(x)))
        return x + self.mlp(self.mlp_norm(x))


class TransformerStack(nn.Module):
    """``depth`` :class:`TransformerLayer`; the positional embedding enters every layer."""

    def __init__(self, dims: MMFormerDims) -> None:
        super().__init__()
        self.layers = nn.ModuleList(TransformerLayer(dims) for _ in range(dims.depth))

    def forward(self, x: Tensor, pos: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x, pos)
        return x


class IntraModalTransformer(nn.Module):
    """Tokens of one slot: 1×1×1 conv b·16 → T on x4, tokens in (d, h, w) raster order
    (token n = d·gh·gw + h·gw + w), then a :class:`TransformerStack`. N×16b×g³ → N×G×T."""

    def __init__(self, dims: MMFormerDims) -> None:
        super().__init__()
        self.embed = nn.Conv3d(dims.channels(LEVELS - 1), dims.transformer, 1)
        self.transformer = TransformerStack(dims)

    def forward(self, x4: Tensor, pos: Tensor) -> Tensor:
        tokens = self.embed(x4).flatten(2).transpose(1, 2)
        return self.transformer(tokens, pos)


def tokens_to_volume(tokens: Tensor, grid: Sequence[int]) -> Tensor:
    """The official inter-token reshape: N×(K·G)×T → N×(K·T)×gd×gh×gw by a plain row-major
    view of each sample's tokens as G rows of K·T values.

    Voxel s (raster order) therefore holds tokens K·s … K·s+K−1 side by side (channel c is
    feature c mod T of token K·s + c div T): with the slot-major token order, the first G/K
    voxels read only FLAIR tokens, the next G/K only T1ce tokens, and so on. This is what the
    official ``.view(B, p, p, p, T·K)`` does; a per-slot rearrangement would not match it.
    """
    n, s, t = tokens.shape
    gd, gh, gw = (int(g) for g in grid)
    return tokens.reshape(n, gd, gh, gw, s * t // (gd * gh * gw)).permute(0, 4, 1, 2, 3)


class InterModalTransformer(nn.Module):
    """The inter-modal transformer over the K·G tokens of all slots (absent slots enter as
    zero tokens: plain, unmasked attention) and the 1×1×1 conv K·T → K·16b on the
    :func:`tokens_to_volume` reshape of its output."""

    def __init__(self, dims: MMFormerDims, slots: int = len(SLOT_ORDER)) -> None:
        super().__init__()
        self.grid = dims.grid
        self.transformer = TransformerStack(dims)
        self.project = nn.Conv3d(slots * dims.transformer, slots * dims.channels(LEVELS - 1), 1)

    def forward(self, tokens: Tensor, pos: Tensor) -> tuple[Tensor, Tensor]:
        """N×(K·G)×T tokens, 1×(K·G)×T positions → (N×(K·G)×T tokens, N×K·16b×g³ volume)."""
        out = self.transformer(tokens, pos)
        return out, self.project(tokens_to_volume(out, self.grid))


# --------------------------------------------------------------------------------- decoders
def up2(x: Tensor) -> Tensor:
    """Trilinear ×2 upsampling with ``align_corners=True`` (official ``nn.Upsample``)."""
    return F.interpolate(x, scale_factor=2, mode="trilinear", align_corners=True)


class SkipFusion(nn.Sequential):
    """Fusion of the K slots of one level (official ``fusion_prenorm``, "RFM"): pre-norm 1×1
    conv K·C → C, pre-norm 3³ conv with **zero** padding, pre-norm 1×1 conv. N×K·C×… → N×C×…"""

    def __init__(self, channels: int, slots: int = len(SLOT_ORDER)) -> None:
        super().__init__(
            PreNormConv(slots * channels, channels, 1),
            PreNormConv(channels, channels, 3, padding_mode="zeros"),
            PreNormConv(channels, channels, 1),
        )


class DecoderLevels(nn.Module):
    """The per-level convs shared by both decoders, indexed by output level l = 0..3:
    ``up[l]`` (3³, C_{l+1} → C_l after ×2 upsampling), ``merge[l]`` (3³, 2·C_l → C_l on the
    concatenation with the skip), ``out[l]`` (1×1, C_l → C_l)."""

    def __init__(self, basic: int) -> None:
        super().__init__()
        c = [basic * 2**lvl for lvl in range(LEVELS)]
        self.up = nn.ModuleList(PreNormConv(c[lvl + 1], c[lvl]) for lvl in range(LEVELS - 1))
        self.merge = nn.ModuleList(PreNormConv(2 * c[lvl], c[lvl]) for lvl in range(LEVELS - 1))
        self.out = nn.ModuleList(PreNormConv(c[lvl], c[lvl], 1) for lvl in range(LEVELS - 1))


class FusionDecoder(DecoderLevels):
    """The shared decoder of the fused path (official ``Decoder_fuse``).

    Level 4: ``d = skip_fusion[4](inter_x4)``; every other level l: ``d = out[l](merge[l](
    cat[skip_fusion[l](x_l), up[l](up2(d))]))`` (skip **first**). ``heads[l]`` (1×1 conv to L
    classes) gives the deep-supervision logits at levels 1-4 and the final logits at level 0.
    """

    def __init__(self, basic: int, num_classes: int = NUM_CLASSES) -> None:
        super().__init__(basic)
        c = [basic * 2**lvl for lvl in range(LEVELS)]
        self.skip_fusion = nn.ModuleList(SkipFusion(ch) for ch in c)
        self.heads = nn.ModuleList(nn.Conv3d(ch, num_classes, 1) for ch in c)

    def forward(self, skips: Sequence[Tensor], bottleneck: Tensor) -> list[Tensor]:
        """Masked slot-major skips (levels 0-3, N×K·C_l×…) and the inter-modal bottleneck
        (N×K·C_4×g³) → logits per level ``[level 0 (final), level 1, ..., level 4]``, each
        N×L× at its own resolution."""
        d = self.skip_fusion[LEVELS - 1](bottleneck)
        logits = [self.heads[LEVELS - 1](d)]
        for lvl in reversed(range(LEVELS - 1)):
            up = self.up[lvl](up2(d))
            skip = self.skip_fusion[lvl](skips[lvl])
            d = self.out[lvl](self.merge[lvl](torch.cat([skip, up], 1)))
            logits.append(self.heads[lvl](d))
        return logits[::-1]


class SeparateDecoder(DecoderLevels):
    """The auxiliary per-modality decoder (official ``Decoder_sep``, training only): one set of
    weights applied to each slot's raw (unmasked) encoder features; concatenation order
    decoder **first**, skip second. Five N×C_l maps → N×L×D×H×W logits."""

    def __init__(self, basic: int, num_classes: int = NUM_CLASSES) -> None:
        super().__init__(basic)
        self.head = nn.Conv3d(basic, num_classes, 1)

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        d = feats[LEVELS - 1]
        for lvl in reversed(range(LEVELS - 1)):
            d = self.up[lvl](up2(d))
            d = self.out[lvl](self.merge[lvl](torch.cat([d, feats[lvl]], 1)))
        return self.head(d)


# --------------------------------------------------------------------------------- network
@dataclass
class MMFormerOutput:
    """What one forward pass computed.

    Attributes:
        logits: N×L×D×H×W final logits (softmax: the official ``fuse_pred``).
        deep_logits: deep-supervision logits of levels 1-4 (official ``seg_d1..seg_d4``), each
            N×L at 1/2, 1/4, 1/8, 1/16 of the input size.
        features: per slot (K entries, ``None`` for a slot whose encoder did not run) the five
            raw encoder maps, for the per-modality decoder.
        intra_tokens: N×K×G×T intra-modal outputs (zeros for slots not computed).
        inter_tokens: N×(K·G)×T inter-modal outputs.
        inter_volume: N×K·16b×g³ input of the fusion decoder's level 4.
    """

    logits: Tensor
    deep_logits: list[Tensor]
    features: list[list[Tensor] | None]
    intra_tokens: Tensor
    inter_tokens: Tensor
    inter_volume: Tensor
    computed: tuple[int, ...] = field(default=())

    def encoder_bottleneck(self) -> Tensor:
        """N×K×16b×g³ encoder level-4 maps of the computed slots (zeros elsewhere)."""
        ref = next(f for f in self.features if f is not None)[LEVELS - 1]
        return torch.stack(
            [f[LEVELS - 1] if f is not None else torch.zeros_like(ref) for f in self.features],
            dim=1,
        )


def mask_slots(stacked: Tensor, mask: Tensor) -> Tensor:
    """Zero the absent slots of N×K×… (``mask`` N×K bool): a selection, not a product, so that
    non-finite values in an absent slot cannot leak."""
    keep = mask.reshape(*mask.shape, *([1] * (stacked.ndim - 2)))
    return torch.where(keep, stacked, torch.zeros((), dtype=stacked.dtype, device=stacked.device))


class MMFormerNet(nn.Module):
    """The fused path of mmFormer: four modality encoders, four intra-modal transformers, the
    inter-modal transformer and the fusion decoder (the per-modality decoder is a separate
    module, :class:`SeparateDecoder`, used in training only).

    ``position`` holds the four learnable positional embeddings (official ``<m>_pos``),
    K×G×T in slot order; each intra-modal transformer uses its own, the inter-modal
    transformer their concatenation.
    """

    def __init__(self, dims: MMFormerDims) -> None:
        super().__init__()
        self.dims = dims
        slots = len(SLOT_ORDER)
        self.encoders = nn.ModuleList(ModalityEncoder(dims.basic) for _ in range(slots))
        self.position = nn.Parameter(torch.zeros(slots, dims.tokens, dims.transformer))
        self.intra = nn.ModuleList(IntraModalTransformer(dims) for _ in range(slots))
        self.inter = InterModalTransformer(dims, slots)
        self.decoder = FusionDecoder(dims.basic, dims.num_classes)

    def forward(self, x: Tensor, mask: Tensor, run: Sequence[int] | None = None) -> MMFormerOutput:
        """One forward pass.

        Args:
            x: N×K×D×H×W input in slot order (FLAIR, T1ce, T1, T2); D, H, W = 16 × the grid.
            mask: N×K bool, True where the slot's modality is available (per sample).
            run: slots whose encoder and intra-modal transformer run; default: the slots
                available in at least one sample. Slots outside it are never read; they enter
                the fusion as zeros, which is what masking their computed features would give.

        Raises:
            ValueError: the spatial size does not give the network's token grid.
        """
        expected = tuple(TOTAL_STRIDE * g for g in self.dims.grid)
        if tuple(x.shape[-3:]) != expected:
            raise ValueError(
                f"mmformer was built for {expected} inputs (its positional embeddings hold a "
                f"{self.dims.grid} token grid); got {tuple(x.shape[-3:])}. Evaluate with the "
                "training crop as the window (eval.window: null)."
            )
        mask = mask.to(device=x.device, dtype=torch.bool)
        if run is None:
            run = [k for k in range(len(SLOT_ORDER)) if bool(mask[:, k].any())]
        run = sorted(int(k) for k in run)
        if not run:
            raise ValueError("mmformer needs at least one available modality")
        features: list[list[Tensor] | None] = [None] * len(SLOT_ORDER)
        intra: list[Tensor | None] = [None] * len(SLOT_ORDER)
        for k in run:
            features[k] = self.encoders[k](x[:, k : k + 1])
            intra[k] = self.intra[k](features[k][LEVELS - 1], self.position[k : k + 1])
        ref_feats = features[run[0]]
        ref_tokens = intra[run[0]]
        assert ref_feats is not None and ref_tokens is not None
        zero_tokens = torch.zeros_like(ref_tokens)
        intra_tokens = torch.stack([t if t is not None else zero_tokens for t in intra], 1)
        skips = []
        for lvl in range(LEVELS - 1):
            zero = torch.zeros_like(ref_feats[lvl])
            stacked = torch.stack([f[lvl] if f is not None else zero for f in features], 1)
            skips.append(mask_slots(stacked, mask).flatten(1, 2))
        tokens = mask_slots(intra_tokens, mask).flatten(1, 2)  # N×(K·G)×T, slot-major
        pos = self.position.reshape(1, -1, self.dims.transformer)
        inter_tokens, inter_volume = self.inter(tokens, pos)
        logits = self.decoder(skips, inter_volume)
        return MMFormerOutput(
            logits=logits[0],
            deep_logits=logits[1:],
            features=features,
            intra_tokens=intra_tokens,
            inter_tokens=inter_tokens,
            inter_volume=inter_volume,
            computed=tuple(run),
        )


def upsample_probabilities(prob: Tensor, factor: int) -> Tensor:
    """Deep-supervision output: softmax probabilities upsampled by ``factor`` (trilinear,
    ``align_corners=True``, applied to probabilities as the official code does)."""
    return F.interpolate(prob, scale_factor=factor, mode="trilinear", align_corners=True)


__all__ = [
    "LEVELS",
    "NUM_CLASSES",
    "SLOT_FROM_CANONICAL",
    "SLOT_ORDER",
    "TOTAL_STRIDE",
    "FusionDecoder",
    "IntraModalTransformer",
    "InterModalTransformer",
    "MMFormerDims",
    "MMFormerNet",
    "MMFormerOutput",
    "ModalityEncoder",
    "PreNormConv",
    "SelfAttention",
    "SeparateDecoder",
    "SkipFusion",
    "TransformerLayer",
    "grid_for",
    "mask_slots",
    "tokens_to_volume",
    "upsample_probabilities",
]
