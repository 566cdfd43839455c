"""U-HVED: hetero-modal variational encoder-decoder (family ``multi-task``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.metrics import PSNRMetric
from torch import Tensor, nn

from mmbench.methods.base import Batch, MethodConfig, StepContext, Strategy
from mmbench.methods.blocks import Decoder3D, Encoder3D, level_channels, pad_to_multiple
from mmbench.methods.losses import dice_bce_loss
from mmbench.methods.registry import register
from mmbench.subsets import MODALITIES

LOGVAR_RANGE = (-8.0, 8.0)
"""Clamp of the encoders' log-variances (precisions between e^-8 and e^8) for stability."""


def product_of_gaussians(mu: Tensor, logvar: Tensor) -> tuple[Tensor, Tensor]:
    """Product of K diagonal Gaussians and the unit prior N(0, I).

    Args:
        mu, logvar: N×K×C×… means and log-variances of the K experts to combine (K may be 0);
            only available modalities are passed, so absent ones cannot contribute.

    Returns:
        (mean, log-variance), each N×C×…: precision ``T = 1 + Σ_k 1/σ_k²`` and mean
        ``Σ_k μ_k/σ_k² / T`` (the prior adds precision 1 at mean 0).
    """
    precision = torch.exp(-logvar)
    total = 1.0 + precision.sum(1)
    mean = (mu * precision).sum(1) / total
    return mean, -torch.log(total)


