"""RFNet: region-aware fusion of modality-specific encoders (family ``robustness-enhancement``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.losses import DiceLoss
from torch import Tensor, nn
from torch.nn import functional as F

from mmbench.methods.base import Batch, MethodConfig, StepContext, Strategy
from mmbench.methods.blocks import Decoder3D, Encoder3D, level_channels
from mmbench.methods.losses import dice_bce_loss
from mmbench.methods.registry import register
from mmbench.subsets import MODALITIES

N_REGIONS = 4
"""Soft region maps of the fusion: background, NETC, ED, ET (the disjoint compartments)."""

_region_dice = DiceLoss(softmax=True, include_background=False, smooth_nr=1e-5, smooth_dr=1e-5)


def present_indices(available: Sequence[str]) -> list[int]:
    """Canonical channel indices of the available modalities, in canonical order."""
    return sorted(MODALITIES.index(m) for m in available)


class RegionAwareFusion(nn.Module):
    """Region-aware fusion of the available modalities' features at one scale.

    1. Soft region maps ``p`` (N×R×D×H×W, softmax over R = 4 regions) are predicted from the
       concatenation of all four modality slots; absent slots are constant zeros made here
       (their encoders never run).
    2. Per region r and available modality k, a descriptor is the p_r-weighted mean of f_k
       (N×C); a per-region MLP plus a learned (region, modality) bias gives per-channel logits.
       Absent modalities get logit −inf, so the softmax over modalities gives them weight exactly
       zero whatever their features would be.
    3. Region r's fused feature is ``p_r · Σ_k w_{r,k} ⊙ f_k``; the R region features are
       concatenated and projected (1×1×1 conv) to ``out_channels``.
    """

    def __init__(
        self,
        channels: int,
        out_channels: int,
        n_modalities: int = len(MODALITIES),
        n_regions: int = N_REGIONS,
    ) -> None:
        super().__init__()
        self.n_modalities = n_modalities
        self.n_regions = n_regions
        self.region_head = nn.Sequential(
            nn.Conv3d(n_modalities * channels, channels, 3, padding=1),
            nn.InstanceNorm3d(channels, affine=True),
            nn.LeakyReLU(0.01, inplace=True),
            nn.Conv3d(channels, n_regions, 1),
        )
        self.weight_mlp = nn.ModuleList(
            nn.Sequential(
                nn.Linear(channels, channels), nn.LeakyReLU(0.01), nn.Linear(channels, channels)
            )
            for _ in range(n_regions)
        )
        self.modality_bias = nn.Parameter(torch.zeros(n_regions, n_modalities, channels))
        self.project = nn.Sequential(
            nn.Conv3d(n_regions * channels, out_channels, 1),
            nn.InstanceNorm3d(out_channels, affine=True),
            nn.LeakyReLU(0.01, inplace=True),
        )

    def modality_weights(self, feats: Tensor, present: Sequence[int], regions: Tensor) -> Tensor:
        """Fusion weights N×R×M×C: softmax over the M modality slots, exactly 0 where absent.

        Args:
            feats: N×K×C×D×H×W features of the K available modalities (order of ``present``).
            present: canonical indices of the K available modalities.
            regions: N×R×D×H×W soft region maps (sum to one over R).
        """
        n, _, c = feats.shape[:3]
        mass = regions.flatten(2).sum(-1).clamp_min(1e-6)  # N×R
        pooled = torch.einsum("nrv,nkcv->nrkc", regions.flatten(2), feats.flatten(3))
        pooled = pooled / mass[:, :, None, None]
        logits = feats.new_full((n, self.n_regions, self.n_modalities, c), float("-inf"))
        idx = list(present)
        for r, mlp in enumerate(self.weight_mlp):
            logits[:, r, idx] = mlp(pooled[:, r]) + self.modality_bias[r, idx]
        return torch.softmax(logits, dim=2)

    def forward(self, feats: Tensor, present: Sequence[int]) -> tuple[Tensor, Tensor, Tensor]:
        """Fuse one scale.

        Args:
            feats: N×K×C×D×H×W features of the K available modalities (order of ``present``).
            present: canonical indices of the available modalities.

        Returns:
            fused N×out_channels×D×H×W, region logits N×R×D×H×W, weights N×R×M×C.
        """
        n, k, c = feats.shape[:3]
        spatial = feats.shape[3:]
        slots = feats.new_zeros(n, self.n_modalities, c, *spatial)
        slots[:, list(present)] = feats
        region_logits = self.region_head(slots.flatten(1, 2))
        regions = torch.softmax(region_logits, dim=1)
        weights = self.modality_weights(feats, present, regions)
        w = weights[:, :, list(present)]  # N×R×K×C
        fused = torch.einsum("nrkc,nkcdhw->nrcdhw", w, feats) * regions.unsqueeze(2)
        return self.project(fused.flatten(1, 2)), region_logits, weights


def region_targets(compartments: Tensor, size: Sequence[int]) -> Tensor:
    """Soft 4-class targets (background, NETC, ED, ET) at ``size`` by average pooling.

    compartments: N×3×D×H×W disjoint binary labels → N×4×size.
    """
    comp = compartments.float()
    if tuple(comp.shape[-3:]) != tuple(size):
        comp = F.adaptive_avg_pool3d(comp, tuple(size))
    background = (1 - comp.sum(1, keepdim=True)).clamp_min(0)
    return torch.cat([background, comp], dim=1)


@register(
    "rfnet",
    family="robustness-enhancement",
    paper="Ding et al., RFNet: Region-aware Fusion Network for Incomplete Multi-modal Brain "
    "Tumor Segmentation, ICCV 2021",
    tags=("fusion", "multi-encoder"),
)
class RFNet(Strategy):
    """RFNet: modality-specific encoders, region-aware fusion at every scale, shared decoder.

    Four :class:`Encoder3D` (one input channel each) run only for the available modalities; at
    each scale a :class:`RegionAwareFusion` predicts soft region maps (background, NETC, ED, ET)
    and fuses the modalities per region with softmax weights in which absent modalities are
    masked out; a shared :class:`Decoder3D` segments WT/TC/ET from the fused features. Training
    adds auxiliary per-modality decoding (one light shared decoder on an available modality's
    features alone) and deep supervision of the region maps on pooled compartment targets.

    Departures from the paper: the encoders are the shared residual MONAI encoder at
    ``modality_width`` (default ``width // 2``, so that four of them cost about one backbone
    encoder) instead of RFNet's own; the fusion's modality weights come from region-pooled
    descriptors of each available modality through a per-region MLP shared across modalities plus
    a learned per-(region, modality) bias (no absent-modality feature is ever read), and are a
    softmax over the available modalities, where RFNet's code gates each modality from the
    concatenated descriptors of all four slots (absent ones zero); the decoders predict the
    overlapping regions WT/TC/ET with Dice + BCE instead of a 4-class softmax; the auxiliary
    decoder is narrower than the main one and, by default, decodes one available modality per
    sample drawn at random each step (an unbiased estimate of the mean over modalities at about a
    quarter of the cost; ``aux_all=True`` decodes every one, as the paper); no test-time
    ensembling or post-processing.

    Options: ``modality_width`` (int), ``aux_weight`` (0.5), ``aux_all`` (False),
    ``region_weight`` (0.5), ``depth``.
    """

    def __init__(self, config: MethodConfig) -> None:
        super().__init__(config)
        depth = config.depth
        width = config.width
        mwidth = int(config.option("modality_width", max(2, width // 2)))
        self.aux_weight = float(config.option("aux_weight", 0.5))
        self.region_weight = float(config.option("region_weight", 0.5))
        self.aux_all = bool(config.option("aux_all", False))
        mchans = level_channels(mwidth, depth)
        chans = level_channels(width, depth)
        self.encoders = nn.ModuleList(
            Encoder3D(1, mwidth, depth) for _ in range(config.in_channels)
        )
        self.fusions = nn.ModuleList(
            RegionAwareFusion(mc, c, n_modalities=config.in_channels)
            for mc, c in zip(mchans, chans)
        )
        self.decoder = Decoder3D(width, depth, config.out_channels)
        self.aux_decoder = Decoder3D(mwidth, depth, config.out_channels)

    def encode(self, image: Tensor, present: Sequence[int]) -> list[Tensor]:
        """Per-scale features of the available modalities: list over levels of N×K×C_i×…."""
        per_modality = [self.encoders[m](image[:, m : m + 1]) for m in present]
        return [torch.stack(level, dim=1) for level in zip(*per_modality)]

    def forward(self, image: Tensor, present: Sequence[int], aux: bool = False) -> dict:
        """Run the network on N×4×D×H×W with only the ``present`` channels read.

        Returns a dict with ``logits`` (N×3×D×H×W), ``region_logits`` (list over levels of
        N×4×…), ``weights`` (list of N×4×M×C_i) and, if ``aux``, ``aux_logits``: K×N×3×D×H×W (each
        available modality alone) with ``aux_all``, else 1×N×3×D×H×W (per sample, one available
        modality drawn at random).
        """
        feats = self.encode(image, present)
        fused, region_logits, weights = [], [], []
        for fusion, f in zip(self.fusions, feats):
            out, rl, w = fusion(f, present)
            fused.append(out)
            region_logits.append(rl)
            weights.append(w)
        result = {
            "logits": self.decoder(fused),
            "region_logits": region_logits,
            "weights": weights,
        }
        if aux:
            n, k = feats[0].shape[:2]
            if self.aux_all:
                # The K modalities stacked on the batch axis (instance norm is per sample, so
                # this equals K separate calls).
                logits = self.aux_decoder([f.transpose(0, 1).flatten(0, 1) for f in feats])
                result["aux_logits"] = logits.unflatten(0, (k, n))
            else:
                pick = torch.randint(k, (n,), device=image.device)
                rows = torch.arange(n, device=image.device)
                result["aux_logits"] = self.aux_decoder([f[rows, pick] for f in feats])[None]
        return result

    def training_step(self, batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
        present = present_indices(batch["available"])
        out = self(batch["image"], present, aux=self.aux_weight > 0)
        seg = dice_bce_loss(out["logits"], batch["regions"])
        loss = seg
        logs: dict[str, Tensor] = {"log/seg": seg.detach()}
        if self.aux_weight > 0:
            aux_logits = out["aux_logits"]
            target = batch["regions"].expand(aux_logits.shape[0], *batch["regions"].shape)
            # Dice is per sample and channel and BCE a mean: this is the mean over the maps.
            aux = dice_bce_loss(aux_logits.flatten(0, 1), target.flatten(0, 1))
            loss = loss + self.aux_weight * aux
            logs["log/aux"] = aux.detach()
        if self.region_weight > 0:
            terms = []
            for rl in out["region_logits"]:
                target = region_targets(batch["compartments"], rl.shape[-3:])
                rl = rl.float()
                terms.append(F.cross_entropy(rl, target) + _region_dice(rl, target))
            region = torch.stack(terms).mean()
            loss = loss + self.region_weight * region
            logs["log/region"] = region.detach()
        return {"main": loss, **logs}

    def predict(self, image: Tensor, available: tuple[str, ...]) -> Tensor:
        return torch.sigmoid(self(image, present_indices(available))["logits"].float())
