"""uhemis (U-HeMIS): HeMIS moments over the available modalities only, official layout."""

from __future__ import annotations

import torch

from mmbench.methods import create
from mmbench.methods.uhemis import UHeMIS, class_targets, hemis_moments
from mmbench.subsets import Subset
from mmbench.testing import build, make_batch


def test_moments_known_answer_and_single_modality_variance_is_zero() -> None:
    # Two modalities, one channel, one voxel: values 1 and 3 → mean 2, population variance 1.
    feats = torch.tensor([1.0, 3.0]).reshape(1, 2, 1, 1, 1, 1)
    out = hemis_moments(feats)
    assert out.shape == (1, 2, 1, 1, 1)
    assert out.flatten().tolist() == [2.0, 1.0]
    # Three modalities (0, 3, 6): mean 3, variance (9 + 0 + 9) / 3 = 6 (divided by K, not K − 1).
    three = torch.tensor([0.0, 3.0, 6.0]).reshape(1, 3, 1, 1, 1, 1)
    assert hemis_moments(three).flatten().tolist() == [3.0, 6.0]
    # One modality: the mean is its features and the variance exactly 0 (official tf.nn.moments).
    one = torch.randn(2, 1, 4, 3, 3, 3)
    single = hemis_moments(one)
    assert torch.equal(single[:, :4], one[:, 0])
    assert torch.equal(single[:, 4:], torch.zeros_like(one[:, 0]))


def test_fusion_reads_only_the_available_modalities() -> None:
    model = build("uhemis").eval()
    assert isinstance(model, UHeMIS)
    image = make_batch(Subset.parse("T1ce+FLAIR"))["image_full"]
    with torch.no_grad():
        fused = model.fuse(image, [1, 3])
        per_mod = [model.encoders[c](image[:, c : c + 1]) for c in (1, 3)]
        for level, f in enumerate(fused):
            stack = torch.stack([p[level] for p in per_mod], 1)
            c = stack.shape[2]
            torch.testing.assert_close(f[:, :c], stack.mean(1))
            torch.testing.assert_close(f[:, c:], stack.var(1, unbiased=False))
        # The two other channels are never read: garbage there changes nothing.
        noisy = image.clone()
        noisy[:, [0, 2]] = float("nan")
        for a, b in zip(fused, model.fuse(noisy, [1, 3])):
            assert torch.equal(a, b)


def test_official_layout_at_the_official_width() -> None:
    # NB_CONV = 8, three poolings: skips of 4, 8, 16, 32 channels per modality, fused to twice
    # that (mean ‖ variance), decoder blocks ending with 16, 8, 4 channels and 4 classes.
    model = create("uhemis", preset="quick")
    assert model.encoders[0].channels == [4, 8, 16, 32]
    x = torch.zeros(1, 4, 16, 16, 16)
    fused = model.fuse(x, [0, 1, 2, 3])
    assert [f.shape[1] for f in fused] == [8, 16, 32, 64]
    assert [f.shape[-1] for f in fused] == [16, 8, 4, 2]
    assert model(x, [2]).shape == (1, 4, 16, 16, 16)
    assert model.decoder.head.in_channels == 4


def test_class_targets_one_hot_from_compartments() -> None:
    comp = make_batch(Subset.parse("T2"))["compartments"]
    target = class_targets(comp)
    assert target.shape[1] == 4
    assert torch.equal(target.sum(1), torch.ones_like(target[:, 0]))
    assert torch.equal(target[:, 1:], comp)


def test_a_few_steps_learn_the_toy_tumour() -> None:
    torch.manual_seed(0)
    model = build("uhemis")
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    batch = make_batch(Subset.parse("T1ce+FLAIR"))
    losses = []
    for _ in range(15):
        loss = model.training_step(batch, None)["main"]  # type: ignore[arg-type]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0]


def test_predict_accepts_sizes_not_divisible_by_the_stride() -> None:
    # Max pooling floors and the decoder resizes to each skip, so any window size works.
    model = build("uhemis").eval()
    with torch.no_grad():
        out = model.predict(torch.randn(1, 4, 18, 13, 11), ("T1", "FLAIR"))
    assert out.shape == (1, 3, 18, 13, 11)
    assert out.min() >= 0 and out.max() <= 1
