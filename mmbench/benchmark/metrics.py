"""Moved to :mod:`mmbench.metrics`; this alias stays for one release."""

import warnings

from mmbench.metrics import *  # noqa: F403
from mmbench.metrics import __all__  # noqa: F401

warnings.warn(
    "mmbench.benchmark.metrics moved to mmbench.metrics", DeprecationWarning, stacklevel=2
)
