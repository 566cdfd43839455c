"""Feature-level k-nearest-neighbour retrieval (family ``sample-retrieval``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from mmbench.methods.base import Batch, MethodConfig, Option, Stage, StepContext, Strategy
from mmbench.methods.blocks import Decoder3D, Encoder3D, level_channels
from mmbench.methods.losses import dice_bce_loss
from mmbench.methods.registry import register
from mmbench.subsets import MODALITIES


def knn_fill(
    queries: Tensor, keys: Tensor, values: Tensor, k: int, eps: float = 1e-6, chunk: int = 4096
) -> Tensor:
    """Distance-weighted mean of the values of the ``k`` nearest keys.

    Args:
        queries: Q×E descriptors.
        keys: B×E bank descriptors (B ≥ 1).
        values: B×V bank values.
        k: neighbours (clipped to B).
        eps: added to distances before inverting them, so an exact match dominates.
        chunk: queries per distance matrix (bounds memory at chunk×B).

    Returns:
        Q×V: ``sum_i w_i v_i / sum_i w_i`` with ``w_i = 1 / (d_i + eps)`` over the k nearest.
    """
    k = min(k, keys.shape[0])
    out = []
    for q in queries.split(chunk):
        dist = torch.cdist(q, keys).clamp_min(0)
        d, i = dist.topk(k, dim=1, largest=False)
        w = 1.0 / (d + eps)
        w = w / w.sum(dim=1, keepdim=True)
        out.append((w.unsqueeze(-1) * values[i]).sum(dim=1))
    return torch.cat(out) if out else values.new_zeros(0, values.shape[1])


@register(
    "retrieval-knn",
    family="sample-retrieval",
    paper="Sample-retrieval family of the AdaMM survey; no public code, documented baseline",
    tags=("retrieval", "knn", "memory-bank"),
)
class RetrievalKNN(Strategy):
    """Borrow an absent modality's bottleneck feature from the k most similar cohort locations.

    Networks: one :class:`Encoder3D` per modality (1 input channel, ``config.width``) and the
    shared :class:`Decoder3D`. Skip levels get the mean of the available modalities' features;
    the bottleneck gets a 1×1×1 projection of the four modalities' bottleneck features
    concatenated in canonical order, where an absent modality's slot is filled by retrieval.

    Training (stage ``train``, random subsets): the absent modalities' bottleneck features are
    their true features, encoded from ``image_full`` (an oracle retrieval), so the decoder learns to
    read a complete bottleneck next to subset-dependent skips.

    Bank (stage ``bank``, ``kind="fit"``): one pass over every training case, each case once as
    one crop (the engine's fit data: :func:`mmbench.datasets.sampling.make_fit_batches`, crops
    seeded per case, so every pass sees the same crops). Every bottleneck location inside the
    brain contributes one entry holding the four modalities' bottleneck features (4×C); when
    there are more than ``bank_size`` (4096) entries a uniform sample of them is kept (reservoir
    sampling by random keys, seeded by ``bank_seed``; at ``quick`` all are kept). The bank lives
    in fixed-size buffers plus a filled count and the number of cases it was built from
    (``bank_cases``), so checkpoints carry it.

    Validation takes the test path: the bank stage is fitted on the current weights before
    every validation of the ``train`` stage (``Stage.fit_before_val``), so the val score that
    selects the checkpoint is the score of retrieval from a bank, and the selected checkpoint
    carries the bank built on its own weights.

    Retrieval (``predict``): for each bottleneck location the descriptor is the concatenation of
    the available modalities' features, compared with the same modalities' slots of the bank
    entries (so it is defined for every subset and never reads an absent channel); the
    ``k`` (5) nearest entries (``torch.cdist`` + ``topk``) give the absent modalities' features as
    an inverse-distance-weighted mean. Only an empty bank (a model that was never fitted, e.g.
    in unit tests) falls back to the mean of the available modalities' features.

    A baseline, not a published method (no public code, so ``recipe=published`` is the shared
    recipe): retrieval is local (one bottleneck cell, no spatial context), the bank is a bounded
    uniform sample of the cohort's locations, and features of other patients at the most
    similar-looking cell say nothing about where this patient's tumour is.
    """

    options: ClassVar[dict[str, Option]] = {
        "recipe": Option(
            "shared",
            "shared: the preset's recipe; published: the same (no published recipe exists)",
            choices=("shared", "published"),
        ),
        "k": Option(5, "neighbours averaged by retrieval", minimum=1),
        "bank_size": Option(4096, "most bank entries (bottleneck locations) kept", minimum=1),
        "bank_seed": Option(0, "seed of the uniform sample when the bank overflows"),
    }

    def __init__(self, config: MethodConfig) -> None:
        super().__init__(config)
        depth = config.depth
        width = config.width
        self.n_mod = config.in_channels
        self.k = int(config.option("k", 5))
        self.bank_seed = int(config.option("bank_seed", 0))
        self.depth = depth
        chans = level_channels(width, depth)
        self.encoders = nn.ModuleList(Encoder3D(1, width, depth) for _ in range(self.n_mod))
        self.merge = nn.Conv3d(self.n_mod * chans[-1], chans[-1], kernel_size=1)
        self.decoder = Decoder3D(width, depth, config.out_channels)
        bank_size = int(config.option("bank_size", 4096))
        self.register_buffer("bank_features", torch.zeros(bank_size, self.n_mod, chans[-1]))
        self.register_buffer("bank_keys", torch.full((bank_size,), float("inf")))
        self.register_buffer("bank_count", torch.zeros((), dtype=torch.long))
        self.register_buffer("bank_cases", torch.zeros((), dtype=torch.long))

    # ----------------------------------------------------------------------------- staging
    def stages(self) -> list[Stage]:
        return [
            Stage("train", ("main",)),
            # Fitted before each validation too, so val scores retrieval from a bank (the test
            # path); load_best refits it on the selected weights (same crops, same bank).
            Stage("bank", (), fraction=0.0, kind="fit", select_on_val=False, fit_before_val=True),
        ]

    # ----------------------------------------------------------------------------- features
    def encode(self, image: Tensor, modalities: Iterable[int]) -> dict[int, list[Tensor]]:
        """Per-modality feature pyramids ``{channel: [N×C_l×D_l×H_l×W_l per level]}``."""
        return {c: self.encoders[c](image[:, c : c + 1]) for c in modalities}

    def descriptor(self, bottleneck: dict[int, Tensor], available: list[int]) -> Tensor:
        """Retrieval descriptors: (N·d·h·w)×(k·C), the available modalities' bottleneck features
        concatenated in canonical order at each location (absent modalities never enter)."""
        x = torch.cat([bottleneck[c] for c in available], dim=1)
        return x.flatten(2).transpose(1, 2).flatten(0, 1)

    def retrieve(self, bottleneck: dict[int, Tensor], available: list[int]) -> dict[int, Tensor]:
        """Bottleneck features of the absent modalities, ``{channel: N×C×d×h×w}``."""
        absent = [c for c in range(self.n_mod) if c not in available]
        ref = bottleneck[available[0]]
        count = int(self.bank_count)
        if not absent:
            return {}
        if count == 0:
            mean = torch.stack([bottleneck[c] for c in available]).mean(0)
            return {c: mean for c in absent}
        bank = self.bank_features[:count].to(ref.dtype)
        keys = bank[:, available].flatten(1)
        values = bank[:, absent].flatten(1)
        filled = knn_fill(self.descriptor(bottleneck, available), keys, values, self.k)
        n, ch, *spatial = ref.shape
        filled = filled.reshape(n, -1, len(absent), ch).permute(0, 2, 3, 1)
        return {c: filled[:, j].reshape(n, ch, *spatial).contiguous() for j, c in enumerate(absent)}

    def segment(self, pyramids: dict[int, list[Tensor]], bottleneck: dict[int, Tensor]) -> Tensor:
        """Logits N×3×D×H×W from the available pyramids (skips) and all four bottlenecks."""
        available = list(pyramids)
        skips = [
            torch.stack([pyramids[c][level] for c in available]).mean(0)
            for level in range(self.depth)
        ]
        deepest = self.merge(torch.cat([bottleneck[c] for c in range(self.n_mod)], dim=1))
        return self.decoder([*skips, deepest])

    # ----------------------------------------------------------------------------- training
    def training_step(self, batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
        available = [MODALITIES.index(m) for m in batch["available"]]
        pyramids = self.encode(batch["image"], available)
        absent = [c for c in range(self.n_mod) if c not in available]
        oracle = self.encode(batch["image_full"], absent)
        bottleneck = {c: f[-1] for c, f in pyramids.items()}
        bottleneck.update({c: f[-1] for c, f in oracle.items()})
        return {"main": dice_bce_loss(self.segment(pyramids, bottleneck), batch["regions"])}

    @torch.no_grad()
    def fit(self, batches: Iterable[Batch], ctx: StepContext) -> None:
        """Build the bank from one pass of full-modality batches (each training case once):
        every brain location's four bottleneck features, a uniform sample if over
        ``bank_size``. Batches may carry ``case_index`` (N); cases are counted by it, else by
        batch size."""
        was_training = self.training
        self.eval()
        gen = torch.Generator().manual_seed(self.bank_seed)
        size = self.bank_features.shape[0]
        feats = self.bank_features.new_zeros(0, *self.bank_features.shape[1:])
        keys = self.bank_keys.new_zeros(0)
        stride = 2**self.depth
        cases: set[int] = set()
        for batch in batches:
            index = batch.get("case_index")
            n_batch = batch["image"].shape[0]
            ids = (
                [int(i) for i in index]
                if index is not None
                else range(len(cases), len(cases) + n_batch)
            )
            cases.update(ids)
            full = batch.get("image_full", batch["image"]).to(self.bank_features.device)
            pyramids = self.encode(full, range(self.n_mod))
            bottleneck = torch.stack([pyramids[c][-1] for c in range(self.n_mod)], dim=1)
            entries = bottleneck.flatten(3).permute(0, 3, 1, 2).flatten(0, 1)  # (N·dhw)×4×C
            brain = F.max_pool3d((full != 0).any(1, keepdim=True).float(), stride, stride)
            inside = brain.flatten() > 0
            if inside.any():
                entries = entries[inside]
            new_keys = torch.rand(entries.shape[0], generator=gen).to(keys.device)
            feats = torch.cat([feats, entries.float()])
            keys = torch.cat([keys, new_keys])
            if keys.shape[0] > size:
                keys, order = keys.topk(size, largest=False)
                feats = feats[order]
        count = keys.shape[0]
        self.bank_features.zero_()
        self.bank_keys.fill_(float("inf"))
        self.bank_features[:count] = feats
        self.bank_keys[:count] = keys
        self.bank_count.fill_(count)
        self.bank_cases.fill_(len(cases))
        self.train(was_training)

    # ----------------------------------------------------------------------------- inference
    def predict(self, image: Tensor, available: tuple[str, ...]) -> Tensor:
        idx = [MODALITIES.index(m) for m in available]
        pyramids = self.encode(image, idx)
        bottleneck = {c: f[-1] for c, f in pyramids.items()}
        bottleneck.update(self.retrieve(bottleneck, idx))
        return torch.sigmoid(self.segment(pyramids, bottleneck).float())

    def inference_modules(self) -> list[nn.Module]:
        return [self.encoders, self.merge, self.decoder]
