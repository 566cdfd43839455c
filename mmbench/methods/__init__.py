"""Missing-modality strategies and their registry.

``create(name, preset=...)`` builds one; ``list_methods()`` lists them. Importing this package
imports every built-in strategy module so that their ``@register`` decorators run.
"""

from mmbench.benchmark.schema import FAMILIES
from mmbench.methods.base import (
    REGION_CHANNELS,
    MethodConfig,
    Stage,
    StepContext,
    Strategy,
)
from mmbench.methods.registry import (
    METHOD_GROUPS,
    MethodInfo,
    create,
    list_methods,
    method_group,
    method_info,
    register,
    resolve_methods,
)

# Built-in strategies (import order = listing order).
from mmbench.methods import zerofill as _zerofill  # noqa: E402,F401  isort: skip
from mmbench.methods import dropout_unet as _dropout_unet  # noqa: E402,F401  isort: skip
from mmbench.methods import adamm as _adamm  # noqa: E402,F401  isort: skip
from mmbench.methods import rfnet as _rfnet  # noqa: E402,F401  isort: skip
from mmbench.methods import uhved as _uhved  # noqa: E402,F401  isort: skip
from mmbench.methods import mmgan as _mmgan  # noqa: E402,F401  isort: skip
from mmbench.methods import shaspec as _shaspec  # noqa: E402,F401  isort: skip
from mmbench.methods import retrieval_knn as _retrieval_knn  # noqa: E402,F401  isort: skip

__all__ = [
    "FAMILIES",
    "METHOD_GROUPS",
    "REGION_CHANNELS",
    "MethodConfig",
    "MethodInfo",
    "Stage",
    "StepContext",
    "Strategy",
    "create",
    "list_methods",
    "method_group",
    "method_info",
    "register",
    "resolve_methods",
]
