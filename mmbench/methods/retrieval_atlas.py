"""Image-level atlas retrieval (family ``sample-retrieval``): mmbench's own design.

Each absent channel of a window is filled with that channel of the most similar training
crops (similar in the available channels, voxel to voxel on the common grid), then a segmenter
trained on complete inputs reads the filled window. It is the naive form of sample retrieval:
another patient's FLAIR copied into this patient's window brings that patient's oedema along,
wherever it was. ``docs/methods/retrieval-atlas.md`` documents the design and its measurements.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.nn import functional as F

from mmbench.methods.base import Batch, MethodConfig, Option, Stage, StepContext, Strategy
from mmbench.methods.blocks import UNet3D
from mmbench.methods.losses import dice_bce_loss
from mmbench.methods.registry import register
from mmbench.subsets import MODALITIES

MAX_ENTRY_VOXELS = 2**16
"""Largest grid (voxels per channel) of one stored bank entry; larger crops are stored at a
power-of-two stride (``quick``'s 32³ crops are stored as they are)."""


def entry_grid(patch_size: Sequence[int], stride: int | None = None) -> tuple[int, int, int]:
    """The grid a bank entry is stored on: ``patch_size`` divided by ``stride`` (rounded up);
    ``None`` picks the smallest power of two that fits :data:`MAX_ENTRY_VOXELS`."""
    if stride is None:
        stride = 1
        while math.prod(math.ceil(p / stride) for p in patch_size) > MAX_ENTRY_VOXELS:
            stride *= 2
    return tuple(math.ceil(int(p) / stride) for p in patch_size)  # type: ignore[return-value]


def descriptors(images: Tensor, grid: int) -> Tensor:
    """Coarse appearance of each channel: N×C×D×H×W → N×C×grid³ (adaptive average pooling)."""
    return F.adaptive_avg_pool3d(images.float(), grid).flatten(2)


def nearest_weights(
    query: Tensor, keys: Tensor, k: int, eps: float = 1e-6
) -> tuple[Tensor, Tensor]:
    """The ``k`` nearest bank entries of each query and their inverse-distance weights.

    Args:
        query: N×E descriptors; keys: B×E (B ≥ 1); k: clipped to B.

    Returns:
        (indices N×k, weights N×k summing to one), weights ∝ 1 / (RMS distance + eps).
    """
    k = min(k, keys.shape[0])
    dist = torch.cdist(query, keys, compute_mode="donot_use_mm_for_euclid_dist")
    dist = dist / math.sqrt(max(1, query.shape[1]))
    d, idx = dist.topk(k, dim=1, largest=False)
    w = 1.0 / (d + eps)
    return idx, w / w.sum(dim=1, keepdim=True)


@register(
    "retrieval-atlas",
    family="sample-retrieval",
    paper="mmbench's own design (image-level retrieval; sample-retrieval family of the AdaMM "
    "survey, arXiv 2509.15017)",
    tags=("retrieval", "atlas", "memory-bank", "unet"),
)
class RetrievalAtlas(Strategy):
    """Fill each absent channel from the nearest training crops, then segment all four.

    Stages: ``bank`` (``kind="fit"``, first: it needs no trained weights) then ``train``.

    Bank: every crop of the loop's fit batches becomes one entry (full-modality crops of the
    training size, with the training flips; meant as one pass over the training cases, one crop
    per case — see ``docs/methods/retrieval-atlas.md`` on the source), at most ``bank_size`` (a
    seeded uniform sample if there are more). An entry holds the crop's four channels on
    :func:`entry_grid` (float16) and their :func:`descriptors` (``descriptor_grid``³ averages
    per channel, float32). Buffers are sized to the bank, so checkpoints carry exactly it.

    Segmenter: the shared :class:`~mmbench.methods.blocks.UNet3D` trained on complete inputs
    (``train_subsets = "full"``), Dice + BCE on WT/TC/ET.

    ``predict``: the window's descriptor over its available channels is compared with the same
    channels of every entry (RMS distance); the ``k`` nearest entries' absent channels, resized
    to the window (trilinear) and averaged with inverse-distance weights, fill the absent
    channels inside the window's brain (voxels where an available channel is nonzero; zero
    outside); the segmenter reads the filled window. No bank (before ``fit``): absent channels
    stay zero.
    """

    train_subsets = "full"
    options: ClassVar[dict[str, Option]] = {
        "k": Option(1, "nearest training crops averaged into an absent channel", minimum=1),
        "bank_size": Option(256, "most bank entries (one per fit crop)", minimum=1),
        "descriptor_grid": Option(
            8, "pooled grid (per axis) of the retrieval descriptor", minimum=1
        ),
        "bank_stride": Option(
            0, "storage stride of bank entries; 0: the smallest fitting 2^16 voxels", minimum=0
        ),
        "bank_seed": Option(0, "seed of the bank's sample when there are more cases"),
    }

    def __init__(self, config: MethodConfig) -> None:
        super().__init__(config)
        self.k = int(config.option("k"))
        self.bank_size = int(config.option("bank_size"))
        self.grid = int(config.option("descriptor_grid"))
        self.bank_seed = int(config.option("bank_seed"))
        stride = config.option("bank_stride")
        self.entry_grid = entry_grid(config.patch_size, int(stride) or None)
        self.net = UNet3D(
            config.in_channels, config.out_channels, width=config.width, depth=config.depth
        )
        n_mod = config.in_channels
        self.register_buffer("bank_images", torch.zeros(0, n_mod, *self.entry_grid).half())
        self.register_buffer("bank_descriptors", torch.zeros(0, n_mod, self.grid**3))

    # ----------------------------------------------------------------------------- staging
    def stages(self) -> list[Stage]:
        return [
            Stage("bank", (), fraction=0.0, kind="fit", select_on_val=False),
            Stage("train", ("main",)),
        ]

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        # The bank's buffers take the size of the bank being loaded (0 before fit).
        for name in ("bank_images", "bank_descriptors"):
            stored = state_dict.get(prefix + name)
            if stored is not None:
                setattr(self, name, getattr(self, name).new_zeros(stored.shape))
        super()._load_from_state_dict(state_dict, prefix, *args)

    # ----------------------------------------------------------------------------- bank
    @torch.no_grad()
    def fit(self, batches: Iterable[Batch], ctx: StepContext) -> None:
        """Store one entry per full-modality crop of ``batches`` (a uniform sample of at most
        ``bank_size`` when there are more)."""
        crops = []
        for batch in batches:
            full = batch.get("image_full", batch["image"]).float()
            if tuple(full.shape[-3:]) != self.entry_grid:
                full = F.interpolate(full, size=self.entry_grid, mode="trilinear")
            crops.append(full.cpu())
        images = torch.cat(crops) if crops else self.bank_images.new_zeros(0).float()
        if images.shape[0] > self.bank_size:
            gen = torch.Generator().manual_seed(self.bank_seed)
            keep = torch.randperm(images.shape[0], generator=gen)[: self.bank_size].sort().values
            images = images[keep]
        device = self.bank_descriptors.device
        self.bank_images = images.to(device).half()
        self.bank_descriptors = descriptors(self.bank_images, self.grid)

    @property
    def bank_count(self) -> int:
        return int(self.bank_images.shape[0])

    # ----------------------------------------------------------------------------- retrieval
    def retrieve(self, image: Tensor, present: Sequence[int]) -> tuple[Tensor, Tensor]:
        """The nearest entries of each window: (indices N×k, weights N×k); needs a bank."""
        query = descriptors(image[:, list(present)], self.grid).flatten(1)
        keys = self.bank_descriptors[:, list(present)].flatten(1)
        return nearest_weights(query, keys, self.k)

    def fill(self, image: Tensor, available: Sequence[str]) -> Tensor:
        """N×4×D×H×W with every absent channel filled from the bank (see the class docstring);
        available channels are returned unchanged."""
        present = [MODALITIES.index(m) for m in available]
        absent = [c for c in range(image.shape[1]) if c not in present]
        if not absent or self.bank_count == 0:
            return image
        idx, w = self.retrieve(image, present)
        entries = self.bank_images[idx][:, :, absent].float()  # N×k×A×grid
        n, k, a = entries.shape[:3]
        size = tuple(image.shape[-3:])
        if tuple(entries.shape[-3:]) != size:
            resized = F.interpolate(entries.flatten(0, 1), size=size, mode="trilinear")
            entries = resized.reshape(n, k, a, *size)
        filled = (w.to(entries.dtype)[:, :, None, None, None, None] * entries).sum(1)
        brain = (image[:, present] != 0).any(1, keepdim=True)
        out = image.clone()
        out[:, absent] = (filled * brain).to(image.dtype)
        return out

    # ----------------------------------------------------------------------------- training
    def training_step(self, batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
        return {"main": dice_bce_loss(self.net(batch["image"]), batch["regions"])}

    def predict(self, image: Tensor, available: tuple[str, ...]) -> Tensor:
        return torch.sigmoid(self.net(self.fill(image, available)).float())
