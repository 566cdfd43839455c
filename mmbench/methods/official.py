"""Official-code ports: how an mmbench method maps onto its authors' released code.

A method that has a released PyTorch implementation registers an :class:`OfficialPort`. The port
does two things:

- :meth:`OfficialPort.reproduce` runs mmbench's implementation on a golden fixture
  (:class:`mmbench.golden.GoldenFixture`): it loads the fixture's rebuilt official weights
  through the converter, feeds the fixture's inputs and returns every output and loss the
  fixture stores, under the fixture's names. ``mmbench check-official`` compares them.
- :meth:`OfficialPort.convert_state_dict` maps an official checkpoint's state dict (with or
  without ``DataParallel``'s ``module.`` prefix) to the state dict of the mmbench strategy, so
  that ``mmbench import-weights`` can score the authors' weights with mmbench's protocol.

Register a port with :func:`register_official`::

    @register_official("rfnet")
    class RFNetPort(OfficialPort):
        source = "dyh127/RFNet@1e475fa"
        ...
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import Tensor

from mmbench.errors import CheckpointError, UnknownNameError
from mmbench.golden import GoldenFixture
from mmbench.methods.base import Strategy

DATA_PARALLEL_PREFIX = "module."


@dataclass
class Reproduction:
    """What a port computed on a fixture: outputs (tensors) and losses (scalars) by name."""

    outputs: dict[str, Any] = field(default_factory=dict)
    losses: dict[str, Any] = field(default_factory=dict)


class OfficialPort:
    """Base class of a method's official-code port; see the module docstring.

    Class attributes:
        method: the mmbench method name (set by :func:`register_official`).
        source: ``owner/repo@commit`` of the official code the port follows.
    """

    method: ClassVar[str] = ""
    source: ClassVar[str] = ""

    def reproduce(self, fixture: GoldenFixture) -> Reproduction:
        """Every output and loss of ``fixture``, computed by mmbench's implementation."""
        raise NotImplementedError

    def convert_state_dict(
        self, official: Mapping[str, Tensor], strategy: Strategy
    ) -> dict[str, Tensor]:
        """``strategy.state_dict()``-keyed tensors from an official state dict.

        ``official`` has had any ``module.`` prefix removed. The default takes the keys as they
        are; ports whose module layout differs from the official one override this.
        """
        return dict(official)

    def load_official(self, strategy: Strategy, official: Mapping[str, Tensor]) -> None:
        """Load an official state dict into ``strategy`` (strict: every key, every shape).

        Raises:
            CheckpointError: missing, unexpected or mis-shaped keys (the first ones listed).
        """
        converted = self.convert_state_dict(strip_data_parallel(official), strategy)
        check_state_dict(strategy, converted, what=f"official {self.method} weights")
        strategy.load_state_dict(converted, strict=True)


def strip_data_parallel(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The state dict without ``DataParallel``'s ``module.`` prefix (kept if not every key has
    it)."""
    if state and all(k.startswith(DATA_PARALLEL_PREFIX) for k in state):
        return {k[len(DATA_PARALLEL_PREFIX) :]: v for k, v in state.items()}
    return dict(state)


def check_state_dict(
    module: Any, state: Mapping[str, Tensor], what: str = "state dict", limit: int = 8
) -> None:
    """Raise :class:`CheckpointError` listing the first missing, unexpected and mis-shaped keys
    of ``state`` against ``module.state_dict()``."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if not (missing or unexpected or shapes):
        return
    parts = []
    for label, items in (
        ("missing", missing),
        ("unexpected", unexpected),
        ("shape mismatch (file vs model)", shapes),
    ):
        if items:
            more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
            parts.append(f"{len(items)} {label}: {', '.join(items[:limit])}{more}")
    raise CheckpointError(f"{what} do not fit the model: " + "; ".join(parts))


_PORTS: dict[str, type[OfficialPort]] = {}


def register_official(method: str) -> Callable[[type[OfficialPort]], type[OfficialPort]]:
    """Class decorator registering an :class:`OfficialPort` for ``method``."""

    def wrap(cls: type[OfficialPort]) -> type[OfficialPort]:
        if not (isinstance(cls, type) and issubclass(cls, OfficialPort)):
            raise TypeError(f"@register_official({method!r}) must decorate an OfficialPort")
        cls.method = method
        _PORTS[method] = cls
        return cls

    return wrap


def official_port(method: str) -> OfficialPort:
    """The registered port of ``method``.

    Raises:
        UnknownNameError: no port is registered (the message lists the methods that have one).
    """
    if method not in _PORTS:
        raise UnknownNameError(
            f"no official-code port for method {method!r}; methods with one: "
            f"{', '.join(list_official()) or 'none'}"
        )
    return _PORTS[method]()


def list_official() -> list[str]:
    """Methods with a registered official-code port."""
    return sorted(_PORTS)


__all__ = [
    "OfficialPort",
    "Reproduction",
    "check_state_dict",
    "list_official",
    "official_port",
    "register_official",
    "strip_data_parallel",
]
