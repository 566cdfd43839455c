"""Quality of synthesised modalities, computed one way for every method that synthesises.

``mmgan`` (imputed inputs) and ``uhved`` (reconstruction decoders) both report, for each absent
modality of a case and subset, the rows ``(modality, "psnr", dB)`` (and ``mmgan`` also
``"ssim"``) from :func:`synthesis_rows`, so their numbers are comparable.

Definitions (one case, one modality, volumes D×H×W on the preprocessed grid):

- **Mask**: the brain, the voxels where any of the four *real* modalities (``image_full``) is
  non-zero (z-score normalisation leaves the background exactly 0). Voxels outside it are never
  scored, so a method is neither rewarded nor punished for the background.
- **Range** (the PSNR peak): ``max − min`` of the real modality inside the mask (z-scored
  intensities have no fixed peak; the range of the target is the usual choice).
- **PSNR** = ``10 · log10(range² / MSE)``, MSE over the voxels in the mask, in float64.
- **SSIM**: MONAI's Gaussian-window SSIM map (σ 1.5, window 11 or smaller for tiny volumes)
  with the same range, averaged over the mask.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from monai.metrics.regression import compute_ssim_and_cs
from torch import Tensor

from mmbench.subsets import MODALITIES


def brain_mask(image_full: Tensor) -> Tensor:
    """Voxels where any modality is non-zero: N×4×D×H×W → bool N×D×H×W."""
    return (image_full != 0).any(dim=1)


def synthesis_psnr(pred: Tensor, target: Tensor, mask: Tensor) -> float:
    """PSNR in dB of one synthesised volume inside ``mask`` (see the module docstring).

    Args:
        pred, target: float D×H×W (synthesised and real modality).
        mask: bool D×H×W, at least one voxel.

    Returns:
        ``10·log10(range²/MSE)``; ``inf`` for a perfect synthesis.
    """
    p, t = pred[mask].double(), target[mask].double()
    data_range = max(float(t.max() - t.min()), 1e-6)
    mse = float((p - t).square().mean())
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range**2 / mse)


def synthesis_ssim(pred: Tensor, target: Tensor, mask: Tensor, kernel_size: int = 11) -> float:
    """SSIM map of one volume (MONAI, Gaussian window) averaged over ``mask``.

    The window shrinks (odd, at least 3) for volumes smaller than 11 voxels; the SSIM map is
    ``kernel_size - 1`` smaller than the volume (valid convolution), so the mask is cropped to it.

    Args:
        pred, target: float D×H×W.
        mask: bool D×H×W.
    """
    k = min(kernel_size, *target.shape)
    k = max(3, k - 1 + k % 2)
    t = target.float()
    inside = t[mask]
    data_range = float((inside.max() - inside.min()).clamp_min(1e-6))
    ssim_map, _ = compute_ssim_and_cs(
        pred.float()[None, None],
        t[None, None],
        spatial_dims=3,
        kernel_size=[k] * 3,
        kernel_sigma=[1.5] * 3,
        data_range=data_range,
    )
    r = k // 2
    cropped = mask[r : mask.shape[0] - r, r : mask.shape[1] - r, r : mask.shape[2] - r]
    values = ssim_map[0, 0][cropped]
    return float(values.mean()) if values.numel() else float("nan")


def synthesis_rows(
    synthesised: Tensor,
    image_full: Tensor,
    available: Sequence[str],
    ssim: bool = False,
) -> list[tuple[str, str, float]]:
    """Rows ``(modality, "psnr" [, "ssim"], value)`` for each absent modality of one case.

    Args:
        synthesised: float 1×4×D×H×W (or 4×D×H×W), the method's version of every modality in
            canonical order (only the absent channels are read).
        image_full: the real 1×4×D×H×W (or 4×D×H×W) volume; it defines the mask and range.
        available: present modality names.
        ssim: also give SSIM rows.

    Returns:
        ``[]`` when every modality is present or the brain mask is empty.
    """
    if synthesised.ndim == 4:
        synthesised = synthesised[None]
    if image_full.ndim == 4:
        image_full = image_full[None]
    absent = [m for m in MODALITIES if m not in available]
    mask = brain_mask(image_full)[0]
    if not absent or not mask.any():
        return []
    rows: list[tuple[str, str, float]] = []
    for m in absent:
        c = MODALITIES.index(m)
        pred, target = synthesised[0, c].float(), image_full[0, c].float()
        rows.append((m, "psnr", synthesis_psnr(pred, target, mask)))
        if ssim:
            rows.append((m, "ssim", synthesis_ssim(pred, target, mask)))
    return rows


__all__ = ["brain_mask", "synthesis_psnr", "synthesis_rows", "synthesis_ssim"]
