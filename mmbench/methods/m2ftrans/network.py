"""The M2FTrans network (Shi et al., IEEE JBHI 2023), written for mmbench from the paper and the
behaviour of the official ``M2FTrans_v1`` model (Jun-Jie-Shi/M2FTrans @03a0b28,
``fusiontrans.Model``; checked number for number against its golden fixture, see
``docs/methods/m2ftrans.md``).

M2FTrans derives from mmFormer: the slot order (FLAIR, T1ce, T1, T2), the instance norm, the
reflect-padding fallback, the transformer layer, the slot masking and the upsampling helpers are
imported from :mod:`mmbench.methods.mmformer.network`. What is its own: post-norm convolutions,
the modality-masked fusion transformer with learnable fusion tokens, the attention-derived
modality weights, the channel-wise cross-token attention of the two deepest decoder levels and
five deep-supervision heads.

Shapes use N (batch), K = 4 (slots), L (classes), ``b`` (basic width; level ``l`` = 0..4 has
``b·2**l`` channels at ``1/2**l`` of the input size), T = 16·b (token width = level-4
channels), G = gd·gh·gw (tokens per slot, the 1/16 grid; the official 80³ input gives 5³).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from mmbench.methods.mmformer.network import (
    LEAKY_SLOPE,
    LEVELS,
    NUM_CLASSES,
    SLOT_ORDER,
    TOTAL_STRIDE,
    MMFormerOutput,
    SelfAttention,
    TransformerLayer,
    conv3d,
    instance_norm,
    mask_slots,
    up2,
)
from mmbench.methods.mmformer.network import SeparateDecoder as MMFormerSeparateDecoder
from mmbench.methods.mmformer.network import grid_for as mmformer_grid_for

SLOTS = len(SLOT_ORDER)
LAYER_NORM_EPS = 1e-6
"""Epsilon of the channel LayerNorms of the cross-token blocks (the transformer's are 1e-5)."""


@dataclass(frozen=True)
class M2FTransDims:
    """Sizes of an M2FTrans network.

    Attributes:
        basic: channels of level 0 (official ``basic_dims`` = 16); the token width is 16·basic.
        mlp: hidden width of the transformer MLP (official ``mlp_dim`` = 4096).
        heads: attention heads of the masked transformer (official 8).
        depth: layers of the masked transformer (official 3).
        grid: token grid (gd, gh, gw) = input size / 16 (official 5³ for 80³).
        dropout: dropout of the transformer and of the cross-token projections (official 0.1).
        prm: hidden width of the deep-supervision heads (official 16).
        cross_layers: blocks of each cross-token module (official 2).
        expand: expansion of the grouped-conv feed-forward blocks (official 4).
        num_classes: softmax classes (4 for BraTS 2018-2021).
    """

    basic: int = 16
    mlp: int = 4096
    heads: int = 8
    depth: int = 3
    grid: tuple[int, int, int] = (5, 5, 5)
    dropout: float = 0.1
    prm: int = 16
    cross_layers: int = 2
    expand: int = 4
    num_classes: int = NUM_CLASSES

    @property
    def transformer(self) -> int:
        """Token width T = level-4 channels (official ``basic_dims * 16`` = 256)."""
        return self.channels(LEVELS - 1)

    @property
    def tokens(self) -> int:
        """Tokens per slot, G = gd·gh·gw."""
        gd, gh, gw = self.grid
        return gd * gh * gw

    def channels(self, level: int) -> int:
        return self.basic * 2**level

    @classmethod
    def from_width(cls, width: int, patch_size: Sequence[int], **overrides: object) -> M2FTransDims:
        """Dimensions for an mmbench preset width C0 and training crop.

        The mmFormer rule (official sizes at C0 = 16, every width scaled by C0 / 16): basic = C0
        (official 16), MLP = 256·basic (official 4096), deep-supervision heads = basic (official
        16); heads 8, depth 3. The token grid is the crop divided by the total stride 16.

        Raises:
            ValueError: a crop side is not a positive multiple of 16.
        """
        basic = max(1, int(width))
        values: dict[str, object] = {
            "basic": basic,
            "mlp": 256 * basic,
            "prm": basic,
            "grid": grid_for(patch_size),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]


def grid_for(size: Sequence[int]) -> tuple[int, int, int]:
    """Token grid of an input of spatial ``size`` (each side a multiple of 16): mmFormer's rule,
    with the error naming m2ftrans."""
    try:
        return mmformer_grid_for(size)
    except ValueError as exc:
        raise ValueError(str(exc).replace("mmformer", "m2ftrans")) from None


# --------------------------------------------------------------------------------- conv blocks
class PostNormConv(nn.Module):
    """Conv3d → instance norm (no affine, eps 1e-5) → LeakyReLU(0.2), normalisation **after**
    the convolution (official ``general_conv3d``; reflect padding). N×C_in×… → N×C_out×…/stride."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1
    ) -> None:
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
        return F.leaky_relu(instance_norm(conv3d(self.conv, x)), LEAKY_SLOPE)


class PostNormEncoder(nn.Module):
    """The encoder of one modality (official ``Encoder``): N×1×D×H×W → five feature maps.

    Level 0: post-norm 3³ conv 1 → b, then ``x + refine(x)``; levels 1-4: post-norm 3³ conv of
    stride 2 doubling the channels, then ``x + refine(x)`` (refine = two post-norm 3³ convs).
    """

    def __init__(self, basic: int) -> None:
        super().__init__()
        c = [basic * 2**lvl for lvl in range(LEVELS)]
        self.stem = PostNormConv(1, basic)
        self.down = nn.ModuleList(
            PostNormConv(c[lvl - 1], c[lvl], stride=2) for lvl in range(1, LEVELS)
        )
        self.refine = nn.ModuleList(
            nn.Sequential(PostNormConv(ch, ch), PostNormConv(ch, ch)) for ch in c
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        """Features ``[x0..x4]``, level ``l``: N×(b·2**l)×(D/2**l)×…"""
        x = self.stem(x)
        feats = [x + self.refine[0](x)]
        for lvl in range(1, LEVELS):
            x = self.down[lvl - 1](feats[-1])
            feats.append(x + self.refine[lvl](x))
        return feats


def channel_norm(norm: nn.LayerNorm, x: Tensor) -> Tensor:
    """LayerNorm over the channels of each voxel: N×C×… → N×C×…"""
    return norm(x.movedim(1, -1)).movedim(-1, 1)


class DepthwiseBlock(nn.Module):
    """Official ``DepthWiseConvBlock``: 1×1 conv C_in → C_in, channel LN, GELU, 3³ depthwise conv
    (zero padding), LN, GELU, 1×1 conv C_in → C_out, LN (no final activation). LN eps 1e-6."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(in_channels, in_channels, 1)
        self.norm1 = nn.LayerNorm(in_channels, eps=LAYER_NORM_EPS)
        self.conv2 = nn.Conv3d(in_channels, in_channels, 3, padding=1, groups=in_channels)
        self.norm2 = nn.LayerNorm(in_channels, eps=LAYER_NORM_EPS)
        self.conv3 = nn.Conv3d(in_channels, out_channels, 1)
        self.norm3 = nn.LayerNorm(out_channels, eps=LAYER_NORM_EPS)

    def forward(self, x: Tensor) -> Tensor:
        x = F.gelu(channel_norm(self.norm1, self.conv1(x)))
        x = F.gelu(channel_norm(self.norm2, self.conv2(x)))
        return channel_norm(self.norm3, self.conv3(x))


class GroupFeedForward(nn.Module):
    """Official ``GroupConvBlock``: 1×1 conv C → eC, LN, GELU, 3³ grouped conv eC → eC with C
    groups (zero padding), LN, GELU, 1×1 conv eC → C, LN; ``GELU(x + out)`` (the activation
    **after** the residual sum). N×C×… → N×C×…"""

    def __init__(self, channels: int, expand: int = 4) -> None:
        super().__init__()
        wide = channels * expand
        self.pwconv1 = nn.Conv3d(channels, wide, 1)
        self.norm1 = nn.LayerNorm(wide, eps=LAYER_NORM_EPS)
        self.dwconv = nn.Conv3d(wide, wide, 3, padding=1, groups=channels)
        self.norm2 = nn.LayerNorm(wide, eps=LAYER_NORM_EPS)
        self.pwconv2 = nn.Conv3d(wide, channels, 1)
        self.norm3 = nn.LayerNorm(channels, eps=LAYER_NORM_EPS)

    def forward(self, x: Tensor) -> Tensor:
        out = F.gelu(channel_norm(self.norm1, self.pwconv1(x)))
        out = F.gelu(channel_norm(self.norm2, self.dwconv(out)))
        return F.gelu(x + channel_norm(self.norm3, self.pwconv2(out)))


# --------------------------------------------------------------------------------- transformer
def fusion_attention_mask(available: Tensor, tokens: int) -> Tensor:
    """Official ``mask_gen_fusion`` as an N×S×S bool "may attend" mask, S = (K+1)·G.

    A modality token sees only the tokens of its own slot (absent slots included); a fusion
    token sees the fusion tokens and the tokens of the **available** slots.

    Args:
        available: N×K bool.
        tokens: G, tokens per block.
    """
    n, k = available.shape
    block = torch.arange((k + 1) * tokens, device=available.device) // tokens
    rows, cols = block[:, None], block[None, :]
    own = (rows == cols).expand(n, -1, -1)
    seen = torch.cat([available, available.new_ones(n, 1)], 1)[:, block]  # N×S: key visible
    return own | ((rows == k) & seen[:, None, :])


class MaskedAttention(SelfAttention):
    """mmFormer's self-attention with an attention mask, returning the attention probabilities
    (after their dropout) besides the output, as the official ``MaskedAttention`` does.
    N×S×T, N×S×S bool → (N×S×T, N×heads×S×S)."""

    def forward(self, x: Tensor, allowed: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        n, s, t = x.shape
        q, k, v = self.qkv(x).reshape(n, s, 3, self.heads, t // self.heads).permute(2, 0, 3, 1, 4)
        logits = (q @ k.transpose(-2, -1)) * (t // self.heads) ** -0.5
        logits = logits.masked_fill(~allowed[:, None], float("-inf"))
        attn = F.dropout(logits.softmax(-1), self.dropout, self.training)
        out = (attn @ v).transpose(1, 2).reshape(n, s, t)
        return self.proj_drop(self.proj(out)), attn


class MaskedTransformerLayer(TransformerLayer):
    """mmFormer's pre-norm layer (LN eps 1e-5, exact-GELU MLP, dropout on the attention branch
    twice) with :class:`MaskedAttention` and **no** positional embedding inside the layer."""

    def __init__(self, dims: M2FTransDims) -> None:
        super().__init__(dims)  # type: ignore[arg-type]
        self.attn = MaskedAttention(dims.transformer, dims.heads, dims.dropout)

    def forward(self, x: Tensor, allowed: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        out, attn = self.attn(self.attn_norm(x), allowed)
        x = x + self.attn_drop(out)
        return x + self.mlp(self.mlp_norm(x)), attn


class MaskedTransformer(nn.Module):
    """``depth`` :class:`MaskedTransformerLayer`; returns the tokens and the first layer's
    attention probabilities, **detached** as in the official code: the modality weights
    derived from them pass no gradient back into the transformer."""

    def __init__(self, dims: M2FTransDims) -> None:
        super().__init__()
        self.layers = nn.ModuleList(MaskedTransformerLayer(dims) for _ in range(dims.depth))

    def forward(self, x: Tensor, allowed: Tensor) -> tuple[Tensor, Tensor]:
        first: Tensor | None = None
        for layer in self.layers:
            x, attn = layer(x, allowed)
            first = attn.detach() if first is None else first
        assert first is not None
        return x, first


def modality_weights(attn: Tensor, grid: Sequence[int], slots: int = SLOTS) -> Tensor:
    """Official ``Weight_Attention`` maps: the first layer's attention of the fusion queries
    (the last block of rows), summed over heads then over queries, split by key block.

    N×heads×S×S → N×K×gd×gh×gw, unnormalised (all key blocks together sum to heads·G; an
    absent slot's weight is exactly 0).
    """
    n, tokens = attn.shape[0], attn.shape[-1] // (slots + 1)
    keys = attn[:, :, slots * tokens :, :].sum(1).sum(1)  # N×S
    return keys[:, : slots * tokens].reshape(n, slots, *(int(g) for g in grid))


def nearest_up2(x: Tensor) -> Tensor:
    """Nearest-neighbour ×2 upsampling (the official modality-weight upsampling)."""
    return F.interpolate(x, scale_factor=2, mode="nearest")


# --------------------------------------------------------------------------------- cross tokens
class CrossTokenAttention(nn.Module):
    """Official ``MultiMaskAttentionLayer``: channel-to-channel attention of a query map over the
    K slot maps. q = query_map(query) (N×C×V, V voxels), per slot k its own key and value maps,
    concatenated over slots (N×KC×V); attn = softmax(q·Kᵀ·V^−0.5) (N×C×KC) with the columns of
    absent slots at −inf; out = out_project(attn·V as a volume); returns query + drop(out)."""

    def __init__(self, channels: int, dropout: float, slots: int = SLOTS) -> None:
        super().__init__()
        self.query_map = DepthwiseBlock(channels, channels)
        self.key_maps = nn.ModuleList(DepthwiseBlock(channels, channels) for _ in range(slots))
        self.value_maps = nn.ModuleList(DepthwiseBlock(channels, channels) for _ in range(slots))
        self.out_project = DepthwiseBlock(channels, channels)
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, query: Tensor, maps: Tensor, available: Tensor) -> Tensor:
        """N×C×… query, N×K×C×… slot maps (absent slots zero), N×K bool → N×C×…"""
        n, c = query.shape[:2]
        q = self.query_map(query).flatten(2)
        keys = torch.cat([m(maps[:, k]).flatten(2) for k, m in enumerate(self.key_maps)], 1)
        values = torch.cat([m(maps[:, k]).flatten(2) for k, m in enumerate(self.value_maps)], 1)
        logits = (q @ keys.transpose(-2, -1)) * q.shape[-1] ** -0.5
        visible = available.repeat_interleave(c, dim=1)  # N×KC
        attn = logits.masked_fill(~visible[:, None, :], float("-inf")).softmax(-1)
        out = self.out_project((attn @ values).reshape(query.shape))
        return query + self.proj_drop(out)


class CrossTokenBlock(nn.Module):
    """Official ``MultiMaskCrossBlock``: cross attention, ``ffn1`` on the query; with
    ``refine_maps`` one ``ffn2`` (shared by the slots) refines each slot map for the next
    block."""

    def __init__(self, channels: int, dims: M2FTransDims, refine_maps: bool) -> None:
        super().__init__()
        self.cross_attn = CrossTokenAttention(channels, dims.dropout)
        self.ffn1 = GroupFeedForward(channels, dims.expand)
        self.ffn2 = GroupFeedForward(channels, dims.expand) if refine_maps else None

    def forward(self, query: Tensor, maps: Tensor, available: Tensor) -> tuple[Tensor, Tensor]:
        query = self.ffn1(self.cross_attn(query, maps, available))
        if self.ffn2 is not None:
            # the slots stacked on the batch axis: the block is per voxel and per sample
            maps = self.ffn2(maps.flatten(0, 1)).reshape(maps.shape)
        return query, maps


class CrossTokens(nn.Module):
    """Official ``MultiCrossToken``: ``cross_layers`` blocks, all but the last refining the
    slot maps. Returns the refined query (N×C×…)."""

    def __init__(self, channels: int, dims: M2FTransDims) -> None:
        super().__init__()
        n = dims.cross_layers
        self.layers = nn.ModuleList(CrossTokenBlock(channels, dims, i != n - 1) for i in range(n))

    def forward(self, maps: Tensor, query: Tensor, available: Tensor) -> Tensor:
        for layer in self.layers:
            query, maps = layer(query, maps, available)
        return query


# --------------------------------------------------------------------------------- decoders
class PostNormLevels(nn.Module):
    """Per-level post-norm convs of both decoders, indexed by level: ``up[l]`` (l = 0..3; 3³,
    C_{l+1} → C_l after ×2 upsampling), ``merge[l]`` (3³, 2·C_l → C_l) and ``out[l]`` (1×1) for
    l = 0 .. ``levels`` − 1 (the fusion decoder also merges at level 4)."""

    def __init__(self, basic: int, levels: int = LEVELS - 1) -> None:
        super().__init__()
        c = [basic * 2**lvl for lvl in range(LEVELS)]
        self.up = nn.ModuleList(PostNormConv(c[lvl + 1], c[lvl]) for lvl in range(LEVELS - 1))
        self.merge = nn.ModuleList(PostNormConv(2 * c[lvl], c[lvl]) for lvl in range(levels))
        self.out = nn.ModuleList(PostNormConv(c[lvl], c[lvl], 1) for lvl in range(levels))


class SkipFusion(nn.Sequential):
    """Official ``fusion_postnorm`` ("RFM"): post-norm 1×1 K·C → C, 3³ C → C, 1×1 C → C on the
    slot-major concatenation of the (masked) slot maps. N×K·C×… → N×C×…"""

    def __init__(self, channels: int, slots: int = SLOTS) -> None:
        super().__init__(
            PostNormConv(slots * channels, channels, 1),
            PostNormConv(channels, channels),
            PostNormConv(channels, channels, 1),
        )


class DeepSupervision(nn.ModuleList):
    """The five deep-supervision heads (official ``prm_fusion1..5`` without their softmax;
    training only): level l: post-norm 1×1 C_l → hidden, 1×1 → classes. They read the fusion
    decoder's feature of each level before its skip fusion (:attr:`FusionDecoderOutput.levels`)."""

    def __init__(self, dims: M2FTransDims) -> None:
        super().__init__(
            nn.Sequential(
                PostNormConv(dims.channels(lvl), dims.prm, 1),
                nn.Conv3d(dims.prm, dims.num_classes, 1),
            )
            for lvl in range(LEVELS)
        )

    def forward(self, levels: Sequence[Tensor]) -> list[Tensor]:  # type: ignore[override]
        """Decoder features of levels 0-4 → logits N×L at 1, 1/2, … 1/16 of the input size
        (official ``prm_pred1..5`` before softmax and upsampling)."""
        return [head(x) for head, x in zip(self, levels)]


@dataclass
class FusionDecoderOutput:
    """Final logits N×L×D×H×W, the decoder feature of each level 0-4 before its skip fusion
    (level 4: the fusion-token map; what the deep-supervision heads read) and the cross-token
    outputs of levels 4 and 3."""

    logits: Tensor
    levels: list[Tensor]
    cross: list[Tensor]


class FusionDecoder(PostNormLevels):
    """Official ``Decoder_fusion``. Levels 4 and 3 fuse the slots by :class:`CrossTokens`
    (query: the fusion-token map at level 4, the upsampled decoder at level 3); levels 2-0 by
    :class:`SkipFusion`. ``merge[4]``/``out[4]`` (official ``d5_c2``/``d5_out``) act on the
    concatenation of the level-4 cross-token output and the fusion-token map. Concatenation
    order: fused skip first, decoder second."""

    CROSS_LEVELS = (LEVELS - 1, LEVELS - 2)

    def __init__(self, dims: M2FTransDims) -> None:
        super().__init__(dims.basic, levels=LEVELS)
        c = [dims.channels(lvl) for lvl in range(LEVELS)]
        self.cross = nn.ModuleList(CrossTokens(c[lvl], dims) for lvl in self.CROSS_LEVELS)
        self.skip_fusion = nn.ModuleList(SkipFusion(c[lvl]) for lvl in range(LEVELS - 2))
        self.head = nn.Conv3d(dims.basic, dims.num_classes, 1)

    def forward(
        self, weighted: Sequence[Tensor], fusion: Tensor, available: Tensor
    ) -> FusionDecoderOutput:
        """Attention-weighted, masked slot maps (level l: N×K×C_l×…), the fusion-token map
        N×T×g³ and the N×K bool availability."""
        d = fusion
        levels: list[Tensor] = [fusion.new_empty(0)] * LEVELS
        cross: list[Tensor] = []
        for lvl in reversed(range(LEVELS)):
            levels[lvl] = d
            if lvl in self.CROSS_LEVELS:
                skip = self.cross[self.CROSS_LEVELS.index(lvl)](weighted[lvl], d, available)
                cross.append(skip)
            else:
                skip = self.skip_fusion[lvl](weighted[lvl].flatten(1, 2))
            d = self.out[lvl](self.merge[lvl](torch.cat([skip, d], 1)))
            if lvl:
                d = self.up[lvl - 1](up2(d))
        return FusionDecoderOutput(self.head(d), levels, cross)


class SeparateDecoder(PostNormLevels):
    """Official ``Decoder_sep`` (training only): one set of weights applied to each slot's raw
    encoder features; concatenation order decoder **first**, skip second. Five N×C_l maps →
    N×L×D×H×W logits."""

    def __init__(self, basic: int, num_classes: int = NUM_CLASSES) -> None:
        super().__init__(basic)
        self.head = nn.Conv3d(basic, num_classes, 1)

    forward = MMFormerSeparateDecoder.forward  # the same wiring, with post-norm convs


# --------------------------------------------------------------------------------- network
@dataclass
class M2FTransOutput:
    """What one forward pass computed.

    Attributes:
        logits: N×L×D×H×W final logits (softmax: the official ``fuse_pred``).
        levels: fusion-decoder features of levels 0-4 before their skip fusion (the input of
            :class:`DeepSupervision`).
        features: per slot (``None`` where the encoder did not run) the five raw encoder maps.
        tokens: N×(K+1)·G×T masked-transformer output (slot blocks, then the fusion block).
        weights: N×K×g³ attention-derived modality weights (official ``Weight_Attention``).
        cross: outputs of the level-4 and level-3 cross-token modules.
    """

    logits: Tensor
    levels: list[Tensor]
    features: list[list[Tensor] | None]
    tokens: Tensor
    weights: Tensor
    cross: list[Tensor]
    computed: tuple[int, ...] = field(default=())

    encoder_bottleneck = MMFormerOutput.encoder_bottleneck  # N×K×T×g³, zeros where not run


class M2FTransNet(nn.Module):
    """The fused path of M2FTrans: four post-norm encoders, the modality-masked fusion
    transformer over the slot tokens and the learnable fusion tokens, the attention-derived
    modality weights and the fusion decoder (the per-modality decoder is a separate module,
    :class:`SeparateDecoder`, used in training only).

    ``position`` (official ``pos``, 1×(K+1)·G×T) is added once, before the first layer;
    ``fusion`` (official ``fusion``, 1×G×T) holds the fusion tokens.
    """

    def __init__(self, dims: M2FTransDims) -> None:
        super().__init__()
        self.dims = dims
        t, g = dims.transformer, dims.tokens
        self.encoders = nn.ModuleList(PostNormEncoder(dims.basic) for _ in range(SLOTS))
        self.position = nn.Parameter(torch.zeros(1, (SLOTS + 1) * g, t))
        self.fusion = nn.Parameter(torch.randn(1, g, t))
        self.transformer = MaskedTransformer(dims)
        self.decoder = FusionDecoder(dims)

    def forward(self, x: Tensor, mask: Tensor, run: Sequence[int] | None = None) -> M2FTransOutput:
        """One forward pass.

        Args:
            x: N×K×D×H×W input in slot order (FLAIR, T1ce, T1, T2); D, H, W = 16 × the grid.
            mask: N×K bool, True where the slot's modality is available (per sample).
            run: slots whose encoder runs; default: the slots available in at least one sample.
                Other slots enter as zero features: their tokens reach only their own block of
                the transformer, and their weight is exactly zero.

        Raises:
            ValueError: the spatial size does not give the network's token grid.
        """
        grid = self.dims.grid
        expected = tuple(TOTAL_STRIDE * g for g in grid)
        if tuple(x.shape[-3:]) != expected:
            raise ValueError(
                f"m2ftrans was built for {expected} inputs (its positional embedding and fusion "
                f"tokens hold a {grid} token grid); got {tuple(x.shape[-3:])}. Evaluate with "
                "the training crop as the window (eval.window: null)."
            )
        mask = mask.to(device=x.device, dtype=torch.bool)
        if run is None:
            run = [k for k in range(SLOTS) if bool(mask[:, k].any())]
        run = sorted(int(k) for k in run)
        if not run:
            raise ValueError("m2ftrans needs at least one available modality")
        features: list[list[Tensor] | None] = [None] * SLOTS
        for k in run:
            features[k] = self.encoders[k](x[:, k : k + 1])
        ref = features[run[0]]
        assert ref is not None
        stacked = [
            torch.stack(
                [f[lvl] if f is not None else torch.zeros_like(ref[lvl]) for f in features], 1
            )
            for lvl in range(LEVELS)
        ]  # level l: N×K×C_l×…
        n, t, g = x.shape[0], self.dims.transformer, self.dims.tokens
        slot_tokens = stacked[LEVELS - 1].flatten(3).transpose(2, 3).reshape(n, SLOTS * g, t)
        tokens = torch.cat([slot_tokens, self.fusion.expand(n, -1, -1)], 1) + self.position
        tokens, attn = self.transformer(tokens, fusion_attention_mask(mask, g))
        volumes = tokens.reshape(n, SLOTS + 1, g, t).transpose(2, 3).reshape(n, SLOTS + 1, t, *grid)
        weights = modality_weights(attn, grid)
        weighted: list[Tensor] = [volumes.new_empty(0)] * LEVELS
        w = weights
        for lvl in reversed(range(LEVELS)):
            source = volumes[:, :SLOTS] if lvl == LEVELS - 1 else stacked[lvl]
            weighted[lvl] = mask_slots(source * w.unsqueeze(2), mask)
            if lvl:
                w = nearest_up2(w)
        dec = self.decoder(weighted, volumes[:, SLOTS], mask)
        return M2FTransOutput(
            logits=dec.logits,
            levels=dec.levels,
            features=features,
            tokens=tokens,
            weights=weights,
            cross=dec.cross,
            computed=tuple(run),
        )


__all__ = [
    "CrossTokenAttention",
    "CrossTokenBlock",
    "CrossTokens",
    "DeepSupervision",
    "DepthwiseBlock",
    "FusionDecoder",
    "GroupFeedForward",
    "M2FTransDims",
    "M2FTransNet",
    "M2FTransOutput",
    "MaskedAttention",
    "MaskedTransformer",
    "PostNormConv",
    "PostNormEncoder",
    "SeparateDecoder",
    "SkipFusion",
    "fusion_attention_mask",
    "grid_for",
    "modality_weights",
]
