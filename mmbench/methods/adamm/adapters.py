"""AdaMM's adapter bank: one adapter set per non-full modality subset (student only).

Keys are the subsets' canonical 4-bit codes (:attr:`mmbench.subsets.Subset.code`, T1,
T1ce, T2, FLAIR order, e.g. ``"0101"`` = T1ce+FLAIR), never bare bit positions, so a peer's channel
order cannot silently select the wrong adapters. The 14 non-full, non-empty codes are built. The
reference also builds an adapter set for the unreachable empty code and a second bank for the
teacher, which never uses it; both are omitted here (at C0 = 16: 134,288 and 15 × 134,288
parameters).

Adapter(c): 1×1 conv c→h → GELU → 1×1 conv h→c → dropout → + input. The spec's hidden width is
64 at C0 = 16; here h = 4·C0 so that it scales with the preset's width (64 at C0 = 16). The
dropout rate is not given by the spec; 0.1 (option ``adapter_dropout``). The second conv is
zero-initialised (the usual adapter init; the spec gives none), so every adapter starts as the
identity.

Per set (at C0 = 16: 134,288 parameters, as the reference): encoder adapters enc1 (2C0), enc2
(4C0), enc3 (8C0), enc4 (8C0), decoder adapters dec64 (4C0), dec32 (2C0), dec16 (C0), a
code-specific style conv (20C0→8C0) and fuse conv (16C0→8C0).
"""

from __future__ import annotations

from torch import Tensor, nn

from mmbench.subsets import ALL_SUBSETS, Subset

NON_FULL_SUBSETS: tuple[Subset, ...] = tuple(s for s in ALL_SUBSETS if not s.is_full)
"""The 14 subsets that have adapters (display order)."""


class Adapter(nn.Module):
    """Residual bottleneck adapter; N×c×D×H×W → N×c×D×H×W."""

    def __init__(self, channels: int, hidden: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.down = nn.Conv3d(channels, hidden, 1)
        self.act = nn.GELU()
        self.up = nn.Conv3d(hidden, channels, 1)
        self.drop = nn.Dropout(dropout)
        # Zero-initialised output projection: each adapter starts as the identity, so a subset's
        # adapters (trained on ~1/14 of the steps) begin from the shared network's features.
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.drop(self.up(self.act(self.down(x))))


class AdapterSet(nn.Module):
    """The adapters and bottleneck convs of one modality subset (see the module docstring)."""

    def __init__(self, width: int, hidden: int, dropout: float = 0.1) -> None:
        super().__init__()
        c = width
        self.enc1 = Adapter(2 * c, hidden, dropout)
        self.enc2 = Adapter(4 * c, hidden, dropout)
        self.enc3 = Adapter(8 * c, hidden, dropout)
        self.enc4 = Adapter(8 * c, hidden, dropout)
        self.dec64 = Adapter(4 * c, hidden, dropout)
        self.dec32 = Adapter(2 * c, hidden, dropout)
        self.dec16 = Adapter(c, hidden, dropout)
        self.style = nn.Conv3d(20 * c, 8 * c, 1)
        self.fuse = nn.Conv3d(16 * c, 8 * c, 1)


class AdapterBank(nn.Module):
    """One :class:`AdapterSet` per non-full subset, keyed by subset code.

    Args:
        width: base width C0 of the student.
        hidden: adapter hidden width; default 4·C0.
        dropout: dropout inside each adapter.
    """

    def __init__(self, width: int, hidden: int | None = None, dropout: float = 0.1) -> None:
        super().__init__()
        hidden = hidden or 4 * width
        self.sets = nn.ModuleDict(
            {s.code: AdapterSet(width, hidden, dropout) for s in NON_FULL_SUBSETS}
        )

    def get(self, subset: Subset) -> AdapterSet | None:
        """The subset's adapter set; None for the full subset (the student skips adapters)."""
        if subset.is_full:
            return None
        return self.sets[subset.code]  # type: ignore[return-value]
