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
    consistency_loss,
    global_style_matching,
    global_style_matching_faithful,
    gram,
    gram_loss,
    rampup_weight,
)
from mmbench.methods.adamm.garm import GARM, cosine_adjacency, soft_assign
from mmbench.methods.adamm.lgrm import (
    PresenceHead,
    presence_gate,
    presence_targets,
    reliability_weights,
    soft_dice_loss,
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
    net = AdaBackbone(4, 3, W)
    bank = AdapterBank(W)
    garm = GARM(8 * W)
    x = torch.randn(2, 4, S, S, S)
    for adapters, g in [(None, None), (bank.get(NON_FULL_SUBSETS[0]), garm)]:
        f = net(x, adapters, g)
        assert f.logits.shape == (2, 3, S, S, S)
        assert f.u2.shape == (2, W, S, S, S)
        for t in (f.c3d, f.style, f.content, f.bottleneck):
            assert t.shape == (2, 8 * W, S // 8, S // 8, S // 8)


def test_backbone_gradients_reach_every_used_parameter() -> None:
    torch.manual_seed(0)
    net, bank, garm = AdaBackbone(4, 3, W), AdapterBank(W), GARM(8 * W)
    subset = NON_FULL_SUBSETS[3]
    f = net(torch.randn(2, 4, S, S, S), bank.get(subset), garm)
    (f.logits.sum() + f.style.sum()).backward()
    assert _grads_ok(net) and _grads_ok(garm) and _grads_ok(bank.sets[subset.code])
    other = bank.sets[NON_FULL_SUBSETS[4].code]
    assert all(p.grad is None for p in other.parameters())


def test_backbone_parameter_count_at_width_16() -> None:
    net = AdaBackbone(4, 3, 16)
    assert sum(p.numel() for p in net.parameters()) == 4_778_195


# ----------------------------------------------------------------------------------- adapters
def test_bank_is_keyed_by_the_14_non_full_subset_codes() -> None:
    bank = AdapterBank(W)
    assert sorted(bank.sets.keys()) == sorted(s.code for s in ALL_SUBSETS if not s.is_full)
    assert len(bank.sets) == 14
    assert bank.get(FULL) is None
    assert bank.get(ALL_SUBSETS[1]) is bank.sets["0100"]  # T1ce alone


def test_adapter_set_size_matches_reference_at_width_16() -> None:
    bank = AdapterBank(16)
    assert sum(p.numel() for p in bank.sets["0101"].parameters()) == 134_288
    assert bank.sets["0101"].enc1.down.out_channels == 64  # hidden = 4·C0


# ----------------------------------------------------------------------------------- GARM
def _loop_assign(x: torch.Tensor, anchors: torch.Tensor, widths: torch.Tensor):
    """Reference: one Python iteration per node (as the released code)."""
    n, c, v = x.shape
    k = anchors.shape[0]
    logits = torch.empty(n, k, v, dtype=x.dtype)
    for i in range(k):
        z = (x - anchors[i][None, :, None]) / widths[i][None, :, None]
        logits[:, i] = -0.5 * (z * z).sum(1)
    q = logits.softmax(1)
    nodes = torch.empty(n, k, c, dtype=x.dtype)
    for i in range(k):
        z = (x - anchors[i][None, :, None]) / widths[i][None, :, None]
        nodes[:, i] = (q[:, i : i + 1] * z).sum(2) / (q[:, i].sum(1, keepdim=True) + 1e-6)
        nodes[:, i] = F.normalize(nodes[:, i], dim=1)
    nodes = F.normalize(nodes.flatten(1), dim=1).view(n, k, c)
    return logits, nodes


def test_vectorised_assignment_equals_per_node_loop() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, 27, generator=g, dtype=torch.float64)
    anchors = torch.randn(8, 16, generator=g, dtype=torch.float64) * 0.5
    widths = torch.sigmoid(torch.randn(8, 16, generator=g, dtype=torch.float64))
    logits, nodes = soft_assign(x, anchors, widths)
    ref_logits, ref_nodes = _loop_assign(x, anchors, widths)
    assert torch.allclose(logits, ref_logits, atol=1e-5, rtol=1e-5)
    assert torch.allclose(nodes, ref_nodes, atol=1e-5)
    assert torch.allclose(nodes.flatten(1).norm(dim=1), torch.ones(2, dtype=torch.float64))


def test_garm_shape_and_gradients() -> None:
    torch.manual_seed(0)
    garm = GARM(8 * W).train()
    cf = torch.randn(2, 8 * W, 2, 2, 2, requires_grad=True)
    gf = torch.randn(2, 8 * W, 2, 2, 2, requires_grad=True)
    out = garm(cf, gf)
    assert out.shape == cf.shape
    out.pow(2).sum().backward()
    assert _grads_ok(garm)
    assert cf.grad is not None and gf.grad is not None


def test_garm_faithful_scrambles_nodes_and_fixed_transposes() -> None:
    torch.manual_seed(0)
    fixed, faithful = GARM(16, nodes=4), GARM(16, nodes=4, faithful=True)
    faithful.load_state_dict(fixed.state_dict())
    nodes = torch.randn(2, 4, 16)
    assert torch.equal(fixed._to_channels_first(nodes), nodes.transpose(1, 2))
    assert torch.equal(faithful._to_channels_first(nodes), nodes.reshape(2, 16, 4))
    assert not torch.equal(faithful._to_channels_first(nodes), nodes.transpose(1, 2))
    fixed.eval(), faithful.eval()
    cf, gf = torch.randn(1, 16, 2, 2, 2), torch.randn(1, 16, 2, 2, 2)
    assert not torch.allclose(fixed(cf, gf), faithful(cf, gf))


def test_fixed_attention_uses_the_adjacency_and_faithful_ignores_it() -> None:
    torch.manual_seed(0)
    garm = GARM(16, nodes=4, adj_threshold=2.0)  # cosine never ≥ 2: only self-edges remain
    tokens = torch.randn(1, 4, 16)
    att = garm.attention
    self_only = tokens + att.out(att.qkv(tokens))  # softmax over one entry = 1
    assert torch.allclose(garm._attend(tokens), self_only, atol=1e-6)
    garm.faithful = True
    assert not torch.allclose(garm._attend(tokens), self_only, atol=1e-3)
    adj = cosine_adjacency(torch.tensor([[[1.0, 0.0], [1.0, 0.1], [-1.0, 0.0]]]), 0.5)
    assert adj[0].tolist() == [[True, True, False], [True, True, False], [False, False, True]]


# ----------------------------------------------------------------------------------- BBDM
def test_gram_and_gsm_match_hand_computation() -> None:
    g = torch.Generator().manual_seed(0)
    ft = [torch.randn(2, 3, 2, 2, 2, generator=g) for _ in range(3)]
    fs = [torch.randn(2, 3, 2, 2, 2, generator=g) for _ in range(3)]
    a = ft[0][0].reshape(3, 8)
    assert torch.allclose(gram(ft[0])[0], a @ a.T / 24)
    expected = 0.0
    for i, j in [(0, 1), (0, 2), (1, 2)]:
        for n in range(2):
            mt = ft[i][n].reshape(3, 8) @ ft[j][n].reshape(3, 8).T / 24
            ms = fs[i][n].reshape(3, 8) @ fs[j][n].reshape(3, 8).T / 24
            expected += ((mt - ms) ** 2).sum().item() / 2
    assert math.isclose(global_style_matching(ft, fs).item(), expected, rel_tol=1e-5)
    assert gram_loss(ft[1], ft[1]).item() == 0.0
    assert gram_loss(ft[1], fs[1]).item() > 0


def test_faithful_gsm_degenerates_at_batch_one() -> None:
    g = torch.Generator().manual_seed(1)
    ft = [torch.randn(1, 3, 2, 2, 2, generator=g, requires_grad=True) for _ in range(3)]
    fs = [torch.randn(1, 3, 2, 2, 2, generator=g) for _ in range(3)]
    faithful = global_style_matching_faithful(ft, fs)
    assert faithful.item() == 0.0
    assert global_style_matching(ft, fs).item() > 0
    faithful.backward()  # still a graph: the training step can always back-propagate it


def test_discriminator_handles_small_and_large_style_maps() -> None:
    torch.manual_seed(0)
    d = StyleDiscriminator(8 * W)
    for side in (2, 6, 12):
        out = d(torch.randn(3, 8 * W, side, side, side))
        assert out.shape == (3,)
    assert sum(p.numel() for p in StyleDiscriminator(128).parameters()) == 3_146_433


def test_consistency_and_rampup() -> None:
    a, b = torch.zeros(2, 3, 4, 4, 4), torch.zeros(2, 3, 4, 4, 4)
    b[:, 2] = 0.5
    assert math.isclose(consistency_loss(a, b).item(), 0.25)
    assert math.isclose(rampup_weight(0.0, 0.1), 10 * math.exp(-5))
    assert math.isclose(rampup_weight(0.05, 0.1), 10 * math.exp(-5 * 0.25))
    assert rampup_weight(0.1, 0.1) == 10.0 and rampup_weight(0.7, 0.1) == 10.0


# ----------------------------------------------------------------------------------- LGRM
def test_presence_head_targets_and_weights() -> None:
    torch.manual_seed(0)
    head = PresenceHead(W)
    u2 = torch.randn(2, W, 8, 8, 8)
    logits = head(u2)
    assert logits.shape == (2, 3)
    logits.sum().backward()
    assert _grads_ok(head)
    comp = torch.zeros(2, 3, 4, 4, 4)
    comp[0, 1, 1, 1, 1] = 1
    comp[1, 2] = 1
    y = presence_targets(comp)
    assert y.tolist() == [[0, 1, 0], [0, 0, 1]]
    w = reliability_weights(torch.zeros(2, 3), y)
    assert torch.allclose(w, torch.full((2, 3), 1.5))


def test_gate_erases_labels_at_or_below_half_and_keeps_above() -> None:
    prob = torch.rand(2, 3, 4, 4, 4) * 0.5 + 0.5
    presence = torch.tensor([[0.5, 0.51, 0.2], [0.9, 0.5, 0.500001]])
    out = presence_gate(prob, presence)
    assert (out[0, 0] == 0).all() and (out[0, 2] == 0).all() and (out[1, 1] == 0).all()
    assert torch.equal(out[0, 1], prob[0, 1])
    assert torch.equal(out[1, 0], prob[1, 0]) and torch.equal(out[1, 2], prob[1, 2])


def test_soft_dice_loss_values() -> None:
    y = torch.zeros(1, 3, 4, 4, 4)
    y[0, 0, :2] = 1
    loss = soft_dice_loss(y.clone(), y)
    assert loss[0, 0].item() == pytest.approx(0.0, abs=1e-6)
    assert loss[0, 1].item() == pytest.approx(1.0)  # empty label, empty prediction: no overlap
    half = soft_dice_loss(y * 0.5, y)[0, 0].item()
    assert half == pytest.approx(1 - 2 * 0.5 * 32 / (0.25 * 32 + 32 + 1e-7))
