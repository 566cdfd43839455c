"""Unit tests of AdaMM's components: backbone, adapters, GARM, BBDM, LGRM (tiny volumes)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from mmbench.methods.adamm.adapters import NON_FULL_SUBSETS, AdapterBank
from mmbench.methods.adamm.backbone import AdaBackbone
from mmbench.methods.adamm.bbdm import (
    StyleDiscriminator,
    consistency_terms,
    consistency_weight,
    gsm_intended,
    gsm_released,
    style_gram_loss,
    style_gram_sumsq,
)
from mmbench.methods.adamm.garm import GARM, NodeAligner, node_adjacency
from mmbench.methods.adamm.lgrm import (
    PresenceHead,
    dice_loss_per_sample,
    presence_bce,
    presence_gate,
    presence_targets,
    reliability_weights,
)
from mmbench.subsets import ALL_SUBSETS, FULL

W = 4  # base width of the tests
S = 16  # volume side


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny convs run several times faster on one thread, above all on shared cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _grads_ok(module: torch.nn.Module) -> bool:
    return all(p.grad is not None and torch.isfinite(p.grad).all() for p in module.parameters())


# ----------------------------------------------------------------------------------- backbone
def test_backbone_shapes_plain_and_adapted() -> None:
    torch.manual_seed(0)
    net, bank, garm = AdaBackbone(4, W).eval(), AdapterBank(W).eval(), GARM(8 * W).eval()
    x = torch.randn(2, 4, S, S, S)
    plain = net(x)
    assert plain.cf is None and plain.bottleneck is plain.gf
    adapted = net(x, bank.get(NON_FULL_SUBSETS[0]), garm)
    for f in (plain, adapted):
        assert f.logits.shape == (2, 4, S, S, S)  # NETC, ED, ET, untrained background
        assert f.u2.shape == (2, W, S, S, S)
        assert f.global_style.shape == (2, 24 * W, S // 8, S // 8, S // 8)
        for t in (f.c3d, f.style, f.content, f.gf, f.bottleneck):
            assert t.shape == (2, 8 * W, S // 8, S // 8, S // 8)
    assert adapted.cf is not None and adapted.cf.shape == adapted.gf.shape


def test_fourth_encoder_adapter_is_a_branch_off_the_shared_path() -> None:
    """Released layout: A3 feeds CF only; the shared c4d, style, GF and c3d never see it, while
    the trunk adapters A0–A2 do reach them."""
    torch.manual_seed(0)
    net, bank = AdaBackbone(4, W).eval(), AdapterBank(W).eval()
    subset = NON_FULL_SUBSETS[5]
    adapters = bank.get(subset)
    x = torch.randn(1, 4, S, S, S)
    with torch.no_grad():
        before = net(x, adapters)
        for p in adapters.enc[3].parameters():
            p.add_(0.5)
        after = net(x, adapters)
        for name in ("c3d", "style", "content", "gf"):
            assert torch.equal(getattr(before, name), getattr(after, name)), name
        assert not torch.allclose(before.cf, after.cf)
        for p in adapters.enc[2].parameters():
            p.add_(0.5)
        moved = net(x, adapters)
        assert torch.equal(moved.c3d, after.c3d)  # c3d is taken before its adapter
        assert not torch.allclose(moved.content, after.content)


def test_backbone_gradients_reach_every_used_parameter() -> None:
    torch.manual_seed(0)
    net, bank, garm = AdaBackbone(4, W), AdapterBank(W), GARM(8 * W)
    subset = NON_FULL_SUBSETS[3]
    f = net(torch.randn(2, 4, S, S, S), bank.get(subset), garm)
    (f.logits[:, :3].sum() + f.style.sum()).backward()
    assert _grads_ok(garm) and _grads_ok(bank.sets[subset.code])
    assert all(p.grad is not None for p in net.parameters())
    other = bank.sets[NON_FULL_SUBSETS[4].code]
    assert all(p.grad is None for p in other.parameters())


def test_backbone_parameter_count_at_width_16() -> None:
    net = AdaBackbone(4, 16)
    assert sum(p.numel() for p in net.parameters()) == 4_778_212  # released, 4 outputs


# ----------------------------------------------------------------------------------- adapters
def test_bank_is_keyed_by_the_14_non_full_subset_codes() -> None:
    bank = AdapterBank(W)
    assert sorted(bank.sets.keys()) == sorted(s.code for s in ALL_SUBSETS if not s.is_full)
    assert len(bank.sets) == 14
    assert bank.get(FULL) is None
    assert bank.get(ALL_SUBSETS[1]) is bank.sets["0100"]  # T1ce alone


def test_adapter_set_matches_the_released_one_at_width_16() -> None:
    bank = AdapterBank(16)
    one = bank.sets["0101"]
    assert sum(p.numel() for p in one.parameters()) == 134_288
    assert one.enc[0].down.out_channels == 64  # hidden = 4·C0
    assert all(a.drop.p == 0.2 for a in [*one.enc, *one.dec])


def test_adapter_init_is_pytorch_default_unless_zero_init() -> None:
    torch.manual_seed(0)
    x = torch.randn(1, 2 * W, 4, 4, 4)
    released = AdapterBank(W).eval().sets["1000"].enc[0]
    identity = AdapterBank(W, zero_init=True).eval().sets["1000"].enc[0]
    assert not torch.allclose(released(x), x)
    assert torch.equal(identity(x), x)


# ----------------------------------------------------------------------------------- GARM
def _loop_assign(x: torch.Tensor, anchors: torch.Tensor, widths: torch.Tensor):
    """Reference: one Python iteration per node, as the released GraphNet3D."""
    n, c, v = x.shape
    k = anchors.shape[0]
    flat = x.transpose(1, 2)
    logits = torch.empty(n, k, v, dtype=x.dtype)
    for i in range(k):
        residual = (flat - anchors[i]) / widths[i]
        logits[:, i] = -torch.norm(residual, dim=2).pow(2) / 2
    q = logits.softmax(1)
    nodes = torch.empty(n, k, c, dtype=x.dtype)
    for i in range(k):
        residual = (flat - anchors[i]) / widths[i]
        mass = q[:, i].sum(1, keepdim=True) + 1e-9
        nodes[:, i] = (residual * q[:, i].unsqueeze(2)).sum(1) / mass
    nodes = F.normalize(nodes, dim=2)
    return q, F.normalize(nodes.flatten(1), dim=1).view(n, k, c)


def test_vectorised_assignment_equals_the_per_node_loop() -> None:
    torch.manual_seed(0)
    aligner = NodeAligner(16, 8)
    with torch.no_grad():
        aligner.anchors.mul_(0.3)
    x = torch.randn(2, 16, 27)
    q, nodes = aligner(x)
    ref_q, ref_nodes = _loop_assign(x, aligner.anchors.detach(), aligner.width_logits.sigmoid())
    assert torch.allclose(q, ref_q, atol=1e-6)
    assert torch.allclose(nodes, ref_nodes, atol=1e-6)
    assert torch.allclose(nodes.flatten(1).norm(dim=1), torch.ones(2))


def test_garm_shape_gradients_and_trace() -> None:
    torch.manual_seed(0)
    garm = GARM(8 * W).train()
    cf = torch.randn(2, 8 * W, 2, 2, 2, requires_grad=True)
    gf = torch.randn(2, 8 * W, 2, 2, 2, requires_grad=True)
    trace: dict[str, torch.Tensor] = {}
    out = garm(cf, gf, trace)
    assert out.shape == cf.shape
    assert trace["gat_joint"].shape == (2, 8 * W, 16) and trace["affinity"].shape == (2, 8, 8)
    out.pow(2).sum().backward()
    assert _grads_ok(garm)
    assert cf.grad is not None and gf.grad is not None


def test_released_view_scrambles_nodes_and_the_fix_transposes() -> None:
    torch.manual_seed(0)
    fixed = GARM(16, nodes=4)
    released = GARM(16, nodes=4, transpose_nodes=False, masked_attention=False)
    released.load_state_dict(fixed.state_dict())
    nodes = torch.randn(2, 4, 16)
    assert torch.equal(fixed._layout(nodes), nodes.transpose(1, 2))
    assert torch.equal(released._layout(nodes), nodes.reshape(2, 16, 4))
    assert not torch.equal(released._layout(nodes), nodes.transpose(1, 2))
    fixed.eval(), released.eval()
    cf, gf = torch.randn(1, 16, 2, 2, 2), torch.randn(1, 16, 2, 2, 2)
    assert not torch.allclose(fixed(cf, gf), released(cf, gf))


def test_masked_attention_keeps_only_adjacent_nodes() -> None:
    torch.manual_seed(0)
    garm = GARM(16, nodes=4).eval()
    graph = torch.randn(1, 16, 4)
    att = garm.attention
    self_only = att.out(att.qk(graph.transpose(1, 2))).transpose(1, 2)  # softmax over one = 1
    eye = torch.eye(4, dtype=torch.bool)[None]
    assert torch.allclose(att(graph, eye), self_only, atol=1e-6)
    assert not torch.allclose(att(graph, None), self_only, atol=1e-3)
    # released adjacency: cos(CF_k, GF_l) > 0.8, symmetrised; joint = [[A, C], [Cᵀ, A]]
    cf = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # C×K: node 0 = e0, node 1 = e1
    gf = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])  # node 0 = e1, node 1 = e0
    single, joint = node_adjacency(cf, gf, 0.8)
    assert single[0].tolist() == [[True, True], [True, True]]
    assert joint[0, :2, 2:].tolist() == [[False, True], [True, False]]  # cross edges C
    assert joint[0, 2:, :2].tolist() == [[False, True], [True, False]]
    single, _ = node_adjacency(cf, cf, 0.8)
    assert single[0].tolist() == [[True, False], [False, True]]


# ----------------------------------------------------------------------------------- BBDM
def test_style_gram_is_the_released_formula_with_cross_sample_blocks() -> None:
    g = torch.Generator().manual_seed(0)
    st, ss = torch.randn(2, 3, 2, 3, 4, generator=g), torch.randn(2, 3, 2, 3, 4, generator=g)
    rows_t, rows_s = st.reshape(6, 24), ss.reshape(6, 24)
    sumsq = ((rows_t @ rows_t.T - rows_s @ rows_s.T) / st.numel()).pow(2).sum()
    assert torch.allclose(style_gram_sumsq(st, ss), sumsq)
    expected = 1e-4 * sumsq / (4 * 3**2 * (2 * 3) ** 2)  # W left out of the size, as released
    assert torch.allclose(style_gram_loss(st, ss), expected)


def _gsm_by_hand(gt: torch.Tensor, gs: torch.Tensor) -> float:
    n, k, d, h, w = gt.shape
    total = 0.0
    for i in range(n):
        j = (i - 1) % n
        for c in range(k):
            mt = gt[i, c].reshape(d, h * w) @ gt[j, c].reshape(d, h * w).T / (h * w)
            ms = gs[i, c].reshape(d, h * w) @ gs[j, c].reshape(d, h * w).T / (h * w)
            total += float(((mt - ms) ** 2).sum())
    return 100 * total / (4 * d**2 * (h * w) ** 2)


@pytest.mark.parametrize("batch", [1, 3])
def test_released_gsm_pairs_each_sample_with_the_previous_one(batch: int) -> None:
    g = torch.Generator().manual_seed(batch)
    gt = torch.randn(batch, 6, 2, 3, 2, generator=g, dtype=torch.float64)
    gs = torch.randn(batch, 6, 2, 3, 2, generator=g, dtype=torch.float64)
    value = gsm_released(gt, gs)
    assert value.item() == pytest.approx(_gsm_by_hand(gt, gs), rel=1e-5)
    assert value.item() > 0  # batch 1 pairs a sample with itself: not zero


def test_intended_gsm_matches_cross_grams_of_the_three_features() -> None:
    g = torch.Generator().manual_seed(0)
    ft = [torch.randn(2, 3, 2, 2, 2, generator=g) for _ in range(3)]
    fs = [torch.randn(2, 3, 2, 2, 2, generator=g) for _ in range(3)]
    expected = 0.0
    for i, j in [(0, 2), (1, 0), (2, 1)]:
        for n in range(2):
            mt = ft[i][n].reshape(3, 8) @ ft[j][n].reshape(3, 8).T / 8
            ms = fs[i][n].reshape(3, 8) @ fs[j][n].reshape(3, 8).T / 8
            expected += float(((mt - ms) ** 2).sum())
    expected *= 100 / (4 * 3**2 * 8**2)
    assert gsm_intended(ft, fs).item() == pytest.approx(expected, rel=1e-5)
    assert gsm_intended(ft, ft).item() == 0.0


def test_discriminator_is_exact_at_the_released_size_and_works_on_any_map() -> None:
    torch.manual_seed(0)
    d = StyleDiscriminator(8 * W)
    x = torch.randn(2, 8 * W, 16, 24, 16)  # smallest released map: features exactly 2×3×2
    feats = d.features(x)
    assert feats.shape == (2, 16 * W, 2, 3, 2)
    assert torch.allclose(d(x), d.logit(feats))
    for shape, out in [((4, 4, 4), (2, 1, 1, 1, 1)), ((32, 48, 32), (2, 1, 3, 4, 3))]:
        assert d(torch.randn(2, 8 * W, *shape)).shape == out
    assert sum(p.numel() for p in StyleDiscriminator(128).parameters()) == 3_149_249


def test_consistency_terms_and_ramp() -> None:
    a, b = torch.zeros(2, 3, 4, 4, 4), torch.zeros(2, 3, 4, 4, 4)
    b[:, 2] = 0.5
    assert consistency_terms(a, b).tolist() == [0.0, 0.0, 0.25]
    assert math.isclose(consistency_weight(0), 10 * math.exp(-5))
    assert math.isclose(consistency_weight(5), 0.600546658039093, rel_tol=1e-7)
    assert consistency_weight(20) == 10.0 and consistency_weight(150) == 10.0


# ----------------------------------------------------------------------------------- LGRM
def test_presence_head_logit_is_the_mean_of_its_map() -> None:
    torch.manual_seed(0)
    head = PresenceHead(W).eval()
    u2 = torch.randn(2, W, 8, 8, 8)
    logits = head(u2)
    assert logits.shape == (2, 3)
    assert torch.allclose(head.logit_map(u2).mean((2, 3, 4)), logits, atol=1e-6)
    head.train()
    head(u2).sum().backward()
    assert _grads_ok(head)


def test_presence_targets_weights_and_bce() -> None:
    comp = torch.zeros(2, 3, 4, 4, 4)
    comp[0, 1, 1, 1, 1] = 1
    comp[1, 2] = 1
    y = presence_targets(comp)
    assert y.tolist() == [[0, 1, 0], [0, 0, 1]]
    p = torch.tensor([[0.0, 0.9, 0.2], [0.5, 1.0, 0.7]])
    assert torch.allclose(reliability_weights(p, y), 1 + (p - y).abs())
    # probabilities of exactly 0 or 1 give BCELoss's clamped log (−100), not inf
    assert presence_bce(torch.tensor([[1.0]]), torch.tensor([[0.0]])).item() == 100.0


def test_gate_erases_labels_at_or_below_half_and_keeps_above() -> None:
    prob = torch.rand(2, 4, 4, 4, 4) * 0.5 + 0.5
    presence = torch.tensor([[0.5, 0.51, 0.2], [0.9, 0.5, 0.500001]])
    out = presence_gate(prob, presence)
    assert (out[0, 0] == 0).all() and (out[0, 2] == 0).all() and (out[1, 1] == 0).all()
    assert torch.equal(out[0, 1], prob[0, 1])
    assert torch.equal(out[1, 0], prob[1, 0]) and torch.equal(out[1, 2], prob[1, 2])
    assert torch.equal(out[:, 3], prob[:, 3])  # the untrained background is not gated


def test_dice_loss_per_sample_values() -> None:
    y = torch.zeros(2, 3, 4, 4, 4)
    y[:, 0, :2] = 1
    loss = dice_loss_per_sample(y.clone(), y)
    assert loss.shape == (2, 3)
    assert loss[0, 0].item() == pytest.approx(0.0, abs=1e-6)
    assert loss[0, 1].item() == pytest.approx(1.0)  # empty label, empty prediction: no overlap
    half = dice_loss_per_sample(y * 0.5, y)[0, 0].item()
    assert half == pytest.approx(1 - 2 * 0.5 * 32 / (0.25 * 32 + 32 + 1e-7))
