"""Presets and configuration: YAML presets, ``--set key=value`` overrides, per-method configs."""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from mmbench.methods.base import MethodConfig

PRESETS: tuple[str, ...] = ("smoke", "quick", "paper")


class ConfigError(ValueError):
    """A bad preset name, override key or value."""


def load_config(preset: str | Path = "quick") -> dict[str, Any]:
    """Load a preset by name (``smoke``, ``quick``, ``paper``) or from a YAML file path."""
    text: str
    if str(preset) in PRESETS:
        text = resources.files("mmbench.benchmark").joinpath(f"presets/{preset}.yaml").read_text()
    else:
        path = Path(preset)
        if not path.is_file():
            raise ConfigError(
                f"unknown preset {str(preset)!r}; valid: {', '.join(PRESETS)} or a YAML file path"
            )
        text = path.read_text()
    config = yaml.safe_load(text)
    if not isinstance(config, dict):
        raise ConfigError(f"preset {preset!s} is not a YAML mapping")
    return config


def flatten_keys(config: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths of every leaf, e.g. ``train.steps``."""
    keys = []
    for k, v in config.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            keys.extend(flatten_keys(v, path + "."))
        else:
            keys.append(path)
    return keys


def apply_overrides(config: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Return a copy of ``config`` with ``key=value`` overrides applied.

    Keys are dotted paths that must exist in the preset, except under ``methods.<name>.`` where
    method options are free-form. Values are parsed as YAML (``3``, ``1e-4``, ``[48,48,48]``,
    ``true``, ``null``).

    Raises:
        ConfigError: for a malformed override or an unknown key (the message lists valid keys).
    """
    out = copy.deepcopy(config)
    valid = flatten_keys(config)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set takes key=value, got {item!r}")
        key, raw = item.split("=", 1)
        key = key.strip()
        parts = key.split(".")
        is_method_option = parts[0] == "methods" and len(parts) >= 3
        prefixes = {k.rsplit(".", 1)[0] for k in valid if "." in k}
        if key not in valid and key not in prefixes and not is_method_option:
            raise ConfigError(
                f"invalid --set key {key!r}; valid keys: {', '.join(valid)}, methods.NAME.OPTION"
            )
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"cannot parse value of --set {key}: {exc}") from exc
        node = out
        for p in parts[:-1]:
            if node.get(p) is None:
                node[p] = {}
            node = node[p]
        node[parts[-1]] = value
    return out


METHOD_TRAIN_KEY = "train"
"""Key of a ``methods.<name>`` section whose mapping overrides ``train`` keys for that method."""


def config_for_method(config: dict[str, Any], name: str) -> dict[str, Any]:
    """The configuration one run of method ``name`` trains with.

    A copy of ``config`` whose ``train`` section has the keys of ``methods.<name>.train``
    replaced, e.g. ``methods: {adamm: {train: {lr: 0.003}}}`` (each paper tunes its own learning
    rate; ``--set methods.adamm.train.lr=0.003`` does the same from the command line), and whose
    ``methods`` section holds only this method's options, so that another method's options do
    not make a finished run look differently configured.

    Raises:
        ConfigError: ``methods.<name>.train`` is not a mapping, or names a key that ``train``
            does not have (the message lists the valid ones).
    """
    section = (config.get("methods") or {}).get(name) or {}
    override = section.get(METHOD_TRAIN_KEY) if isinstance(section, dict) else None
    out = copy.deepcopy({k: v for k, v in config.items() if k != "methods"})
    out["methods"] = {name: copy.deepcopy(section)} if section else {}
    if override is None:
        return out
    if not isinstance(override, dict):
        raise ConfigError(f"methods.{name}.{METHOD_TRAIN_KEY} must be a mapping of train keys")
    unknown = sorted(set(override) - set(out.get("train", {})))
    if unknown:
        raise ConfigError(
            f"invalid key(s) methods.{name}.{METHOD_TRAIN_KEY}.{', '.join(unknown)}; valid: "
            + ", ".join(sorted(out.get("train", {})))
        )
    out["train"].update(copy.deepcopy(override))
    return out


def method_config(config: dict[str, Any], name: str) -> MethodConfig:
    """The :class:`MethodConfig` for method ``name`` under a resolved config."""
    model = config.get("model", {})
    patch = tuple(int(v) for v in model.get("patch_size", (64, 64, 64)))
    options = dict((config.get("methods") or {}).get(name) or {})
    options.pop(METHOD_TRAIN_KEY, None)  # the engine's, see config_for_method
    return MethodConfig(
        width=int(model.get("width", 8)),
        depth=int(options.pop("depth", model.get("depth", 3))),
        patch_size=patch,  # type: ignore[arg-type]
        total_steps=int(config.get("train", {}).get("steps", 1000)),
        options=options,
    )
