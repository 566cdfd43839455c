"""GARM: Graph-guided Adaptive Refinement Module (AdaMM student, at the bottleneck).

Follows the released ``AdaptiveGraphEnhanceModule`` (Quanato607/AdaMM@f2e1733,
``models/AdaGEM.py``) arithmetic for arithmetic; only the two defects below are switchable.
Inputs: the combination-aware feature CF (the released "contour" input) and the generalisation
feature GF ("region"), both N×C×d×h×w (C = 8·C0, V = d·h·w voxels); the output (same shape)
replaces the decoder input. K = 8 nodes.

1. Node alignment, once per input (:class:`NodeAligner`; vectorised over the K nodes, which the
   released code loops over): anchors a (K×C) and widths σ = sigmoid(σ̃) (K×C); residuals
   r_kv = (x_v − a_k)/σ_k; assignment q_kv = softmax_k(−½‖r_kv‖²); node_k = Σ_v q_kv r_kv /
   (Σ_v q_kv + 1e-9), L2-normalised per node, then all K·C values L2-normalised together.
   The N×K×C node matrix becomes the N×C×K layout of the graph layers by a transpose, or (the
   released defect, ``transpose_nodes=False``) by a plain ``view``, which scrambles nodes and
   channels.
2. CF nodes only: 1×1 Conv2d (no bias) → BatchNorm2d → ReLU on N×C×K×1.
3. E = GFᵀ·CF (K×K; rows GF nodes, columns CF nodes). One graph conv with a C×C weight W and
   adjacency softmax(E) over its rows, applied to both graphs with the same E:
   X ← (softmax(E)·XᵀW)ᵀ (no bias, no residual, no activation).
4. Attention over nodes (one module for three calls): h = Linear(Xᵀ) serves as query, key and
   value; S = softmax(h hᵀ / √M), M = the number of nodes (K, or 2K for the joint graph); output
   Linear(S h). No residual. Calls: on CF, on GF, then on cat[att(CF), att(GF)] (2K nodes); the GF
   half (nodes K…2K−1) is kept. The released code also builds the node adjacency
   A = sym(cos(CF_k, GF_l) > 0.8) and the joint adjacency [[A, C], [Cᵀ, A]] and then ignores
   them (defect); with ``masked_attention=True`` the attention is restricted to their edges (self
   edges always kept, so that no node is left without one).
5. Fusion: w = softmax over the 2K rows of cat[q_CF, q_GF] (of the assignment *probabilities*);
   fused_kv = w_kv·q_CF,kv + w_{K+k,v}·q_GF,kv. Reprojection P = R·fused (R: the kept GF half,
   C×K) viewed as N×C×d×h×w; output = pred(conv1(GF + conv0(P) + CF)) with conv0, conv1 = 1×1
   Conv3d (no bias) → BatchNorm3d → ReLU, and pred a 1×1 Conv3d with bias.

The released module also builds ``region_conv1``, ``region_conv2``, ``e2r`` (with a three-layer
cascade GCN), ``mdf.conv`` and ``mdf.gcn``, none of which is ever called; they are not built here
(they change no output; 182,406 parameters at C = 128). Initialisation as released: anchors and
σ̃ uniform on [0, 1); the CF node conv uniform on ±1/√C with its BatchNorm weight uniform on
[0, 1) and bias 0; W uniform on ±1/√C; PyTorch defaults elsewhere. 119,936 parameters at C = 128.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

NODE_EPS = 1e-9
"""Added to each node's assignment mass before dividing (released value)."""
ADJ_THRESHOLD = 0.8
"""Cosine threshold of the released (ignored) node adjacency."""


