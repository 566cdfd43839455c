"""The run folder and its one owner, :class:`RunDir`.

``<out>/<dataset>/<method>/seed<S>-fold<F>/`` holds everything about one run (layout in
:mod:`mmbench.benchmark.schema`). :class:`RunDir` knows its paths, reads and writes its status
(``run.json``), checks that a rerun has the same configuration and split, and hands out its
results store. Every file is written atomically.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from mmbench.atomic import atomic_write_json, atomic_write_text
from mmbench.benchmark import schema
from mmbench.benchmark.results import ResultsStore
from mmbench.config import Config
from mmbench.datasets.splits import Split
from mmbench.errors import ConfigError, RunError

STATUS_TRAINING = "training"
STATUS_EVALUATING = "evaluating"
STATUS_COMPLETE = "complete"
STATUSES: tuple[str, ...] = (STATUS_TRAINING, STATUS_EVALUATING, STATUS_COMPLETE)


class RunDir:
    """One run folder. Creating the object touches nothing on disk."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @classmethod
    def for_run(cls, out: str | Path, dataset: str, method: str, seed: int, fold: int) -> RunDir:
        return cls(Path(out) / dataset / method / f"seed{seed}-fold{fold}")

    # ---------------------------------------------------------------------------- paths
    @property
    def config_path(self) -> Path:
        return self.path / schema.CONFIG_FILE

    @property
    def split_path(self) -> Path:
        return self.path / schema.SPLIT_FILE

    @property
    def info_path(self) -> Path:
        return self.path / schema.RUN_INFO_FILE

    @property
    def metrics_path(self) -> Path:
        return self.path / schema.METRICS_FILE

    @property
    def log_path(self) -> Path:
        return self.path / schema.TRAIN_LOG_FILE

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / schema.CHECKPOINT_DIR

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoint_dir / schema.CHECKPOINT_LAST

    @property
    def best_checkpoint(self) -> Path:
        return self.checkpoint_dir / schema.CHECKPOINT_BEST

    @property
    def predictions_dir(self) -> Path:
        return self.path / schema.PREDICTIONS_DIR

    def prediction_path(self, case: str, subset: Any) -> Path:
        return self.predictions_dir / schema.prediction_file_name(case, subset)

    # ---------------------------------------------------------------------------- status
    def read_info(self) -> dict[str, Any]:
        """``run.json`` as a dict (empty when absent)."""
        if not self.info_path.exists():
            return {}
        return json.loads(self.info_path.read_text())

    def write_info(self, info: dict[str, Any]) -> None:
        atomic_write_json(self.info_path, info)

    def update_info(self, **fields: Any) -> dict[str, Any]:
        """Merge ``fields`` into ``run.json`` (atomically) and return the result."""
        info = {**self.read_info(), **fields}
        self.write_info(info)
        return info

    @property
    def status(self) -> str | None:
        return self.read_info().get("status")

    def has_progress(self) -> bool:
        """Whether training or evaluation has written anything that a rerun would resume."""
        return self.last_checkpoint.exists() or self.metrics_path.exists()

    # ---------------------------------------------------------------------------- checks
    def check_config(self, config: Config) -> None:
        """Write ``config.yaml``, or check that the one there describes the same run.

        A folder whose run has not started (no checkpoint, no metrics) takes the new
        configuration, so a run that failed before training can be rerun with corrected
        settings. Keys that do not change results (threads, jobs, ...) may differ.

        Raises:
            RunError: the folder holds a started run with a different configuration (the
                message lists the differing keys).
        """
        if not self.config_path.exists() or not self.has_progress():
            self.path.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.config_path, yaml.safe_dump(config.to_dict(), sort_keys=False))
            return
        try:
            old = Config.from_dict(yaml.safe_load(self.config_path.read_text()) or {})
        except ConfigError as exc:
            raise RunError(
                f"{self.config_path} is not a valid mmbench configuration ({exc}); "
                "choose another --out or delete that folder to start afresh"
            ) from exc
        a, b = old.comparable(), config.comparable()
        if old.preset != config.preset:
            raise RunError(
                f"{self.path} holds a run of the {old.preset} preset and this command uses the "
                f"{config.preset} preset: give each preset its own results folder, e.g. "
                f"--out results/{config.preset} (and mmbench report --runs results/{config.preset})"
            )
        if a != b:
            diff = [k for k in sorted(set(_leaves(a)) | set(_leaves(b))) if _at(a, k) != _at(b, k)]
            raise RunError(
                f"{self.path} holds a run with a different configuration (differs in: "
                f"{', '.join(diff)}); choose another --out or delete that folder to start afresh"
            )

    def check_split(self, split: Split) -> None:
        """Write ``split.json``, or check that the one there is ``split``.

        Raises:
            RunError: the folder's split differs.
        """
        if self.split_path.exists() and self.has_progress():
            if Split.from_json(self.split_path).as_dict() != split.as_dict():
                raise RunError(
                    f"{self.split_path} differs from this invocation's split; "
                    "use the same data and split settings, or another --out"
                )
            return
        split.to_json(self.split_path)

    # ---------------------------------------------------------------------------- contents
    def results(self) -> ResultsStore:
        return ResultsStore(self.metrics_path)

    def write_json(self, name: str, obj: Any) -> None:
        atomic_write_json(self.path / name, obj)


def _leaves(config: Any, prefix: str = "") -> list[str]:
    if isinstance(config, dict) and config:
        out: list[str] = []
        for k, v in config.items():
            out += _leaves(v, f"{prefix}{k}.")
        return out
    return [prefix.rstrip(".")]


def _at(config: Any, dotted: str) -> Any:
    node = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


__all__ = ["STATUSES", "RunDir"]
