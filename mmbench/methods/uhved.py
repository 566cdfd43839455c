"""U-HVED: hetero-modal variational encoder-decoder (family ``multi-task``).

Follows the official TensorFlow/NiftyNet code (ReubenDo/U-HVED, ``extensions/u_hved``): one
encoder per modality giving a Gaussian posterior at every scale, the product of the available
experts and the unit prior, one decoder per output (four images and the segmentation), and the
loss ``seg + 0.1·KL + 0.1·MSE`` with the KL averaged over the posteriors of all 15 subsets.
``docs/methods/uhved.md`` lists what differs and why.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from mmbench.methods.base import Batch, MethodConfig, Option, StepContext, Strategy
from mmbench.methods.blocks import pad_to_multiple
from mmbench.methods.losses import dice_bce_loss
from mmbench.methods.registry import register
from mmbench.methods.synthesis_metrics import synthesis_rows
from mmbench.subsets import MODALITIES, zero_absent

LOGVAR_CLIP = 50.0
"""Official clip of the encoders' log-variances to [-50, 50]."""

EPS = 1e-7
"""Official epsilon added to variances (precisions, log of the fused variance, KL)."""

SUBSETS: tuple[tuple[int, ...], ...] = tuple(
    c for k in range(1, 5) for c in itertools.combinations(range(4), k)
)
"""The 15 non-empty subsets of the four modality indices (the official ``SUBSETS_MODALITIES``)."""

PUBLISHED_LR = 1e-3  # config.ini: lr = 0.001 (Adam, NiftyNet's default optimiser)
PUBLISHED_WEIGHT_DECAY = 1e-5  # config.ini: reg_type = L2, decay = 1e-5


def product_of_gaussians(mu: Tensor, logvar: Tensor) -> tuple[Tensor, Tensor]:
    """Product of K diagonal Gaussians and the unit prior N(0, I), as the official sampler.

    Args:
        mu, logvar: N×K×C×… means and log-variances of the K experts to combine (K may be 0).

    Returns:
        (mean, log-variance), each N×C×…: precision ``T = 1 + Σ_k 1/(σ_k² + ε)``, mean
        ``Σ_k μ_k/(σ_k² + ε) / T``, log-variance ``log(1/T + ε)`` (ε = 1e-7).
    """
    precision = 1.0 / (torch.exp(logvar) + EPS)
    total = 1.0 + precision.sum(1)
    mean = (mu * precision).sum(1) / total
    return mean, torch.log(1.0 / total + EPS)


def gaussian_kl(mu1: Tensor, logvar1: Tensor, mu2: Tensor, logvar2: Tensor) -> Tensor:
    """KL(N(μ1, σ1²) ‖ N(μ2, σ2²)), averaged over all elements (official ``KL_divergence``)."""
    var1, var2 = torch.exp(logvar1), torch.exp(logvar2)
    return 0.5 * (-1.0 + logvar2 - logvar1 + (var1 + (mu1 - mu2).square()) / (var2 + EPS)).mean()


