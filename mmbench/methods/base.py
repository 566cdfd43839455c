"""The strategy contract: what every missing-modality method in mmbench provides.

A strategy is a ``torch.nn.Module`` that owns its networks. The shared training loop
(:mod:`mmbench.benchmark.trainer`) owns devices, precision, optimiser steps, gradient clipping,
logging, checkpoints and resume; a strategy never writes its own loop. To add a method, write one
file::

    from mmbench.methods import Strategy, register

    @register("my-method", family="robustness-enhancement", paper="Doe et al., MICCAI 2030",
              tags=("unet",))
    class MyMethod(Strategy):
        \"\"\"What it is; where it departs from the paper.\"\"\"

        def __init__(self, config):
            super().__init__(config)
            self.net = UNet3D(4, 3, width=config.width)

        def training_step(self, batch, ctx):
            logits = self.net(batch["image"])
            return {"main": dice_bce_loss(logits, batch["regions"])}

        def predict(self, image, available):
            return torch.sigmoid(self.net(image))

and make it importable (a module under ``mmbench/methods/`` imported by
``mmbench/methods/__init__.py``, or a third-party package exposing it through the entry-point group
``mmbench.methods``).

Data seen by a strategy (one batch shares one modality subset):

- ``batch["image"]``: float N×4×D×H×W, canonical channel order (T1, T1ce, T2, FLAIR), normalised,
  **absent channels already zero** (the loop applies :func:`mmbench.subsets.zero_absent`).
- ``batch["image_full"]``: float N×4×D×H×W, all four modalities (training only: teachers,
  generators and reconstruction targets may read it; ``predict`` never gets it).
- ``batch["regions"]``: float N×3×D×H×W binary targets for WT, TC, ET.
- ``batch["compartments"]``: float N×3×D×H×W disjoint binary labels NETC, ED, ET
  (other labels, e.g. a resection cavity, are background).
- ``batch["available"]``: tuple of present modality names, e.g. ``("T1ce", "FLAIR")``.
- ``batch["subset"]``: the :class:`~mmbench.subsets.Subset`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from mmbench.regions import REGIONS
from mmbench.subsets import FULL, MODALITIES, Subset, zero_absent

REGION_CHANNELS: tuple[str, ...] = REGIONS
"""Channel order of ``predict``'s output (:data:`mmbench.regions.REGIONS`)."""

Batch = dict[str, Any]


_NO_DEFAULT: Any = object()