class NodeAligner(nn.Module):
    """Stage 1 for one input: soft assignment of V voxels to K learnable nodes.

    Args:
        channels: C.
        nodes: K.
    """

    def __init__(self, channels: int, nodes: int) -> None:
        super().__init__()
        self.anchors = nn.Parameter(torch.rand(nodes, channels))
        self.width_logits = nn.Parameter(torch.rand(nodes, channels))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """N×C×V voxel features → (assignment q N×K×V, nodes N×K×C), in fp32."""
        # fp32 even under autocast: the squared distances are summed over C channels and then
        # exponentiated.
        with torch.autocast(x.device.type, enabled=False):
            sigma = torch.sigmoid(self.width_logits.float())
            voxels = x.float().transpose(1, 2)  # N×V×C
            anchors = self.anchors.float()[None, :, None]  # 1×K×1×C
            residual = (voxels[:, None] - anchors) / sigma[None, :, None]  # N×K×V×C
            q = (-0.5 * residual.pow(2).sum(3)).softmax(1)  # N×K×V
            mass = q.sum(2, keepdim=True) + NODE_EPS
            nodes = (q.unsqueeze(3) * residual).sum(2) / mass  # N×K×C
            nodes = F.normalize(nodes, dim=2)
            nodes = F.normalize(nodes.flatten(1), dim=1).view_as(nodes)
        return q, nodes


class NodeConv(nn.Module):
    """1×1 conv without bias → BatchNorm → ReLU (the released ``BasicConv2d``/``BasicConv3d``)."""

    def __init__(self, channels: int, dims: int) -> None:
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        norm = nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d
        self.conv = conv(channels, channels, 1, bias=False)
        self.bn = norm(channels)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


