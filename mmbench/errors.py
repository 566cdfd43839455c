"""mmbench's own exception classes.

A :class:`MMBenchError` is an error the *user* can fix (a bad option, a missing data folder, a
broken case, a run folder holding another configuration): the command line prints its message
on one line and exits with status 2. Any other exception is a bug and keeps its traceback.
Every class also derives from :class:`ValueError`, as the errors it replaces did.
"""

from __future__ import annotations


class MMBenchError(ValueError):
    """An error the user can fix; its message names the offending input and what is valid."""


class ConfigError(MMBenchError):
    """A bad preset name, configuration key or value."""


class UnknownNameError(MMBenchError):
    """An unknown method, method group, dataset, split or similar name."""


class DataRootError(MMBenchError):
    """The data folder is missing or holds no usable case."""


class DataValidationError(MMBenchError):
    """Strict validation found problems; the message lists all of them."""


class RunError(MMBenchError):
    """A run cannot start or continue (e.g. its folder holds a different configuration)."""


class CheckpointError(MMBenchError):
    """A checkpoint or official weight file cannot be loaded (unsafe content, missing or
    mismatched keys); the message names the file and the first problems."""


class SplitError(MMBenchError):
    """A split file or split request is malformed or does not fit the dataset."""


class PredictionError(MMBenchError):
    """An outside prediction file is named, shaped or labelled wrongly; the message names it."""


class ReportError(MMBenchError):
    """Run folders cannot be reported as asked (none found, mixed conventions, bad option)."""