@dataclass(frozen=True)
class Option:
    """A method-specific option (``--set methods.NAME.KEY=VALUE``), declared in
    :attr:`Strategy.options` so that a bad key or value is refused before any work starts.

    Attributes:
        default: the value when the key is not set; its type is the option's type (an int
            default also accepts whole floats, a float default also accepts ints).
        help: one line for ``mmbench list`` and error messages.
        choices: the allowed values, if the option is an enumeration.
        minimum, maximum: inclusive bounds of a numeric option.
        nullable: ``None`` is allowed besides values of the default's type.
    """

    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    nullable: bool = False

    def check(self, key: str, value: Any) -> Any:
        """``value`` converted to the option's type.

        Raises:
            ValueError: the value has the wrong type or is outside the choices or bounds; the
                message names the key and what is allowed.
        """
        if value is None and (self.nullable or self.default is None):
            return None
        kind = type(self.default)
        if self.choices is not None:
            if value not in self.choices:
                allowed = ", ".join(map(str, self.choices))
                raise ValueError(f"{key} must be one of {allowed}; got {value!r}")
            return value
        if kind is bool:
            if not isinstance(value, bool):
                raise ValueError(f"{key} must be true or false; got {value!r}")
        elif kind is int:
            if isinstance(value, bool) or not (
                isinstance(value, int) or (isinstance(value, float) and value.is_integer())
            ):
                raise ValueError(f"{key} must be an integer; got {value!r}")
            value = int(value)
        elif kind is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{key} must be a number; got {value!r}")
            value = float(value)
        elif kind is str:
            if not isinstance(value, str):
                raise ValueError(f"{key} must be a string; got {value!r}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if self.minimum is not None and value < self.minimum:
                raise ValueError(f"{key} must be >= {self.minimum}; got {value!r}")
            if self.maximum is not None and value > self.maximum:
                raise ValueError(f"{key} must be <= {self.maximum}; got {value!r}")
        return value


@dataclass
class MethodConfig:
    """What a strategy is built from; filled from the preset.

    Attributes:
        width: base channel count C0 of the networks (the preset's ``model.width``).
        depth: down-samplings of the shared U-Net backbone (the preset's ``model.depth``).
        patch_size: training crop (D, H, W) in voxels; also the sliding-window size at inference.
        in_channels: number of modalities (always 4, canonical order).
        out_channels: number of predicted regions (always 3: WT, TC, ET).
        total_steps: number of optimisation steps the loop will run (for ramp-ups).
        options: method-specific keys from the preset's ``methods.<name>`` section.
    """

    width: int = 8
    depth: int = 3
    patch_size: tuple[int, int, int] = (64, 64, 64)
    in_channels: int = len(MODALITIES)
    out_channels: int = len(REGION_CHANNELS)
    total_steps: int = 1000
    options: dict[str, Any] = field(default_factory=dict)

    def option(self, key: str, default: Any = _NO_DEFAULT) -> Any:
        """A method-specific option (``--set methods.NAME.KEY=VALUE``); without ``default``,
        the key must be set (the engine fills every declared :class:`Option`'s default)."""
        if default is _NO_DEFAULT:
            return self.options[key]
        return self.options.get(key, default)


@dataclass(frozen=True)
class Stage:
    """One stage of training, run in the order :meth:`Strategy.stages` lists them.

    Attributes:
        name: passed back to the strategy in :class:`StepContext`.
        optimizers: names of the optimisers (keys of :meth:`Strategy.configure_optimizers`) that
            step in this stage; a ``fit`` stage uses none.
        fraction: share of the run's gradient steps given to this stage (fractions of the
            gradient stages are normalised to sum to one).
        kind: ``"gradient"`` (the loop calls :meth:`Strategy.training_step`) or ``"fit"``
            (the loop calls :meth:`Strategy.fit` once with the training loader).
        select_on_val: validate during this stage and keep the best weights (on the val split).
        schedule: ``"run"``: the loop's poly schedule runs over the whole run's gradient steps;
            ``"stage"``: it restarts at the start of this stage and runs over the stage's steps
            (a segmenter trained after a generator gets a full schedule of its own).
        subset: train this stage on one fixed modality subset (a name or 4-bit code) instead
            of the strategy's ``train_subsets`` (e.g. one network per subset).
        fit_before_val: for a ``fit`` stage: also fit it (on the current weights, not recorded
            as done) before every validation of an earlier gradient stage, so that the val
            split scores the path ``predict`` takes at test time (e.g. a retrieval bank).
    """

    name: str
    optimizers: tuple[str, ...] = ("main",)
    fraction: float = 1.0
    kind: Literal["gradient", "fit"] = "gradient"
    select_on_val: bool = True
    schedule: Literal["run", "stage"] = "run"
    subset: str | None = None
    fit_before_val: bool = False


@dataclass
class StepContext:
    """Where the loop is. ``progress`` runs from 0 to 1 over the whole run's gradient steps."""

    step: int
    total_steps: int
    stage: str
    stage_step: int
    stage_steps: int
    subset: Subset = FULL

    @property
    def progress(self) -> float:
        return self.step / max(1, self.total_steps)

    @property
    def stage_progress(self) -> float:
        return self.stage_step / max(1, self.stage_steps)


class Strategy(nn.Module):
    """Base class of every missing-modality strategy; see the module docstring.

    Class attributes set by :func:`mmbench.methods.register`: ``name``, ``family``, ``paper``,
    ``tags``.

    ``train_subsets`` says which subsets the loop draws for training: ``"random"`` (the run's
    subset sampler, uniform over the 15 by default) or ``"full"`` (complete inputs only, as the
    zero-fill lower bound).

    ``options`` declares the method's options (``methods.NAME.KEY``) with their defaults, types
    and allowed values; the engine refuses undeclared keys and bad values before any work and
    fills the defaults, so ``config.option(key)`` always has a value.

    ``step_budget`` multiplies the preset's ``train.steps`` for this method: 1 for every method
    of the comparison; a bound that trains one network per subset (15 networks, each with the
    budget of a run) sets 15.
    """

    name: ClassVar[str] = ""
    family: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    tags: ClassVar[tuple[str, ...]] = ()
    train_subsets: ClassVar[Literal["random", "full"]] = "random"
    step_budget: ClassVar[float] = 1.0
    options: ClassVar[dict[str, Option]] = {}

    @classmethod
    def declares_options(cls) -> bool:
        """Whether this class or a base below :class:`Strategy` declares ``options`` (a plug-in
        that declares none takes its options unchecked)."""
        return any("options" in k.__dict__ for k in cls.__mro__ if k is not Strategy)

    @classmethod
    def declared_options(cls) -> dict[str, Option]:
        """Every :class:`Option` of this class and its bases (a subclass overrides a base's)."""
        out: dict[str, Option] = {}
        for klass in reversed(cls.__mro__):
            out.update(klass.__dict__.get("options", {}))
        return out

    def __init__(self, config: MethodConfig) -> None:
        super().__init__()
        self.config = config

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Every subclass's predict (and predict_window) is wrapped so that absent channels are
        # zero and `available` is in canonical order whatever the caller passed: missing data
        # cannot leak into a prediction through a strategy that forgot to mask.
        for attr in ("predict", "predict_window"):
            original = cls.__dict__.get(attr)
            if original is not None and not getattr(original, "_masks_absent", False):
                setattr(cls, attr, _masking(original))

    # ----------------------------------------------------------------------------- training
    def stages(self) -> list[Stage]:
        """Ordered training stages. Default: one gradient stage with the ``main`` optimiser."""
        return [Stage("train", ("main",))]

    def configure_optimizers(
        self, lr: float, weight_decay: float
    ) -> dict[str, torch.optim.Optimizer]:
        """Optimisers by name. Default: one Adam named ``main`` over every parameter.

        The loop sets the learning rate of every optimiser from its poly schedule, each relative
        to the lr it was created with (so a discriminator may start at its own lr).
        """
        return {"main": torch.optim.Adam(self.parameters(), lr=lr, weight_decay=weight_decay)}

    def lr_factor(self, optimizer: str, ctx: StepContext) -> float | None:
        """Factor applied to ``optimizer``'s initial learning rate at step ``ctx.step``.

        ``None`` (the default) leaves it to the loop's poly schedule (see :class:`Stage`); a
        method whose published recipe uses another schedule returns its own factor.
        """
        return None

    def training_step(self, batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
        """Losses of one batch for the current stage.

        Returns:
            ``{optimizer name: scalar loss}`` for the optimisers active in ``ctx.stage``. The loop
            back-propagates each loss only into the parameters of its own optimiser, all before
            any optimiser steps, so a generator loss through a discriminator does not touch the
            discriminator's gradients. Extra scalars to log go under keys starting with ``log/``
            (detached tensors or floats).
        """
        raise NotImplementedError

    def fit(self, batches: Iterable[Batch], ctx: StepContext) -> None:
        """Non-gradient fitting for a ``fit`` stage (e.g. building a retrieval bank).

        ``batches`` yields full-modality training batches (deterministic preprocessing and crops).
        Anything fitted must live in registered buffers so that checkpoints carry it.
        """
        raise NotImplementedError(f"{type(self).__name__} declares a fit stage but no fit()")

    def postprocess(self, prob: Tensor, available: tuple[str, ...]) -> Tensor:
        """Whole-volume post-processing of the blended window outputs, after the sliding-window
        windows are blended (e.g. a gate that must see the whole prediction, not one window).

        Args:
            prob: float N×K×D×H×W blend of :meth:`predict_window`'s outputs over whole volumes
                (K = 3 and WT, TC, ET probabilities unless a strategy's ``predict_window`` says
                otherwise; an evaluator that blends :meth:`predict` passes K = 3).
            available: present modality names in canonical order.

        Returns:
            float N×3×D×H×W probabilities (WT, TC, ET). Default: ``prob`` unchanged.
        """
        return prob

    def predict_window(self, image: Tensor, available: tuple[str, ...]) -> Tensor:
        """What sliding-window inference blends for one window; :meth:`postprocess` maps the
        blend of the whole volume to WT, TC, ET.

        Default: :meth:`predict`'s N×3 region probabilities. A strategy whose whole-volume step
        needs more than the blended regions (e.g. label maps and a presence-logit map, so that
        a gate decided on the whole volume can erase a label) returns more channels here; its
        :meth:`postprocess` must then accept both that blend and a 3-channel region blend.
        Absent channels are zeroed before the call, as for :meth:`predict`.
        """
        return self.predict(image, available)

    # ----------------------------------------------------------------------------- inference
    def predict(self, image: Tensor, available: tuple[str, ...]) -> Tensor:
        """Region probabilities.

        Args:
            image: float N×4×D×H×W, canonical order, absent channels zero. D, H, W are the
                preset's patch size or any size divisible by the network's total stride.
            available: present modality names in canonical order, e.g. ``("T1ce", "FLAIR")``.

        Returns:
            float N×3×D×H×W probabilities in [0, 1] for WT, TC, ET. The values of absent channels
            must never influence the output.
        """
        raise NotImplementedError

    def extra_metrics(
        self, image: Tensor, image_full: Tensor, available: tuple[str, ...]
    ) -> list[tuple[str, str, float]]:
        """Optional extra evaluation rows for one case and subset: ``(region, metric, value)``.

        ``image_full`` is given to the evaluator's hook only for scoring (e.g. the PSNR of a
        synthesised modality); it must never reach ``predict``. Default: none.
        """
        return []

    def inference_modules(self) -> Iterable[nn.Module]:
        """Modules ``predict`` uses (the student of a teacher–student pair). Default: all."""
        return [self]

    def parameter_count(self) -> int:
        """Parameters used at inference (what papers report and ``mmbench list`` shows)."""
        return _count_unique(p for m in self.inference_modules() for p in m.parameters())

    def training_only_parameter_count(self) -> int:
        """Parameters used in training but not at inference (teachers, discriminators,
        auxiliary and reconstruction decoders)."""
        used = {id(p) for m in self.inference_modules() for p in m.parameters()}
        return _count_unique(p for p in self.parameters() if id(p) not in used)


def _masking(method: Any) -> Any:
    """``method(self, image, available)`` with absent channels zeroed and ``available`` in
    canonical order."""

    @functools.wraps(method)
    def wrapped(self: Strategy, image: Tensor, available: Iterable[str]) -> Tensor:
        names = subset_of(available).available
        return method(self, zero_absent(image, names), names)

    wrapped._masks_absent = True  # type: ignore[attr-defined]
    return wrapped


def _count_unique(params: Iterable[nn.Parameter]) -> int:
    seen: set[int] = set()
    total = 0
    for p in params:
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def subset_of(available: Iterable[str]) -> Subset:
    """The :class:`Subset` for a tuple of available modality names."""
    return Subset.from_names(available)


def availability_tensor(available: Iterable[str], batch: int, device: Any = None) -> Tensor:
    """Float N×4 availability mask (1 present, 0 absent) in canonical order."""
    mask = torch.tensor(subset_of(available).mask, dtype=torch.float32, device=device)
    return mask.unsqueeze(0).expand(batch, -1)


def validate_losses(losses: Mapping[str, Any], optimizers: Iterable[str]) -> None:
    """Raise a clear error when a strategy returns a loss for an unknown optimiser."""
    known = set(optimizers)
    for key in losses:
        if key.startswith("log/"):
            continue
        if key not in known:
            raise KeyError(
                f"training_step returned a loss for {key!r}; optimisers: {sorted(known)}"
            )
