"""Synthesis PSNR/SSIM: one definition (mask, range) shared by mmgan and uhved."""

from __future__ import annotations

import math

import pytest
import torch

from mmbench.methods.synthesis_metrics import brain_mask, synthesis_psnr, synthesis_rows
from mmbench.subsets import Subset


def test_psnr_known_answer_inside_the_brain_mask() -> None:
    target = torch.zeros(8, 8, 8)
    target[2:6, 2:6, 2:6] = torch.linspace(-1.0, 1.0, 64).reshape(4, 4, 4)  # range 2
    mask = torch.zeros(8, 8, 8, dtype=torch.bool)
    mask[2:6, 2:6, 2:6] = True
    pred = target + 0.1
    pred[~mask] = 50.0  # outside the mask: ignored
    assert synthesis_psnr(pred, target, mask) == pytest.approx(10 * math.log10(4 / 0.01))
    assert synthesis_psnr(target, target, mask) == math.inf


def test_rows_use_the_real_volume_for_mask_and_range() -> None:
    g = torch.Generator().manual_seed(0)
    full = torch.randn(1, 4, 8, 8, 8, generator=g)
    full[..., :2] = 0  # background
    synthesised = full + 0.1
    rows = synthesis_rows(synthesised, full, Subset.parse("T1ce").available, ssim=True)
    assert [(m, k) for m, k, _ in rows] == [
        (m, k) for m in ("T1", "T2", "FLAIR") for k in ("psnr", "ssim")
    ]
    mask = brain_mask(full)[0]
    for m, k, v in rows:
        if k == "psnr":
            c = ("T1", "T1ce", "T2", "FLAIR").index(m)
            inside = full[0, c][mask]
            expected = 10 * math.log10(float(inside.max() - inside.min()) ** 2 / 0.01)
            assert v == pytest.approx(expected, rel=1e-5)
    assert synthesis_rows(full, full, ("T1", "T1ce", "T2", "FLAIR")) == []
