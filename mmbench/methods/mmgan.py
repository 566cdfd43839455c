"""MM-GAN (family ``data-generation``): synthesise the missing modalities, then segment."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from monai.inferers import sliding_window_inference
from monai.networks.nets import PatchDiscriminator
from torch import Tensor
from torch.nn import functional as F

from mmbench.methods.base import (
    Batch,
    MethodConfig,
    Option,
    Stage,
    StepContext,
    Strategy,
    subset_of,
)
from mmbench.methods.blocks import UNet3D
from mmbench.methods.losses import dice_bce_loss
from mmbench.methods.registry import register
from mmbench.methods.synthesis_metrics import synthesis_rows
from mmbench.subsets import MODALITIES, Subset, zero_absent

# The official scenarios (train_mmgan_brats2018.py): the 14 subsets other than none and all,
# sorted by number of present sequences (stable over itertools.product order in the official
# channel order T1, T2, T1ce, FLAIR), written here with mmbench's names.
OFFICIAL_SCENARIOS: tuple[str, ...] = (
    "FLAIR", "T1ce", "T2", "T1",
    "T1ce+FLAIR", "T2+FLAIR", "T1ce+T2", "T1+FLAIR", "T1+T1ce", "T1+T2",
    "T1ce+T2+FLAIR", "T1+T1ce+FLAIR", "T1+T2+FLAIR", "T1+T1ce+T2",
)  # fmt: skip
PUBLISHED_EPOCHS = 60  # mmgan_hgg.sh: --n_epochs=60
PUBLISHED_LR = 2e-4  # Adam, betas (0.5, 0.999), constant (no decay within 60 epochs)
PUBLISHED_BETAS = (0.5, 0.999)


def curriculum_range(epoch: int) -> tuple[int, int]:
    """Official curriculum (``--c_learning=1``): scenario indices ``[low, high)`` drawn at
    ``epoch`` (0-based) of :data:`OFFICIAL_SCENARIOS`; ``torch.randint(low, 14)`` excludes 14.

    Epochs 0-10: [11, 14) (three of the four 3-sequence scenarios: index 10 is never drawn, as in
    the official code); 11-20: [7, 14); 21-30: [3, 14); later: all 14.
    """
    if epoch <= 10:
        return 11, 14
    if epoch <= 20:
        return 7, 14
    if epoch <= 30:
        return 3, 14
    return 0, 14


@register(
    "mmgan",
    family="data-generation",
    paper="MM-GAN: Sharma & Hamarneh, IEEE TMI 2019 (3-D re-implementation)",
    tags=("gan", "synthesis", "unet"),
)
class MMGAN(Strategy):
    """MM-GAN in 3-D: a U-Net generator imputes the missing modalities, a U-Net segments.

    As the official code (trane293/mm-gan, 2-D pix2pix): the generator (the shared
    :class:`UNet3D`, N×4 → N×4) reads the four channels with the absent ones zero (the released
    script's ``--z_type=zeros``) and no availability code; implicit conditioning keeps the real
    channels where present and the synthetic ones where absent. Generator loss
    ``l1_weight`` (0.9) · L1 over the *missing* channels only (mean over them) + ``adv_weight``
    (0.1) · least-squares GAN term over all four channels of the discriminator's output.
    Discriminator (``adversarial``, optimiser ``disc``): a 3-D MONAI ``PatchDiscriminator``
    reading the candidate volume *and the real volume* (N×8, conditioned on the real image as
    the official ``discriminator(fake_x, x_r)``), one output channel per sequence; real pairs are
    labelled 1, imputed pairs 1 on present and 0 on imputed channels, loss 0.5·(real + fake).
    The full set is never a synthesis scenario (as the official list of 14): a batch the loop
    drew with every modality is given a uniformly drawn one of the other 14 subsets instead.

    Staging: stage ``synthesis`` trains generator and discriminator (``synthesis_fraction`` of
    the steps, 0.3, no checkpoint selection); stage ``segment`` trains the segmenter (the shared
    :class:`UNet3D`) on the imputed volumes with the generator frozen, with checkpoint
    selection on val. Each stage has its own poly schedule (``Stage.schedule="stage"``): the
    segmenter starts at the full learning rate. Inference uses generator and segmenter; the
    discriminator is training-only (:meth:`training_only_parameter_count`).

    ``recipe="published"``: generator and discriminator with Adam at 2e-4, betas (0.5, 0.999),
    constant; the official curriculum over scenarios (:func:`curriculum_range`, the 60 epochs
    mapped onto the synthesis stage's steps); the segmenter keeps the shared recipe (the paper
    segments with a separate network; the code has none).

    Departures from the paper: 3-D instead of 2-D slices; the generator is the shared compact
    U-Net rather than pix2pix's 8-level U-Net, with no output ReLU (z-scored intensities are
    negative; the official data are non-negative); the segmenter is the benchmark's U-Net
    trained on imputed inputs of the loop's random subsets. ``extra_metrics`` reports
    synthesis PSNR and SSIM of each absent modality
    (:func:`mmbench.methods.synthesis_metrics.synthesis_rows`).
    """

    options: ClassVar[dict[str, Option]] = {
        "recipe": Option(
            "shared",
            "shared: the preset's Adam and per-stage poly; published: the official GAN "
            "optimisers (Adam 2e-4, betas 0.5/0.999, constant) and scenario curriculum",
            choices=("shared", "published"),
        ),
        "adversarial": Option(True, "train with the conditional PatchGAN discriminator"),
        "l1_weight": Option(0.9, "weight of the L1 on missing channels (official 0.9)", minimum=0),
        "adv_weight": Option(0.1, "weight of the generator's GAN term (official 0.1)", minimum=0),
        "synthesis_fraction": Option(
            0.3, "share of the steps given to the synthesis stage", minimum=0.01, maximum=0.99
        ),
    }

    def __init__(self, config: MethodConfig) -> None:
        super().__init__(config)
        depth = config.depth
        n_mod = config.in_channels
        self.recipe = str(self._option("recipe"))
        self.generator = UNet3D(n_mod, n_mod, width=config.width, depth=depth)
        self.segmenter = UNet3D(n_mod, config.out_channels, width=config.width, depth=depth)
        self.adversarial = bool(self._option("adversarial"))
        self.l1_weight = float(self._option("l1_weight"))
        self.adv_weight = float(self._option("adv_weight"))
        self.synthesis_fraction = float(self._option("synthesis_fraction"))
        self.stride = 2**depth
        # Three stride-2 layers as in pix2pix, fewer for tiny patches (instance norm needs more
        # than one voxel).
        disc_layers = max(1, min(3, int(math.log2(min(config.patch_size))) - 2))
        self.discriminator = (
            PatchDiscriminator(
                spatial_dims=3,
                channels=config.width,
                in_channels=2 * n_mod,
                out_channels=n_mod,
                num_layers_d=disc_layers,
                norm="INSTANCE",
                last_conv_kernel_size=3,
            )
            if self.adversarial
            else None
        )

    def _option(self, key: str) -> object:
        return self.config.option(key, self.declared_options()[key].default)

    # ----------------------------------------------------------------------------- staging
    def stages(self) -> list[Stage]:
        gen_opts = ("gen", "disc") if self.adversarial else ("gen",)
        return [
            Stage(
                "synthesis",
                gen_opts,
                fraction=self.synthesis_fraction,
                select_on_val=False,
                schedule="stage",
            ),
            Stage("segment", ("seg",), fraction=1.0 - self.synthesis_fraction, schedule="stage"),
        ]

    def configure_optimizers(
        self, lr: float, weight_decay: float
    ) -> dict[str, torch.optim.Optimizer]:
        gan_lr = PUBLISHED_LR if self.recipe == "published" else lr
        gan_wd = 0.0 if self.recipe == "published" else weight_decay
        opts = {
            "gen": torch.optim.Adam(
                self.generator.parameters(), lr=gan_lr, betas=PUBLISHED_BETAS, weight_decay=gan_wd
            ),
            "seg": torch.optim.Adam(self.segmenter.parameters(), lr=lr, weight_decay=weight_decay),
        }
        if self.discriminator is not None:
            opts["disc"] = torch.optim.Adam(
                self.discriminator.parameters(), lr=gan_lr, betas=PUBLISHED_BETAS
            )
        return opts

    def lr_factor(self, optimizer: str, ctx: StepContext) -> float | None:
        if self.recipe == "published" and optimizer in ("gen", "disc"):
            return 1.0  # the official GAN learning rate is constant
        return None

    # ----------------------------------------------------------------------------- synthesis
    def generate(self, image: Tensor, available: tuple[str, ...]) -> Tensor:
        """Raw generator output: N×4×D×H×W synthetic modalities (all four channels).

        ``image`` is N×4×D×H×W with absent channels zero; D, H, W divisible by ``2**depth``.
        ``available`` is not an input of the network (official: no availability code); it is
        kept for the signature shared with :meth:`synthesize`.
        """
        return self.generator(image)

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
    def synthesis_subset(self, drawn: Subset, ctx: StepContext) -> Subset:
        """The scenario of a synthesis step: the loop's subset, except that the full set is
        replaced by one of the other 14 (uniformly), and under ``recipe=published`` the official
        curriculum's draw. Draws use torch's global generator (seeded per step by the loop)."""
        if self.recipe == "published":
            epoch = min(PUBLISHED_EPOCHS - 1, int(PUBLISHED_EPOCHS * ctx.stage_progress))
            low, high = curriculum_range(epoch)
            return Subset.parse(OFFICIAL_SCENARIOS[int(torch.randint(low, high, ()).item())])
        if len(drawn.available) < len(MODALITIES):
            return drawn
        return Subset.parse(OFFICIAL_SCENARIOS[int(torch.randint(0, 14, ()).item())])

    def _generator_losses(self, batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
        full = batch["image_full"]
        subset = self.synthesis_subset(subset_of(batch["available"]), ctx)
        available = subset.available
        image = zero_absent(full, available)
        synthetic = self.generate(image, available)
        present = torch.tensor(
            [m in available for m in MODALITIES], device=image.device, dtype=torch.bool
        )
        missing = ~present
        # L1 on the missing channels only, the mean of the per-channel means (official).
        l1 = (synthetic.float() - full.float()).abs().mean(dim=(0, 2, 3, 4))[missing].mean()
        out: dict[str, Tensor] = {"gen": self.l1_weight * l1, "log/l1": l1.detach()}
        if self.discriminator is None:
            return out
        imputed = self.impute(image, synthetic, available)
        # Per-channel labels of an imputed pair: present channels are real (1), imputed fake (0).
        labels = present.to(full.dtype)[None, :, None, None, None]
        d_real = self.discriminator(torch.cat([full, full], 1))[-1]
        d_fake = self.discriminator(torch.cat([imputed.detach(), full], 1))[-1]
        disc = 0.5 * (
            F.mse_loss(d_real, torch.ones_like(d_real))
            + F.mse_loss(d_fake, labels.expand_as(d_fake))
        )
        g_fake = self.discriminator(torch.cat([imputed, full], 1))[-1]
        adv = F.mse_loss(g_fake, torch.ones_like(g_fake))
        out["gen"] = self.l1_weight * l1 + self.adv_weight * adv
        out["log/adv"] = adv.detach()
        # "gen" first: the contract's sequential check steps optimisers in dict order, and the
        # generator's loss runs through the discriminator's (not yet stepped) weights.
        out["disc"] = disc
        out["log/disc"] = disc.detach()
        return out

    def training_step(self, batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
        if ctx.stage == "synthesis":
            return self._generator_losses(batch, ctx)
        with torch.no_grad():
            imputed = self.synthesize(batch["image"], batch["available"])
        return {"seg": dice_bce_loss(self.segmenter(imputed), batch["regions"])}

    # ----------------------------------------------------------------------------- inference
    def predict(self, image: Tensor, available: tuple[str, ...]) -> Tensor:
        return torch.sigmoid(self.segmenter(self.synthesize(image, available)).float())

    def extra_metrics(
        self, image: Tensor, image_full: Tensor, available: tuple[str, ...]
    ) -> list[tuple[str, str, float]]:
        """Synthesis PSNR and SSIM of each absent modality, defined once for every method in
        :mod:`mmbench.methods.synthesis_metrics`.

        ``image``/``image_full``: 4×D×H×W or 1×4×D×H×W for one case. Rows:
        ``(modality, "psnr" | "ssim", value)``.
        """
        if image.ndim == 4:
            image, image_full = image[None], image_full[None]
        if len(available) == len(MODALITIES):
            return []
        with torch.inference_mode():
            imputed = self.synthesize(zero_absent(image, available), tuple(available))
        return synthesis_rows(imputed, image_full, available, ssim=True)

    def inference_modules(self) -> list[torch.nn.Module]:
        return [self.generator, self.segmenter]
