"""GARM: Graph-guided Adaptive Refinement Module (AdaMM student, at the bottleneck).

Inputs are the combination-aware feature CF and the generalisation feature GF, both N×C×D×H×W
(C = 8·C0, 1/8 resolution); the output (same shape) replaces the decoder input.

Stage 0, graph–node alignment (vectorised: the reference loops over the K nodes in Python).
For each of CF and GF, learnable anchors a (K×C) and widths σ = sigmoid(σ̃) (K×C). With x_v the
feature of voxel v, the soft assignment is q_kv = softmax_k(−½ Σ_c ((x_cv − a_kc)/σ_kc)²), computed
as three matrix products (Σ_c x²/σ², Σ_c x·a/σ², Σ_c a²/σ²). Node k = assignment-weighted mean of
(x − a_k)/σ_k, L2-normalised per node, then all K nodes L2-normalised together. CF's nodes pass a
1×1 conv + BatchNorm + ReLU.

Stage 1, cross-graph enhancement: E = GFᵀ·CF (K×K); one graph conv (weight C×C, adjacency
row-softmax(E)) applied to both graphs, with a residual: X ← X + ReLU(W·X·Aᵀ). Then one attention
layer over nodes (q = k = v from one linear map, scaled dot product, output linear, residual)
applied to CF, to GF and to their concatenation (2K nodes).

Stage 2, refinement and reprojection: the GF half of the refined joint graph; the two assignment
maps fused by a per-voxel softmax over the 2K concatenated assignment logits, folded back to K rows
(weight of GF node k + weight of CF node k); reprojection = nodes × fused assignment, then
1×1 conv + BN + ReLU; output = 1×1 conv (+BN+ReLU) over (GF + reprojection + CF), then a 1×1 conv.

Variants (``faithful`` reproduces the released code, ``fixed`` corrects it):

- node layout: the reference turns the K×C node matrix into the C×K layout of its 1-D convs with a
  plain ``view`` (which scrambles nodes and channels); ``fixed`` transposes.
- attention mask: the reference computes thresholded cosine adjacencies between nodes and then
  ignores them (plain attention over all nodes); ``fixed`` masks the attention with them
  (cosine ≥ ``adj_threshold``, default 0.5; the diagonal is always kept).
- the reference also builds a three-layer cascade GCN that is never called; it has no effect on
  any output and is built by neither variant.

Choices where the spec is silent: the residual connections of the graph conv and the attention;
the fusion softmax over assignment logits (not probabilities); BatchNorm (as the reference) for
the node and voxel convs. At C = 128, K = 8 the module has 120,320 parameters.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

EPS = 1e-6


def soft_assign(x: Tensor, anchors: Tensor, widths: Tensor) -> tuple[Tensor, Tensor]:
    """Assignment logits and node features.

    Args:
        x: N×C×V voxel features.
        anchors: K×C.
        widths: K×C, positive.

    Returns:
        logits: N×K×V, −½ Σ_c ((x_cv − a_kc)/σ_kc)² (softmax over K gives the assignment).
        nodes: N×K×C, assignment-weighted means of (x − a_k)/σ_k, L2-normalised per node and then
            all nodes together.
    """
    inv = widths.pow(-2)
    sq = torch.einsum("kc,ncv->nkv", inv, x * x)
    cross = torch.einsum("kc,ncv->nkv", anchors * inv, x)
    const = (anchors * anchors * inv).sum(1)
    logits = -0.5 * (sq - 2 * cross + const[None, :, None])
    q = logits.softmax(1)
    mass = q.sum(2).unsqueeze(2)  # N×K×1
    weighted = torch.einsum("nkv,ncv->nkc", q, x)
    nodes = (weighted - anchors * mass) / widths / (mass + EPS)
    nodes = F.normalize(nodes, dim=2)
    nodes = F.normalize(nodes.flatten(1), dim=1).view_as(nodes)
    return logits, nodes


class NodeAligner(nn.Module):
    """Stage 0 for one input: learnable anchors and widths of K nodes in C channels."""

    def __init__(self, channels: int, nodes: int) -> None:
        super().__init__()
        self.anchors = nn.Parameter(torch.randn(nodes, channels) * 0.1)
        self.width_logits = nn.Parameter(torch.zeros(nodes, channels))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """N×C×V → (logits N×K×V, nodes N×K×C); see :func:`soft_assign`."""
        # fp32 even under autocast: the expanded squared distance cancels badly in bf16.
        with torch.autocast(x.device.type, enabled=False):
            return soft_assign(x.float(), self.anchors, torch.sigmoid(self.width_logits))


def cosine_adjacency(tokens: Tensor, threshold: float) -> Tensor:
    """Boolean N×M×M adjacency: cosine similarity ≥ threshold, diagonal always on."""
    t = F.normalize(tokens, dim=2)
    adj = t @ t.transpose(1, 2) >= threshold
    eye = torch.eye(tokens.shape[1], dtype=torch.bool, device=tokens.device)
    return adj | eye


class NodeAttention(nn.Module):
    """Self-attention over graph nodes with one shared q = k = v map; N×M×C → N×M×C."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.qkv = nn.Linear(channels, channels)
        self.out = nn.Linear(channels, channels)

    def forward(self, tokens: Tensor, mask: Tensor | None = None) -> Tensor:
        h = self.qkv(tokens)
        scores = h @ h.transpose(1, 2) / math.sqrt(h.shape[2])
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        return tokens + self.out(scores.softmax(2) @ h)


