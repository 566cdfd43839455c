"""The dedicated upper bound: one network per modality subset (family ``reference``)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from mmbench.methods.base import Batch, MethodConfig, Option, Stage, StepContext, Strategy
from mmbench.methods.blocks import UNet3D
from mmbench.methods.losses import dice_bce_loss
from mmbench.methods.registry import BOUND_TAG, register
from mmbench.subsets import ALL_SUBSETS, MODALITIES, Subset, as_subset


def optimizer_name(subset: Subset) -> str:
    """The optimiser (and stage) key of ``subset``'s network, e.g. ``"net-T1+T2"``."""
    return f"net-{subset.name}"


@register(
    "dedicated",
    family="reference",
    paper="Upper bound named by the AdaMM paper (arXiv 2509.15017): one network per subset, "
    "each trained only on its subset (as in e.g. Havaei et al., HeMIS, MICCAI 2016)",
    tags=(BOUND_TAG, "upper-bound", "unet"),
)
class Dedicated(Strategy):
    """Fifteen copies of the shared backbone, one per modality subset, each trained only on
    batches of its own subset; ``predict`` routes to the network of the available subset.

    Network ``s`` is the compact U-Net (:class:`~mmbench.methods.blocks.UNet3D`) with one input
    channel per modality of ``s`` (canonical order): absent modalities are not inputs at all.
    Training is fifteen gradient stages in table order, one per subset, each with its own Adam
    optimiser, the subset fixed by :attr:`Stage.subset`, the preset's full step budget
    (``step_budget = 15``) and a poly schedule of its own (``schedule="stage"``): every network
    gets exactly the recipe of one ordinary run. No stage selects on val (the val score is over
    several subsets, so it cannot choose one network's weights): every network keeps its final
    weights.

    ``parameter_count`` counts all fifteen networks: serving every subset needs them all, and a
    single case uses one of them (about a fifteenth, see ``docs/methods/dedicated.md``).
    """

    options: ClassVar[dict[str, Option]] = {}
    step_budget: ClassVar[float] = float(len(ALL_SUBSETS))

    def __init__(self, config: MethodConfig) -> None:
        super().__init__(config)
        self.subsets: tuple[Subset, ...] = ALL_SUBSETS
        self.nets = nn.ModuleDict(
            {
                optimizer_name(s): UNet3D(
                    s.size, config.out_channels, width=config.width, depth=config.depth
                )
                for s in self.subsets
            }
        )

    def stages(self) -> list[Stage]:
        return [
            Stage(
                optimizer_name(s),
                (optimizer_name(s),),
                fraction=1.0,
                select_on_val=False,
                schedule="stage",
                subset=s.name,
            )
            for s in self.subsets
        ]

    def configure_optimizers(
        self, lr: float, weight_decay: float
    ) -> dict[str, torch.optim.Optimizer]:
        return {
            key: torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
            for key, net in self.nets.items()
        }

    def network(self, subset: Subset | tuple[str, ...]) -> nn.Module:
        """The network dedicated to ``subset`` (a :class:`Subset` or modality names)."""
        return self.nets[optimizer_name(as_subset(subset))]

    def run(self, image: Tensor, available: tuple[str, ...]) -> Tensor:
        """N×4×D×H×W (only ``available`` channels read) → N×3×D×H×W logits of the
        ``available`` subset's network."""
        present = [MODALITIES.index(m) for m in available]
        return self.network(available)(image[:, present])

    def training_step(self, batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
        subset = as_subset(batch["available"])
        logits = self.run(batch["image"], subset.available)
        return {optimizer_name(subset): dice_bce_loss(logits, batch["regions"])}

    def predict(self, image: Tensor, available: tuple[str, ...]) -> Tensor:
        return torch.sigmoid(self.run(image, available).float())
