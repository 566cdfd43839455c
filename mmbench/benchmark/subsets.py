"""Moved to :mod:`mmbench.subsets`; this alias stays for one release."""

import warnings

from mmbench.subsets import *  # noqa: F403
from mmbench.subsets import __all__  # noqa: F401

warnings.warn(
    "mmbench.benchmark.subsets moved to mmbench.subsets", DeprecationWarning, stacklevel=2
)
