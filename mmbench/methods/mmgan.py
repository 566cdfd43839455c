"""MM-GAN (family ``data-generation``): synthesise the missing modalities, then segment."""

from __future__ import annotations

import math

import torch
from monai.inferers import sliding_window_inference
from monai.metrics import PSNRMetric
from monai.metrics.regression import compute_ssim_and_cs
from monai.networks.nets import PatchDiscriminator
from torch import Tensor
from torch.nn import functional as F

from mmbench.methods.base import (
    Batch,
    MethodConfig,
    Stage,
    StepContext,
    Strategy,
    availability_tensor,
)
from mmbench.methods.blocks import UNet3D
from mmbench.methods.losses import dice_bce_loss
from mmbench.methods.registry import register
from mmbench.subsets import MODALITIES, zero_absent


def brain_mask(image_full: Tensor) -> Tensor:
    """Voxels where any modality is non-zero (background is zero after normalisation).

    N×4×D×H×W → bool N×D×H×W.
    """
    return (image_full != 0).any(dim=1)


def masked_psnr(pred: Tensor, target: Tensor, mask: Tensor) -> float:
    """PSNR of one volume inside ``mask``; the peak is the target's range inside the mask.

    Args:
        pred, target: float D×H×W.
        mask: bool D×H×W (at least one voxel).
    """
    p, t = pred[mask].float(), target[mask].float()
    data_range = float((t.max() - t.min()).clamp_min(1e-6))
    return float(PSNRMetric(max_val=data_range)(p[None, None], t[None, None]).mean())


def masked_ssim(pred: Tensor, target: Tensor, mask: Tensor, kernel_size: int = 11) -> float:
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