class NodeAttention(nn.Module):
    """Self-attention over the M nodes of an N×C×M graph (the released ``GATLayer``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.qk = nn.Linear(channels, channels)
        self.out = nn.Linear(channels, channels)

    def forward(self, graph: Tensor, mask: Tensor | None = None) -> Tensor:
        """graph: N×C×M; mask: optional boolean N×M×M (True = edge) → N×C×M."""
        h = self.qk(graph.transpose(1, 2))  # N×M×C: query = key = value
        m = h.shape[1]
        scores = h @ h.transpose(1, 2) / math.sqrt(m)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        return self.out(scores.softmax(2) @ h).transpose(1, 2)


def node_adjacency(
    cf: Tensor, gf: Tensor, threshold: float = ADJ_THRESHOLD
) -> tuple[Tensor, Tensor]:
    """The released node adjacencies, as boolean edge masks with self edges added.

    Args:
        cf, gf: N×C×K graphs.

    Returns:
        single: N×K×K edges of sym(cos(CF_k, GF_l) > threshold), used for each graph alone.
        joint: N×2K×2K edges of [[single, cross], [crossᵀ, single]] (CF nodes first).
    """
    sim = F.normalize(cf.transpose(1, 2), dim=2) @ F.normalize(gf, dim=1)  # N×K×K
    cross = sim > threshold
    single = cross | cross.transpose(1, 2)
    joint = torch.cat(
        [torch.cat([single, cross], 2), torch.cat([cross.transpose(1, 2), single], 2)], 1
    )
    k = cf.shape[2]
    single = single | torch.eye(k, dtype=torch.bool, device=cf.device)
    joint = joint | torch.eye(2 * k, dtype=torch.bool, device=cf.device)
    return single, joint


class GARM(nn.Module):
    """Graph-guided refinement of the student's bottleneck; see the module docstring.

    Args:
        channels: C of CF and GF.
        nodes: K.
        transpose_nodes: lay the node matrix out by a transpose (``fixed``) rather than the
            released ``view``.
        masked_attention: restrict the attention to the node adjacency (``fixed``) rather than
            computing and ignoring it.
        adj_threshold: cosine threshold of the node adjacency.
    """

    def __init__(
        self,
        channels: int,
        nodes: int = 8,
        transpose_nodes: bool = True,
        masked_attention: bool = True,
        adj_threshold: float = ADJ_THRESHOLD,
    ) -> None:
        super().__init__()
        self.channels, self.nodes = channels, nodes
        self.transpose_nodes = transpose_nodes
        self.masked_attention = masked_attention
        self.adj_threshold = adj_threshold
        self.align_cf = NodeAligner(channels, nodes)
        self.align_gf = NodeAligner(channels, nodes)
        self.cf_node_conv = NodeConv(channels, dims=2)
        self.gcn_weight = nn.Parameter(torch.empty(channels, channels))
        self.attention = NodeAttention(channels)
        self.reproject = NodeConv(channels, dims=3)
        self.merge = NodeConv(channels, dims=3)
        self.out = nn.Conv3d(channels, channels, 1)
        bound = 1.0 / math.sqrt(channels)
        nn.init.uniform_(self.gcn_weight, -bound, bound)
        nn.init.uniform_(self.cf_node_conv.conv.weight, -bound, bound)
        nn.init.uniform_(self.cf_node_conv.bn.weight)
        nn.init.zeros_(self.cf_node_conv.bn.bias)

    def _layout(self, nodes: Tensor) -> Tensor:
        """N×K×C node matrix → the N×C×K graph layout."""
        n, k, c = nodes.shape
        if self.transpose_nodes:
            return nodes.transpose(1, 2)
        return nodes.reshape(n, c, k)  # the released view: scrambles nodes and channels

    def forward(self, cf: Tensor, gf: Tensor, trace: dict[str, Tensor] | None = None) -> Tensor:
        """CF, GF: N×C×d×h×w → refined bottleneck N×C×d×h×w.

        ``trace``, if given, receives the intermediate tensors (names as in the golden fixture:
        ``nodes_gf``/``nodes_cf`` N×C×K, ``assign_gf``/``assign_cf`` N×K×V, ``cf_graph_conv``
        N×C×K×1, ``affinity`` N×K×K, ``gcn_gf``/``gcn_cf``, ``gat_cf``/``gat_gf`` N×C×K,
        ``gat_joint`` N×C×2K, ``reproj`` and ``merge_in`` N×C×d×h×w).
        """
        k = self.nodes
        q_gf, nodes_gf = self.align_gf(gf.flatten(2))
        q_cf, nodes_cf = self.align_cf(cf.flatten(2))
        g_gf = self._layout(nodes_gf).to(gf.dtype)
        g_cf0 = self._layout(nodes_cf).to(cf.dtype)
        g_cf_conv = self.cf_node_conv(g_cf0.unsqueeze(3))
        g_cf = g_cf_conv.squeeze(3)
        affinity = g_gf.transpose(1, 2) @ g_cf  # N×K×K
        adjacency = affinity.softmax(2)
        gcn_gf = (adjacency @ (g_gf.transpose(1, 2) @ self.gcn_weight)).transpose(1, 2)
        gcn_cf = (adjacency @ (g_cf.transpose(1, 2) @ self.gcn_weight)).transpose(1, 2)
        single = joint_mask = None
        if self.masked_attention:
            single, joint_mask = node_adjacency(gcn_cf, gcn_gf, self.adj_threshold)
        gat_cf = self.attention(gcn_cf, single)
        gat_gf = self.attention(gcn_gf, single)
        gat_joint = self.attention(torch.cat([gat_cf, gat_gf], 2), joint_mask)
        refined_gf = gat_joint[:, :, k:]
        weights = torch.cat([q_cf, q_gf], 1).softmax(1)  # N×2K×V
        fused = weights[:, :k] * q_cf + weights[:, k:] * q_gf
        reproj = (refined_gf @ fused.to(refined_gf.dtype)).view_as(gf)
        merge_in = gf + self.reproject(reproj) + cf
        out = self.out(self.merge(merge_in))
        if trace is not None:
            trace.update(
                nodes_gf=g_gf,
                assign_gf=q_gf,
                nodes_cf=g_cf0,
                assign_cf=q_cf,
                cf_graph_conv=g_cf_conv,
                affinity=affinity,
                gcn_gf=gcn_gf,
                gcn_cf=gcn_cf,
                gat_cf=gat_cf,
                gat_gf=gat_gf,
                gat_joint=gat_joint,
                reproj=reproj,
                merge_in=merge_in,
            )
        return out
