"""The strategy registry: a decorator, ``create`` and ``list_methods``, plus entry points.

Third-party packages register strategies through the entry-point group ``mmbench.methods``; each
entry point names a module (importing it runs its ``@register`` decorators) or a Strategy class.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from mmbench.benchmark.schema import FAMILIES
from mmbench.methods.base import MethodConfig, Strategy

ENTRY_POINT_GROUP = "mmbench.methods"


@dataclass(frozen=True)
class MethodInfo:
    """A registry entry."""

    name: str
    family: str
    paper: str
    tags: tuple[str, ...]
    cls: type[Strategy]

    @property
    def summary(self) -> str:
        doc = (self.cls.__doc__ or "").strip().splitlines()
        return doc[0] if doc else ""


_REGISTRY: dict[str, MethodInfo] = {}
_entry_points_loaded = False


def register(
    name: str, *, family: str, paper: str, tags: tuple[str, ...] = ()
) -> Callable[[type[Strategy]], type[Strategy]]:
    """Class decorator that registers a :class:`Strategy` under ``name``."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r} for {name!r}; valid: {', '.join(FAMILIES)}")

    def wrap(cls: type[Strategy]) -> type[Strategy]:
        if not (isinstance(cls, type) and issubclass(cls, Strategy)):
            raise TypeError(f"@register({name!r}) must decorate a Strategy subclass")
        existing = _REGISTRY.get(name)
        if existing is not None and existing.cls is not cls:
            raise ValueError(f"method name {name!r} is already registered by {existing.cls}")
        cls.name, cls.family, cls.paper, cls.tags = name, family, paper, tuple(tags)
        _REGISTRY[name] = MethodInfo(name, family, paper, tuple(tags), cls)
        return cls

    return wrap


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as exc:  # a broken plug-in must not take the suite down
            warnings.warn(
                f"mmbench: could not load method plug-in {ep.name!r}: {exc}", stacklevel=2
            )


def list_methods(family: str | None = None, tag: str | None = None) -> list[str]:
    """Registered method names (built-in and plug-ins), optionally filtered."""
    _load_entry_points()
    return [
        n
        for n, info in _REGISTRY.items()
        if (family is None or info.family == family) and (tag is None or tag in info.tags)
    ]


def method_info(name: str) -> MethodInfo:
    _load_entry_points()
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; valid: {', '.join(list_methods())}")
    return _REGISTRY[name]


def create(name: str, preset: str | dict[str, Any] | None = None, **options: Any) -> Strategy:
    """Build a registered strategy.

    Args:
        name: registry name, e.g. ``"dropout-unet"``.
        preset: a preset name (``"smoke"``, ``"quick"``, ``"paper"``) or a resolved config dict;
            sets the width and patch size and the method's own options.
        options: method-specific options overriding the preset's ``methods.<name>`` section.
    """
    info = method_info(name)
    from mmbench.benchmark.config import load_config, method_config

    config = load_config(preset or "quick") if not isinstance(preset, dict) else preset
    mc: MethodConfig = method_config(config, name)
    mc.options.update(options)
    return info.cls(mc)