def kl_to_unit(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(μ, σ²) ‖ N(0, 1)) per element, averaged over all elements (a scalar ≥ 0)."""
    return 0.5 * (torch.exp(logvar) + mu.square() - 1.0 - logvar).mean()


def brain_mask(image: Tensor) -> Tensor:
    """N×1×D×H×W: voxels where any channel is nonzero (background is exactly 0 after z-score)."""
    return (image != 0).any(1, keepdim=True)


@register(
    "uhved",
    family="multi-task",
    paper="Dorent et al., Hetero-Modal Variational Encoder-Decoder for Joint Modality Completion "
    "and Segmentation, MICCAI 2019",
    tags=("variational", "reconstruction", "multi-encoder"),
)
class UHVED(Strategy):
    """U-HVED: per-modality Gaussian posteriors at every scale fused as a product of Gaussians.

    Four :class:`Encoder3D` (one input channel each) run only for the available modalities; at each
    scale a 1×1×1 head gives a voxel-wise Gaussian (mean, log-variance) with ``width·2**i``
    channels. The available posteriors and the unit prior are multiplied (precision-weighted); a
    sample (the mean in eval mode, so ``predict`` is deterministic) feeds a segmentation
    :class:`Decoder3D` (WT/TC/ET) and a reconstruction :class:`Decoder3D` that outputs all four
    modalities. Loss: Dice + BCE on regions + ``recon_weight`` · L2 reconstruction of all four
    modalities against ``image_full`` inside the brain (voxels where any channel of
    ``image_full`` is nonzero) + ``kl_weight`` · mean over scales of the fused posterior's KL to
    N(0, I), ramped linearly from 0 over the first ``kl_warmup`` of training.

    Departures from the paper: the shared residual MONAI encoder/decoder at ``modality_width``
    (default ``width // 2``) instead of U-HVED's; the KL is averaged per latent element (not
    summed) and ramped, with a small weight; the segmentation head predicts overlapping regions
    with Dice + BCE instead of a label softmax; the reconstruction loss is restricted to the
    brain; the decoders read the latent of every scale as skip connections (U-HVED samples at
    each scale too, but its decoder layout differs).

    Options: ``modality_width``, ``recon_weight`` (1.0), ``kl_weight`` (0.1), ``kl_warmup``
    (0.2, fraction of training), ``depth``.
    """

    def __init__(self, config: MethodConfig) -> None:
        super().__init__(config)
        self.depth = config.depth
        width = config.width
        mwidth = int(config.option("modality_width", max(2, width // 2)))
        self.recon_weight = float(config.option("recon_weight", 1.0))
        self.kl_weight = float(config.option("kl_weight", 0.1))
        self.kl_warmup = float(config.option("kl_warmup", 0.2))
        mchans = level_channels(mwidth, self.depth)
        chans = level_channels(width, self.depth)
        self.encoders = nn.ModuleList(
            Encoder3D(1, mwidth, self.depth) for _ in range(config.in_channels)
        )
        self.heads = nn.ModuleList(
            nn.ModuleList(nn.Conv3d(mc, 2 * c, 1) for mc, c in zip(mchans, chans))
            for _ in range(config.in_channels)
        )
        self.seg_decoder = Decoder3D(width, self.depth, config.out_channels)
        self.rec_decoder = Decoder3D(width, self.depth, config.in_channels)

    def posteriors(self, image: Tensor, present: Sequence[int]) -> list[tuple[Tensor, Tensor]]:
        """Per scale, the available modalities' posteriors stacked: (μ, log σ²), N×K×C_i×…."""
        per_scale: list[list[tuple[Tensor, Tensor]]] = [[] for _ in range(self.depth + 1)]
        for m in present:
            feats = self.encoders[m](image[:, m : m + 1])
            for i, (head, f) in enumerate(zip(self.heads[m], feats)):
                mu, logvar = head(f).chunk(2, dim=1)
                per_scale[i].append((mu, logvar.clamp(*LOGVAR_RANGE)))
        return [
            (torch.stack([p[0] for p in ps], 1), torch.stack([p[1] for p in ps], 1))
            for ps in per_scale
        ]

    def forward(self, image: Tensor, present: Sequence[int], reconstruct: bool = False) -> dict:
        """Encode the ``present`` channels of N×4×D×H×W, fuse, sample, decode.

        Returns ``logits`` (N×3×D×H×W), ``posterior`` (list over scales of fused (μ, log σ²),
        N×C_i×…) and, if ``reconstruct``, ``recon`` (N×4×D×H×W, the four modalities).
        """
        fused = [product_of_gaussians(mu, lv) for mu, lv in self.posteriors(image, present)]
        if self.training:
            z = [mu + torch.exp(0.5 * lv) * torch.randn_like(mu) for mu, lv in fused]
        else:
            z = [mu for mu, _ in fused]
        out = {"logits": self.seg_decoder(z), "posterior": fused}
        if reconstruct:
            out["recon"] = self.rec_decoder(z)
        return out

    def training_step(self, batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
        present = [MODALITIES.index(m) for m in batch["available"]]
        out = self(batch["image"], present, reconstruct=True)
        seg = dice_bce_loss(out["logits"], batch["regions"])
        target = batch["image_full"].float()
        mask = brain_mask(target).float()
        sq = (out["recon"].float() - target).square() * mask
        recon = sq.sum() / (mask.sum() * target.shape[1]).clamp_min(1.0)
        kl = torch.stack([kl_to_unit(mu.float(), lv.float()) for mu, lv in out["posterior"]])
        kl = kl.mean()
        ramp = min(1.0, ctx.progress / self.kl_warmup) if self.kl_warmup > 0 else 1.0
        loss = seg + self.recon_weight * recon + self.kl_weight * ramp * kl
        return {
            "main": loss,
            "log/seg": seg.detach(),
            "log/recon": recon.detach(),
            "log/kl": kl.detach(),
        }

    @torch.no_grad()
    def reconstruct(self, image: Tensor, available: Sequence[str]) -> Tensor:
        """All four modalities N×4×D×H×W from the available ones (any size; padded inside)."""
        present = [MODALITIES.index(m) for m in available]
        x, size = pad_to_multiple(image, 2**self.depth)
        rec = self(x, present, reconstruct=True)["recon"].float()
        return rec[..., : size[0], : size[1], : size[2]]

    def predict(self, image: Tensor, available: tuple[str, ...]) -> Tensor:
        present = [MODALITIES.index(m) for m in available]
        return torch.sigmoid(self(image, present)["logits"].float())

    def extra_metrics(
        self, image: Tensor, image_full: Tensor, available: tuple[str, ...]
    ) -> list[tuple[str, str, float]]:
        """Reconstruction PSNR of each absent modality: rows ``(modality, "psnr", dB)``.

        Both volumes are compared inside the brain mask of the available channels (the
        reconstruction is set to 0 outside it); the peak is the target's range in the mask.
        """
        absent = [m for m in MODALITIES if m not in available]
        if not absent:
            return []
        was_training = self.training
        self.eval()
        present = [MODALITIES.index(m) for m in available]
        rec = self.reconstruct(image, available)
        mask = brain_mask(image[:, present]).float()
        rows = []
        for m in absent:
            c = MODALITIES.index(m)
            target = image_full[:, c : c + 1].float() * mask
            inside = target[mask.bool()]
            peak = float(inside.max() - inside.min()) if inside.numel() else 1.0
            metric = PSNRMetric(max_val=max(peak, 1e-6), reduction="mean")
            value = metric(rec[:, c : c + 1] * mask, target)
            rows.append((m, "psnr", float(value.mean())))
        self.train(was_training)
        return rows
