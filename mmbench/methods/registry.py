"""The strategy registry: a decorator, ``create`` and ``list_methods``, plus entry points.

Third-party packages register strategies through the entry-point group ``mmbench.methods``; each
entry point names a module (importing it runs its ``@register`` decorators) or a Strategy class.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from mmbench.families import FAMILIES
from mmbench.methods.base import MethodConfig, Strategy

ENTRY_POINT_GROUP = "mmbench.methods"

#: Tag of a method that is a component ablation of another (e.g. ``adamm-no-garm``).
ABLATION_TAG = "ablation"
#: Tag of the complete method that ablations are compared against (e.g. ``adamm``).
ABLATION_BASE_TAG = "ablation-base"

#: Tag of a bound that is not a method of the comparison (e.g. one network per subset).
BOUND_TAG = "bound"

#: Named groups ``--methods`` accepts besides method names.
METHOD_GROUPS: dict[str, str] = {
    "all": "the family comparison: every registered method except ablation variants and bounds",
    "ablations": "the ablation study: complete methods and their ablation variants",
    "bounds": "bounds outside the comparison (e.g. one dedicated network per subset)",
}


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


def _ordered() -> list[MethodInfo]:
    # Table order: by family (FAMILIES), then in registration order.
    _load_entry_points()
    order = {name: i for i, name in enumerate(_REGISTRY)}
    return sorted(_REGISTRY.values(), key=lambda m: (FAMILIES.index(m.family), order[m.name]))


def list_methods(family: str | None = None, tag: str | None = None) -> list[str]:
    """Registered method names (built-in and plug-ins) in table order (by family, then in
    registration order), optionally filtered."""
    return [
        info.name
        for info in _ordered()
        if (family is None or info.family == family) and (tag is None or tag in info.tags)
    ]


def method_group(group: str) -> list[str]:
    """The members of a named group (see :data:`METHOD_GROUPS`), in registration order.

    ``all`` leaves out ablation variants (tag ``ablation``): they are the ablation study of one
    method, not entries of the family comparison, and ``ablations`` runs them with the complete
    methods they ablate (tag ``ablation-base``).
    """
    if group == "all":
        return [m.name for m in _ordered() if not {ABLATION_TAG, BOUND_TAG} & set(m.tags)]
    if group == "bounds":
        return [m.name for m in _ordered() if BOUND_TAG in m.tags]
    if group == "ablations":
        return [
            m.name for m in _ordered() if ABLATION_TAG in m.tags or ABLATION_BASE_TAG in m.tags
        ]
    raise ValueError(f"unknown method group {group!r}; valid: {', '.join(METHOD_GROUPS)}")


def resolve_methods(names: str | Sequence[str]) -> list[str]:
    """Method names and group names (``"all"``, ``"adamm,rfnet"``, ``"all,ablations"`` or a
    list) → registered names, each once, in the order given.

    Raises:
        ValueError: an unknown name; the message lists the methods and groups.
    """
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    out: list[str] = []
    for name in names:
        if name in METHOD_GROUPS:
            members = method_group(name)
        else:
            _load_entry_points()
            if name not in _REGISTRY:
                raise ValueError(
                    f"unknown method {name!r}; valid: {', '.join(list_methods())} "
                    f"or a group: {', '.join(METHOD_GROUPS)}"
                )
            members = [name]
        out += [m for m in members if m not in out]
    if not out:
        raise ValueError(f"no methods given; valid: {', '.join(list_methods())}")
    return out


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
