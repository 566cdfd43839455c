"""AdaMM's adapter bank: one adapter set per non-full modality subset (student only).

Keys are the subsets' canonical 4-bit codes (:attr:`mmbench.subsets.Subset.code`, T1, T1ce, T2,
FLAIR order, e.g. ``"0101"`` = T1ce+FLAIR), never bare bit positions, so that a peer's channel
order cannot silently select the wrong adapters (the released code keys them by its own FLAIR,
T1, T1ce, T2 bits; the official-weights converter translates). The 14 non-full, non-empty codes
are built. The released code also builds a set for the unreachable empty code and a second bank
for the teacher, which never uses it; both are left out (no output depends on them).

Adapter(c): 1×1 conv c→h → GELU (exact) → 1×1 conv h→c → dropout → + input, with the released
dropout p = 0.2 and hidden width h = 64 at C0 = 16 (here 4·C0, so that it scales with the
preset's width). Default PyTorch initialisation, as released; ``zero_init`` (an mmbench option,
off by default) zero-initialises the second conv so that each adapter starts as the identity.

Per set (134,288 parameters at C0 = 16, as released): encoder adapters ``enc`` 0–3 (2C0, 4C0,
8C0, 8C0 channels), decoder adapters ``dec`` 0–2 (4C0, 2C0, C0), a code-specific style conv
(20C0→8C0) and fuse conv (16C0→8C0); see :mod:`.backbone` for where each sits.
"""

from __future__ import annotations

from torch import Tensor, nn

from mmbench.subsets import ALL_SUBSETS, Subset

NON_FULL_SUBSETS: tuple[Subset, ...] = tuple(s for s in ALL_SUBSETS if not s.is_full)
"""The 14 subsets that have adapters (display order)."""

ADAPTER_DROPOUT = 0.2
"""The released adapters' dropout (the ``p`` AdaMMKD passes down; its class default 0.1 is
unused)."""


class Adapter(nn.Module):
    """Residual bottleneck adapter; N×c×D×H×W → N×c×D×H×W."""

    def __init__(
        self, channels: int, hidden: int, dropout: float = ADAPTER_DROPOUT, zero_init: bool = False
    ) -> None:
        super().__init__()
        self.down = nn.Conv3d(channels, hidden, 1)
        self.act = nn.GELU()
        self.up = nn.Conv3d(hidden, channels, 1)
        self.drop = nn.Dropout(dropout)
        if zero_init:
            nn.init.zeros_(self.up.weight)
            nn.init.zeros_(self.up.bias)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.drop(self.up(self.act(self.down(x))))


class AdapterSet(nn.Module):
    """The adapters and bottleneck convs of one modality subset (see the module docstring)."""

    def __init__(
        self,
        width: int,
        hidden: int,
        dropout: float = ADAPTER_DROPOUT,
        zero_init: bool = False,
    ) -> None:
        super().__init__()
        c = width

        def adapter(channels: int) -> Adapter:
            return Adapter(channels, hidden, dropout, zero_init)

        self.enc = nn.ModuleList(adapter(k * c) for k in (2, 4, 8, 8))
        self.dec = nn.ModuleList(adapter(k * c) for k in (4, 2, 1))
        self.style = nn.Conv3d(20 * c, 8 * c, 1)
        self.fuse = nn.Conv3d(16 * c, 8 * c, 1)


class AdapterBank(nn.Module):
    """One :class:`AdapterSet` per non-full subset, keyed by subset code.

    Args:
        width: base width C0 of the student.
        hidden: adapter hidden width; default 4·C0 (64 at C0 = 16, as released).
        dropout: dropout inside each adapter.
        zero_init: start every adapter as the identity (not the released initialisation).
    """

    def __init__(
        self,
        width: int,
        hidden: int | None = None,
        dropout: float = ADAPTER_DROPOUT,
        zero_init: bool = False,
    ) -> None:
        super().__init__()
        hidden = hidden or 4 * width
        self.sets = nn.ModuleDict(
            {s.code: AdapterSet(width, hidden, dropout, zero_init) for s in NON_FULL_SUBSETS}
        )

    def get(self, subset: Subset) -> AdapterSet | None:
        """The subset's adapter set; None for the full subset (the student skips adapters)."""
        if subset.is_full:
            return None
        return self.sets[subset.code]  # type: ignore[return-value]
