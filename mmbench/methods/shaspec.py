"""ShaSpec (family ``feature-generation``): shared and specific features, missing ones generated."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from mmbench.methods.base import Batch, MethodConfig, StepContext, Strategy
from mmbench.methods.blocks import Decoder3D, Encoder3D, level_channels
from mmbench.methods.losses import dice_bce_loss
from mmbench.methods.registry import register
from mmbench.subsets import MODALITIES


@dataclass
class ShaSpecFeatures:
    """Per-level features of one batch, modality axis first.

    Attributes:
        shared: per level, 4×N×E_l×D_l×H_l×W_l (E_l: encoder channels); a missing modality's
            entry is the mean of the available modalities' shared features.
        specific: per level, 4×N×E_l×D_l×H_l×W_l; zero for a missing modality.
        fused: per level, N×C_l×D_l×H_l×W_l, the decoder's input.
        available: indices of the present modalities (canonical order).
    """

    shared: list[Tensor]
    specific: list[Tensor]
    fused: list[Tensor]
    available: list[int]


@register(
    "shaspec",
    family="feature-generation",
    paper="ShaSpec: Wang et al., CVPR 2023",
    tags=("shared-specific", "feature-generation"),
)
class ShaSpec(Strategy):
    """ShaSpec: one shared encoder for all modalities, one specific encoder per modality.

    The shared :class:`Encoder3D` (1 input channel, width ``encoder_width``, default
    ``config.width // 2``) runs on each available modality; each modality also has its own
    specific encoder of the same width. A missing modality's shared feature is the mean of the
    available modalities' shared features at each level; its specific feature is zero (the
    missing image carries no modality-specific information, and the decoder learns what a zero
    slot means from the random subsets it trains on). Each modality's shared feature ``s`` and
    specific feature ``p`` are fused by a residual projection, ``s + P_l([s, p])`` (a 1×1×1
    convolution per level, shared across modalities); the four fused modality features are
    concatenated and projected to the decoder's ``config.width·2**l`` channels per level, and the
    shared :class:`Decoder3D` (width ``config.width``) segments.

    Loss: Dice + BCE on WT/TC/ET, plus ``domain_weight`` (0.1) × cross-entropy of a linear
    classifier predicting each available modality from its globally pooled specific bottleneck,
    plus ``align_weight`` (0.1) × L1 between each available modality's shared features and their
    mean over the available modalities (every level). Training sees the loop's random subsets.

    Departures from the paper: the encoders and decoder are the benchmark's compact 3-D U-Net
    blocks instead of ShaSpec's backbone; the encoders are half width, since five encoders run
    on up to four modalities and a step must stay within about 3× the backbone's; the
    distribution alignment is an L1-to-the-mean term rather than the paper's formulation; no
    deep supervision.
    """

    def __init__(self, config: MethodConfig) -> None:
        super().__init__(config)
        depth = config.depth
        width = config.width
        enc_width = int(config.option("encoder_width", max(2, width // 2)))
        self.n_mod = config.in_channels
        self.domain_weight = float(config.option("domain_weight", 0.1))
        self.align_weight = float(config.option("align_weight", 0.1))
        chans = level_channels(width, depth)
        enc_chans = level_channels(enc_width, depth)
        self.shared_encoder = Encoder3D(1, enc_width, depth)
        self.specific_encoders = nn.ModuleList(
            Encoder3D(1, enc_width, depth) for _ in range(self.n_mod)
        )
        self.project = nn.ModuleList(nn.Conv3d(2 * c, c, kernel_size=1) for c in enc_chans)
        self.merge = nn.ModuleList(
            nn.Conv3d(self.n_mod * e, c, kernel_size=1) for e, c in zip(enc_chans, chans)
        )
        self.decoder = Decoder3D(width, depth, config.out_channels)
        self.domain_head = nn.Linear(enc_chans[-1], self.n_mod)

    # ----------------------------------------------------------------------------- features
    def encode(self, image: Tensor, available: tuple[str, ...]) -> ShaSpecFeatures:
        """Shared, specific and fused features.

        Args:
            image: N×4×D×H×W, absent channels zero (never read).
            available: present modality names.
        """
        idx = [MODALITIES.index(m) for m in available]
        n, k = image.shape[0], len(idx)
        # All available modalities through the shared encoder in one batch (modality-major).
        x = image[:, idx].transpose(0, 1).reshape(k * n, 1, *image.shape[2:])
        shared_av = [f.reshape(k, n, *f.shape[1:]) for f in self.shared_encoder(x)]
        specific_av = [self.specific_encoders[c](image[:, c : c + 1]) for c in idx]
        shared, specific, fused = [], [], []
        for level, s_av in enumerate(shared_av):
            mean = s_av.mean(dim=0)
            p_av = [feats[level] for feats in specific_av]
            s_all, p_all = [], []
            for c in range(self.n_mod):
                if c in idx:
                    s_all.append(s_av[idx.index(c)])
                    p_all.append(p_av[idx.index(c)])
                else:
                    s_all.append(mean)
                    p_all.append(torch.zeros_like(p_av[0]))
            s_stack, p_stack = torch.stack(s_all), torch.stack(p_all)
            shared.append(s_stack)
            specific.append(p_stack)
            # Residual fusion per modality, the four modalities folded into the batch.
            s_flat = s_stack.flatten(0, 1)
            f_flat = s_flat + self.project[level](torch.cat([s_flat, p_stack.flatten(0, 1)], dim=1))
            f = f_flat.reshape(self.n_mod, n, *f_flat.shape[1:]).transpose(0, 1)
            fused.append(self.merge[level](f.flatten(1, 2)))
        return ShaSpecFeatures(shared, specific, fused, idx)

    # ----------------------------------------------------------------------------- training
    def training_step(self, batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
        feats = self.encode(batch["image"], batch["available"])
        seg = dice_bce_loss(self.decoder(feats.fused), batch["regions"])
        idx = feats.available
        n = batch["image"].shape[0]
        pooled = feats.specific[-1][idx].mean(dim=(3, 4, 5))  # k×N×S
        labels = torch.tensor(idx, device=pooled.device).repeat_interleave(n)
        domain = F.cross_entropy(self.domain_head(pooled.flatten(0, 1)), labels)
        if len(idx) > 1:
            align = torch.stack(
                [(s[idx] - s[idx].mean(0, keepdim=True)).abs().mean() for s in feats.shared]
            ).mean()
        else:
            align = seg.new_zeros(())
        loss = seg + self.domain_weight * domain + self.align_weight * align
        return {
            "main": loss,
            "log/seg": seg.detach(),
            "log/domain": domain.detach(),
            "log/align": align.detach(),
        }

    # ----------------------------------------------------------------------------- inference
    def predict(self, image: Tensor, available: tuple[str, ...]) -> Tensor:
        return torch.sigmoid(self.decoder(self.encode(image, available).fused).float())

    def inference_modules(self) -> list[nn.Module]:
        return [
            self.shared_encoder,
            self.specific_encoders,
            self.project,
            self.merge,
            self.decoder,
        ]