def kl_to_unit(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(μ, σ²) ‖ N(0, 1)) averaged over all elements (a scalar ≥ 0)."""
    zero = torch.zeros_like(mu)
    return gaussian_kl(mu, logvar, zero, zero)


def subset_kl(mu: Tensor, logvar: Tensor, available: Sequence[int]) -> Tensor:
    """The official KL term of one scale (``compute_KLD``).

    With ``q_A`` the product of the available experts and the prior, and ``q_S`` that of subset
    ``S`` and the prior: ``(1/14)·Σ_S KL(q_A ‖ q_S) + (1/15)·Σ_S KL(q_S ‖ N(0, I))``, sums over
    the 15 non-empty subsets ``S`` (the one equal to ``A`` contributes 0 to the first sum).
    All 15 products are computed at once (a 15×4 membership matrix over the expert axis).

    Args:
        mu, logvar: N×4×C×… posteriors of all four modalities (training reads every modality).
        available: indices of the modalities present in this batch.
    """
    precision = 1.0 / (torch.exp(logvar) + EPS)  # N×4×…
    weighted = mu * precision
    member = torch.zeros(len(SUBSETS), mu.shape[1], dtype=mu.dtype, device=mu.device)
    for s, subset in enumerate(SUBSETS):
        member[s, list(subset)] = 1.0
    full = torch.zeros(1, mu.shape[1], dtype=mu.dtype, device=mu.device)
    full[0, list(available)] = 1.0
    member = torch.cat([member, full])  # 16×4: the 15 subsets, then the available set
    total = 1.0 + torch.einsum("sk,nk...->ns...", member, precision)  # N×16×…
    means = torch.einsum("sk,nk...->ns...", member, weighted) / total
    log_total = torch.log(total)
    sub_t, sub_m, sub_log = total[:, :-1], means[:, :-1], log_total[:, :-1]
    a_t, a_m, a_log = total[:, -1:], means[:, -1:], log_total[:, -1:]
    # gaussian_kl in closed form with variances 1/T (the official ε = 1e-7 on the fused
    # variance is dropped here: T ≥ 1 because of the prior, so it changes the value by < 1e-6).
    inter = 0.5 * (-1.0 + a_log - sub_log + sub_t / a_t + sub_t * (a_m - sub_m).square())
    prior = 0.5 * (-1.0 + sub_log + 1.0 / sub_t + sub_m.square())
    n_sub = len(SUBSETS)
    return inter.mean() * n_sub / 14.0 + prior.mean() * n_sub / 15.0


def latent_channels(width: int, depth: int) -> list[int]:
    """Latent channels at each scale 0..depth: half of the encoder block's ``width·2**l``."""
    return [max(1, width * 2**level // 2) for level in range(depth + 1)]


class PreActBlock(nn.Sequential):
    """Two (instance norm → leaky ReLU 0.01 → 3³ conv, no bias) layers, N×C_in → N×C_out.

    The official ``ResBlock`` declares a residual connection it never adds; neither does this.
    """

    def __init__(self, c_in: int, c_mid: int, c_out: int) -> None:
        layers: list[nn.Module] = []
        for a, b in ((c_in, c_mid), (c_mid, c_out)):
            layers += [
                nn.InstanceNorm3d(a, eps=1e-6),
                nn.LeakyReLU(0.01),
                nn.Conv3d(a, b, 3, padding=1, bias=False),
            ]
        super().__init__(*layers)


class ModalityEncoder(nn.Module):
    """One modality N×1×D×H×W → list over scales 0..depth of (μ, log σ²), N×L_l×D/2^l×….

    1×1×1 conv (``width`` channels) + leaky ReLU, then per scale a :class:`PreActBlock` to
    ``2·L_l`` channels whose first half is μ and second half log σ² (clipped to ±50), with a 2³
    max-pool between scales (official ``ConvEncoder``).
    """

    def __init__(self, width: int, depth: int) -> None:
        super().__init__()
        lat = latent_channels(width, depth)
        self.stem = nn.Sequential(nn.Conv3d(1, width, 1, bias=False), nn.LeakyReLU(0.01))
        ins = [width] + [2 * c for c in lat[:-1]]
        self.blocks = nn.ModuleList(PreActBlock(i, 2 * c, 2 * c) for i, c in zip(ins, lat))

    def forward(self, x: Tensor) -> list[tuple[Tensor, Tensor]]:
        x = self.stem(x)
        out = []
        for level, block in enumerate(self.blocks):
            if level:
                x = F.max_pool3d(x, 2)
            x = block(x)
            mu, logvar = x.chunk(2, dim=1)
            out.append((mu, logvar.clamp(-LOGVAR_CLIP, LOGVAR_CLIP)))
        return out


class LatentDecoder(nn.Module):
    """Samples of every scale → N×out×D×H×W (official ``ConvDecoderImg``, one per output).

    From the deepest sample up: trilinear resize to the next scale, concatenation with that
    scale's sample, a :class:`PreActBlock` to ``2·L_l`` then ``L_l`` channels; a 1×1×1 conv.
    """

    def __init__(self, width: int, depth: int, out_channels: int) -> None:
        super().__init__()
        lat = latent_channels(width, depth)
        self.blocks = nn.ModuleList(
            PreActBlock(lat[level + 1] + lat[level], 2 * lat[level], lat[level])
            for level in reversed(range(depth))
        )
        self.head = nn.Conv3d(lat[0], out_channels, 1)

    def forward(self, z: Sequence[Tensor]) -> Tensor:
        x = z[-1]
        for block, skip in zip(self.blocks, reversed(z[:-1])):
            x = F.interpolate(x, size=skip.shape[2:], mode="trilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return self.head(x)


@register(
    "uhved",
    family="multi-task",
    paper="Dorent et al., Hetero-Modal Variational Encoder-Decoder for Joint Modality Completion "
    "and Segmentation, MICCAI 2019",
    tags=("variational", "reconstruction", "multi-encoder"),
)
class UHVED(Strategy):
    """U-HVED: per-modality Gaussian posteriors at every scale fused as a product of Gaussians.

    Networks (official layout, widths scaled by ``config.width``; official = 8): four
    :class:`ModalityEncoder` (scales 0..depth, latent channels ``width·2**l / 2``), one
    :class:`LatentDecoder` for the segmentation (WT, TC, ET logits) and one per modality for
    its reconstruction (``rec_decoders``, training-only). At each scale the available
    modalities' posteriors and the unit prior are multiplied (:func:`product_of_gaussians`); a
    sample of the fused posterior feeds every decoder (the mean in eval mode, so ``predict`` is
    deterministic).

    Training encodes all four modalities from ``image_full`` (as the official code, whose
    encoder always sees every image and masks the product), because the KL term reads every
    subset's posterior. Loss: ``seg + kl_weight·KL + recon_weight·MSE`` (0.1, 0.1) where seg is
    the benchmark's Dice + BCE on the regions, KL is :func:`subset_kl` averaged over scales and
    MSE is the mean squared error of the four reconstructions against ``image_full`` over the
    whole crop (background included).

    ``recipe="published"``: Adam at 1e-3 with weight decay 1e-5, constant, and the official
    draw of the training subset (the number of modalities uniform in 1-4, then the modalities
    uniformly), made here from ``image_full`` instead of the loop's uniform draw over 15.

    Departures (``docs/methods/uhved.md``): PyTorch instead of TensorFlow/NiftyNet (initialisers
    and instance-norm details differ); region sigmoid outputs with Dice + BCE instead of a
    4-class softmax with CE + Dice; ``predict`` decodes the posterior mean (the official
    segmentation inference decodes a sample); heads have a bias.
    """

    options: ClassVar[dict[str, Option]] = {
        "recipe": Option(
            "shared",
            "shared: the preset's Adam and poly schedule; published: Adam 1e-3, weight decay "
            "1e-5, constant, and the official subset draw",
            choices=("shared", "published"),
        ),
        "width": Option(
            0, "base channels of encoders and decoders; 0 = model.width (official 8)", minimum=0
        ),
        "kl_weight": Option(0.1, "weight of the KL term (official 0.1)", minimum=0),
        "recon_weight": Option(0.1, "weight of the reconstruction MSE (official 0.1)", minimum=0),
    }

    def __init__(self, config: MethodConfig) -> None:
        super().__init__(config)
        self.depth = config.depth
        width = int(self._option("width")) or config.width
        self.recipe = str(self._option("recipe"))
        self.kl_weight = float(self._option("kl_weight"))
        self.recon_weight = float(self._option("recon_weight"))
        self.encoders = nn.ModuleList(
            ModalityEncoder(width, self.depth) for _ in range(config.in_channels)
        )
        self.seg_decoder = LatentDecoder(width, self.depth, config.out_channels)
        self.rec_decoders = nn.ModuleList(
            LatentDecoder(width, self.depth, 1) for _ in range(config.in_channels)
        )

    def _option(self, key: str) -> object:
        return self.config.option(key, self.declared_options()[key].default)

    # ----------------------------------------------------------------------------- network
    def posteriors(self, image: Tensor, modalities: Sequence[int]) -> list[tuple[Tensor, Tensor]]:
        """Per scale, the posteriors of ``modalities`` stacked: (μ, log σ²), N×K×L_l×…."""
        per_mod = [self.encoders[m](image[:, m : m + 1]) for m in modalities]
        return [
            (
                torch.stack([p[level][0] for p in per_mod], 1),
                torch.stack([p[level][1] for p in per_mod], 1),
            )
            for level in range(self.depth + 1)
        ]

    def sample(self, fused: Sequence[tuple[Tensor, Tensor]]) -> list[Tensor]:
        """A sample of each scale's fused posterior in training, its mean in eval mode."""
        if self.training:
            return [mu + torch.exp(0.5 * lv) * torch.randn_like(mu) for mu, lv in fused]
        return [mu for mu, _ in fused]

    def forward(self, image: Tensor, present: Sequence[int], reconstruct: bool = False) -> dict:
        """Encode the ``present`` channels of N×4×D×H×W, fuse, sample, decode.

        Returns ``logits`` (N×3×D×H×W), ``posterior`` (list over scales of fused (μ, log σ²))
        and, if ``reconstruct``, ``recon`` (N×4×D×H×W, the four modalities).
        """
        fused = [product_of_gaussians(mu, lv) for mu, lv in self.posteriors(image, present)]
        z = self.sample(fused)
        out = {"logits": self.seg_decoder(z), "posterior": fused}
        if reconstruct:
            out["recon"] = torch.cat([dec(z) for dec in self.rec_decoders], dim=1)
        return out

    # ----------------------------------------------------------------------------- training
    def configure_optimizers(
        self, lr: float, weight_decay: float
    ) -> dict[str, torch.optim.Optimizer]:
        if self.recipe == "published":
            params = self.parameters()
            return {
                "main": torch.optim.Adam(
                    params, lr=PUBLISHED_LR, weight_decay=PUBLISHED_WEIGHT_DECAY
                )
            }
        return super().configure_optimizers(lr, weight_decay)

    def lr_factor(self, optimizer: str, ctx: StepContext) -> float | None:
        return 1.0 if self.recipe == "published" else None

    def training_available(self, available: Sequence[str]) -> list[int]:
        """Indices of the modalities a step trains with: the loop's subset, or under
        ``recipe=published`` the official draw (k uniform in 1-4, then k modalities uniformly;
        torch's global generator, seeded per step by the loop)."""
        if self.recipe != "published":
            return [MODALITIES.index(m) for m in available]
        k = int(torch.randint(1, len(MODALITIES) + 1, ()).item())
        return sorted(torch.randperm(len(MODALITIES))[:k].tolist())

    def training_step(self, batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
        full = batch["image_full"]
        present = self.training_available(batch["available"])
        posteriors = self.posteriors(full, range(len(MODALITIES)))
        fused = [product_of_gaussians(mu[:, present], lv[:, present]) for mu, lv in posteriors]
        z = self.sample(fused)
        seg = dice_bce_loss(self.seg_decoder(z), batch["regions"])
        recon = torch.cat([dec(z) for dec in self.rec_decoders], dim=1)
        mse = (recon.float() - full.float()).square().mean()
        kl = torch.stack(
            [subset_kl(mu.float(), lv.float(), present) for mu, lv in posteriors]
        ).mean()
        loss = seg + self.kl_weight * kl + self.recon_weight * mse
        return {
            "main": loss,
            "log/seg": seg.detach(),
            "log/recon": mse.detach(),
            "log/kl": kl.detach(),
        }

    # ----------------------------------------------------------------------------- inference
    @torch.no_grad()
    def reconstruct(self, image: Tensor, available: Sequence[str]) -> Tensor:
        """All four modalities N×4×D×H×W from the available ones (any size; padded inside)."""
        present = [MODALITIES.index(m) for m in available]
        x, size = pad_to_multiple(zero_absent(image, tuple(available)), 2**self.depth)
        rec = self(x, present, reconstruct=True)["recon"].float()
        return rec[..., : size[0], : size[1], : size[2]]

    def predict(self, image: Tensor, available: tuple[str, ...]) -> Tensor:
        present = [MODALITIES.index(m) for m in available]
        return torch.sigmoid(self(image, present)["logits"].float())

    def extra_metrics(
        self, image: Tensor, image_full: Tensor, available: tuple[str, ...]
    ) -> list[tuple[str, str, float]]:
        """Reconstruction PSNR of each absent modality, rows ``(modality, "psnr", dB)``, as
        defined once in :mod:`mmbench.methods.synthesis_metrics` (brain mask and range of the
        real volume)."""
        if len(available) == len(MODALITIES):
            return []
        if image.ndim == 4:
            image, image_full = image[None], image_full[None]
        was_training = self.training
        self.eval()
        rec = self.reconstruct(image, available)
        self.train(was_training)
        return synthesis_rows(rec, image_full, available)

    def inference_modules(self) -> list[nn.Module]:
        return [self.encoders, self.seg_decoder]