def _conv_bn_relu(channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(channels, channels, 1), nn.BatchNorm3d(channels), nn.ReLU(inplace=False)
    )


class GARM(nn.Module):
    """Graph-guided refinement of the student's bottleneck; see the module docstring.

    Args:
        channels: C of CF and GF.
        nodes: K.
        faithful: reproduce the reference's view-for-transpose and unmasked attention.
        adj_threshold: cosine threshold of the node adjacency (``fixed`` only).
    """

    def __init__(
        self, channels: int, nodes: int = 8, faithful: bool = False, adj_threshold: float = 0.5
    ) -> None:
        super().__init__()
        self.channels, self.nodes = channels, nodes
        self.faithful = faithful
        self.adj_threshold = adj_threshold
        self.align_cf = NodeAligner(channels, nodes)
        self.align_gf = NodeAligner(channels, nodes)
        self.cf_nodes = nn.Sequential(
            nn.Conv1d(channels, channels, 1), nn.BatchNorm1d(channels), nn.ReLU(inplace=False)
        )
        self.gcn = nn.Linear(channels, channels, bias=False)
        self.attention = NodeAttention(channels)
        self.reproject = _conv_bn_relu(channels)
        self.merge = _conv_bn_relu(channels)
        self.out = nn.Conv3d(channels, channels, 1)

    def _to_channels_first(self, nodes: Tensor) -> Tensor:
        """N×K×C node matrix → the N×C×K layout of the 1-D convs."""
        n, k, c = nodes.shape
        if self.faithful:
            return nodes.reshape(n, c, k)  # the reference's view: scrambles nodes and channels
        return nodes.transpose(1, 2)

    def _attend(self, tokens: Tensor) -> Tensor:
        mask = None
        if not self.faithful:
            mask = cosine_adjacency(tokens, self.adj_threshold)
        return self.attention(tokens, mask)

    def graphs(self, cf: Tensor, gf: Tensor) -> dict[str, Tensor]:
        """Stages 0 and 1. cf, gf: N×C×D×H×W. Returns the intermediate tensors by name:
        ``logits_cf``/``logits_gf`` (N×K×V), ``nodes_cf``/``nodes_gf`` (N×K×C, stage 0 output,
        before the node conv), ``joint_gf`` (N×K×C, GF half of the refined joint graph).
        """
        x_cf, x_gf = cf.flatten(2), gf.flatten(2)
        logits_cf, nodes_cf = self.align_cf(x_cf)
        logits_gf, nodes_gf = self.align_gf(x_gf)
        g_cf = self.cf_nodes(self._to_channels_first(nodes_cf))  # N×C×K
        g_gf = self._to_channels_first(nodes_gf)
        adjacency = (g_gf.transpose(1, 2) @ g_cf).softmax(2)  # E = GFᵀ·CF, row-softmax, N×K×K

        def graph_conv(g: Tensor) -> Tensor:  # g: N×C×K
            msg = (g @ adjacency.transpose(1, 2)).transpose(1, 2)  # N×K×C
            return g.transpose(1, 2) + F.relu(self.gcn(msg))  # N×K×C tokens

        t_cf = self._attend(graph_conv(g_cf))
        t_gf = self._attend(graph_conv(g_gf))
        joint = self._attend(torch.cat([t_gf, t_cf], 1))
        return {
            "logits_cf": logits_cf,
            "logits_gf": logits_gf,
            "nodes_cf": nodes_cf,
            "nodes_gf": nodes_gf,
            "joint_gf": joint[:, : self.nodes],
        }

    def forward(self, cf: Tensor, gf: Tensor) -> Tensor:
        """CF, GF: N×C×D×H×W → refined bottleneck N×C×D×H×W."""
        g = self.graphs(cf, gf)
        k = self.nodes
        weights = torch.cat([g["logits_gf"], g["logits_cf"]], 1).softmax(1)  # N×2K×V
        fused = weights[:, :k] + weights[:, k:]  # N×K×V
        reproj = (g["joint_gf"].transpose(1, 2) @ fused).view_as(gf)  # N×C×V → N×C×D×H×W
        reproj = self.reproject(reproj)
        return self.out(self.merge(gf + reproj + cf))