@register(
    "mmgan",
    family="data-generation",
    paper="MM-GAN: Sharma & Hamarneh, IEEE TMI 2019 (3-D re-implementation)",
    tags=("gan", "synthesis", "unet"),
)
class MMGAN(Strategy):
    """MM-GAN in 3-D: a U-Net generator imputes the missing modalities, a U-Net segments.

    Generator: the shared :class:`UNet3D` reading the four channels (absent ones zero) plus the
    4-bit availability code broadcast as four constant channels (N×8×D×H×W), writing all four
    modalities (N×4×D×H×W). As in MM-GAN's implicit conditioning, the imputed volume keeps the
    real channels where present and takes the synthetic ones where absent. Loss: L1 on every
    modality, ``present_weight`` (0.2) on the present ones and 1 on the imputed ones, plus
    ``adv_weight`` (0.02) × a least-squares PatchGAN term: a 3-D MONAI ``PatchDiscriminator``
    (``adversarial``, default on, optimiser ``disc``) scores each channel of the imputed volume
    per patch, real for present channels and fake for imputed ones, as MM-GAN's per-sequence
    discriminator does.

    Staging: stage ``synthesis`` trains generator and discriminator (``synthesis_fraction`` of
    the steps, 0.3, no checkpoint selection); stage ``segment`` trains the segmenter (the shared
    :class:`UNet3D`) on the imputed volumes with the generator frozen, with checkpoint selection on
    val. Both stages see the loop's random subsets.

    Departures from the paper: 3-D instead of 2-D slices; the generator is the shared compact U-Net
    rather than MM-GAN's deeper U-Net; no curriculum over the number of missing sequences; the
    segmenter is the benchmark's U-Net (the paper evaluated imputation with a separate
    segmentation network trained on complete data) and is trained on imputed inputs.
    ``extra_metrics`` reports synthesis PSNR and SSIM for each absent modality inside the brain.
    """

    def __init__(self, config: MethodConfig) -> None:
        super().__init__(config)
        depth = config.depth
        n_mod = config.in_channels
        self.generator = UNet3D(2 * n_mod, n_mod, width=config.width, depth=depth)
        self.segmenter = UNet3D(n_mod, config.out_channels, width=config.width, depth=depth)
        self.adversarial = bool(config.option("adversarial", True))
        self.present_weight = float(config.option("present_weight", 0.2))
        self.adv_weight = float(config.option("adv_weight", 0.02))
        self.synthesis_fraction = float(config.option("synthesis_fraction", 0.3))
        self.stride = 2**depth
        # Three stride-2 layers as in pix2pix, fewer for tiny patches (instance norm needs more
        # than one voxel).
        disc_layers = max(1, min(3, int(math.log2(min(config.patch_size))) - 2))
        self.discriminator = (
            PatchDiscriminator(
                spatial_dims=3,
                channels=config.width,
                in_channels=n_mod,
                out_channels=n_mod,
                num_layers_d=disc_layers,
                norm="INSTANCE",
                last_conv_kernel_size=3,
            )
            if self.adversarial
            else None
        )

    # ----------------------------------------------------------------------------- staging
    def stages(self) -> list[Stage]:
        gen_opts = ("gen", "disc") if self.adversarial else ("gen",)
        return [
            Stage("synthesis", gen_opts, fraction=self.synthesis_fraction, select_on_val=False),
            Stage("segment", ("seg",), fraction=1.0 - self.synthesis_fraction),
        ]

    def configure_optimizers(
        self, lr: float, weight_decay: float
    ) -> dict[str, torch.optim.Optimizer]:
        opts = {
            "gen": torch.optim.Adam(
                self.generator.parameters(), lr=lr, betas=(0.5, 0.999), weight_decay=weight_decay
            ),
            "seg": torch.optim.Adam(self.segmenter.parameters(), lr=lr, weight_decay=weight_decay),
        }
        if self.discriminator is not None:
            opts["disc"] = torch.optim.Adam(
                self.discriminator.parameters(), lr=lr, betas=(0.5, 0.999)
            )
        return opts

    # ----------------------------------------------------------------------------- synthesis
    def generate(self, image: Tensor, available: tuple[str, ...]) -> Tensor:
        """Raw generator output: N×4×D×H×W synthetic modalities (all four channels).

        ``image`` is N×4×D×H×W with absent channels zero; D, H, W divisible by ``2**depth``.
        """
        code = availability_tensor(available, image.shape[0], image.device).to(image.dtype)
        code = code[:, :, None, None, None].expand(-1, -1, *image.shape[2:])
        return self.generator(torch.cat([image, code], dim=1))

    @staticmethod
    def impute(image: Tensor, synthetic: Tensor, available: tuple[str, ...]) -> Tensor:
        """Real channels where present, synthetic where absent (N×4×D×H×W)."""
        keep = torch.tensor([m in available for m in MODALITIES], device=image.device)
        return torch.where(keep[None, :, None, None, None], image, synthetic.to(image.dtype))

    def synthesize(self, image: Tensor, available: tuple[str, ...]) -> Tensor:
        """The imputed volume for any size: N×4×D×H×W, real where present, synthetic elsewhere.

        Volumes larger than the training patch or not divisible by the stride go through a
        sliding window of the patch size, four windows per generator call (the evaluator's
        default ``eval.sw_batch_size``; one at a time made synthesis ~6× slower on a CPU).
        """
        if len(available) == len(MODALITIES):
            return image
        size = tuple(image.shape[2:])
        if all(s <= p and s % self.stride == 0 for s, p in zip(size, self.config.patch_size)):
            synthetic = self.generate(image, available)
        else:
            synthetic = sliding_window_inference(
                image,
                roi_size=self.config.patch_size,
                sw_batch_size=4,
                predictor=lambda x: self.generate(x, available),
                overlap=0.25,
            )
        return self.impute(image, synthetic, available)

    # ----------------------------------------------------------------------------- training
    def _generator_losses(self, batch: Batch) -> dict[str, Tensor]:
        image, full, available = batch["image"], batch["image_full"], batch["available"]
        synthetic = self.generate(image, available)
        present = torch.tensor(
            [m in available for m in MODALITIES], device=image.device, dtype=torch.bool
        )
        weights = torch.where(present, self.present_weight, 1.0).to(image.dtype)
        l1 = (synthetic - full).abs().mean(dim=(0, 2, 3, 4))
        l1 = (weights * l1).sum() / weights.sum()
        out: dict[str, Tensor] = {"gen": l1, "log/l1": l1.detach()}
        if self.discriminator is None:
            return out
        imputed = self.impute(image, synthetic, available)
        # Per-channel labels: present channels are real (1), imputed ones fake (0).
        labels = present.to(image.dtype)[None, :, None, None, None]
        d_real = self.discriminator(full)[-1]
        d_fake = self.discriminator(imputed.detach())[-1]
        disc = 0.5 * (
            F.mse_loss(d_real, torch.ones_like(d_real))
            + F.mse_loss(d_fake, labels.expand_as(d_fake))
        )
        absent = ~present
        if absent.any():
            g_fake = self.discriminator(imputed)[-1][:, absent]
            adv = F.mse_loss(g_fake, torch.ones_like(g_fake))
            out["gen"] = l1 + self.adv_weight * adv
            out["log/adv"] = adv.detach()
        # "gen" first: the contract's sequential check steps optimisers in dict order, and the
        # generator's loss runs through the discriminator's (not yet stepped) weights.
        out["disc"] = disc
        out["log/disc"] = disc.detach()
        return out

    def training_step(self, batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
        if ctx.stage == "synthesis":
            return self._generator_losses(batch)
        with torch.no_grad():
            imputed = self.synthesize(batch["image"], batch["available"])
        return {"seg": dice_bce_loss(self.segmenter(imputed), batch["regions"])}

    # ----------------------------------------------------------------------------- inference
    def predict(self, image: Tensor, available: tuple[str, ...]) -> Tensor:
        return torch.sigmoid(self.segmenter(self.synthesize(image, available)).float())

    def extra_metrics(
        self, image: Tensor, image_full: Tensor, available: tuple[str, ...]
    ) -> list[tuple[str, str, float]]:
        """Synthesis PSNR and SSIM inside the brain, one pair of rows per absent modality.

        ``image``/``image_full``: 4×D×H×W or 1×4×D×H×W for one case. Rows:
        ``(modality, "psnr" | "ssim", value)``.
        """
        if image.ndim == 4:
            image, image_full = image[None], image_full[None]
        absent = [m for m in MODALITIES if m not in available]
        if not absent:
            return []
        with torch.inference_mode():
            imputed = self.synthesize(zero_absent(image, available), tuple(available))
        mask = brain_mask(image_full)[0]
        if not mask.any():
            return []
        rows: list[tuple[str, str, float]] = []
        for m in absent:
            c = MODALITIES.index(m)
            pred, target = imputed[0, c], image_full[0, c]
            rows.append((m, "psnr", masked_psnr(pred, target, mask)))
            rows.append((m, "ssim", masked_ssim(pred, target, mask)))
        return rows

    def inference_modules(self) -> list[torch.nn.Module]:
        return [self.generator, self.segmenter]
