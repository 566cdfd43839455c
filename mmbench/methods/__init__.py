"""Missing-modality strategies and their registry.

``create(name, preset=...)`` builds one; ``list_methods()`` lists them. Importing this package
imports every module under it, so that the ``@register`` decorators of the built-in strategies
run: a new method is one file (or sub-package) here, with no import list to edit.
"""

import importlib
import pkgutil

from mmbench.families import FAMILIES
from mmbench.methods.base import (
    REGION_CHANNELS,
    MethodConfig,
    Stage,
    StepContext,
    Strategy,
)
from mmbench.methods.official import (
    OfficialPort,
    Reproduction,
    list_official,
    official_port,
    register_official,
)
from mmbench.methods.registry import (
    METHOD_GROUPS,
    MethodInfo,
    create,
    list_methods,
    method_config,
    method_group,
    method_info,
    method_options,
    register,
    resolve_methods,
)


def _import_builtin_methods() -> None:
    # Every module and sub-package of this package is imported, so that a new built-in method
    # is one file whose @register decorator runs; nothing lists the methods by hand.
    for module in pkgutil.iter_modules(__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")


_import_builtin_methods()

__all__ = [
    "FAMILIES",
    "METHOD_GROUPS",
    "REGION_CHANNELS",
    "MethodConfig",
    "MethodInfo",
    "OfficialPort",
    "Reproduction",
    "Stage",
    "StepContext",
    "Strategy",
    "create",
    "list_methods",
    "list_official",
    "method_group",
    "method_config",
    "method_info",
    "method_options",
    "official_port",
    "register",
    "register_official",
    "resolve_methods",
]
