"""``mmbench import-weights``: score an official checkpoint with mmbench's protocol.

The authors' weights are converted by the method's official-code port
(:class:`~mmbench.methods.official.OfficialPort`), loaded with ``weights_only=True`` into the
mmbench strategy, and evaluated on the dataset's test split exactly as a trained run would be
(same evaluator, metrics, subsets). The run folder is ``<out>/<dataset>/<method>-official/
seed<S>-fold<F>/``; its ``run.json`` says it was imported, from which file (with its SHA-256),
and that no training took place.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from mmbench.benchmark import schema
from mmbench.benchmark.checkpoint import load_checkpoint
from mmbench.benchmark.run import RunSummary, evaluate_run, is_complete, summarize
from mmbench.benchmark.rundir import STATUS_COMPLETE, STATUS_EVALUATING, RunDir
from mmbench.benchmark.runner import resolve_config
from mmbench.benchmark.runtime import environment_info, pick_device
from mmbench.datasets.prepare import prepare_data
from mmbench.errors import CheckpointError
from mmbench.methods import create, method_info, official_port

IMPORTED_SUFFIX = "-official"
#: Keys under which training scripts commonly nest the model's state dict.
STATE_KEYS: tuple[str, ...] = ("state_dict", "model", "model_state_dict", "net", "student")


def official_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """The model state dict inside a loaded checkpoint (nested under a common key or not).

    Raises:
        CheckpointError: no mapping of names to tensors is found.
    """
    if isinstance(obj, Mapping) and obj and all(torch.is_tensor(v) for v in obj.values()):
        return dict(obj)
    if isinstance(obj, Mapping):
        for key in STATE_KEYS:
            if key in obj:
                return official_state_dict(obj[key], path)
    keys = list(obj)[:8] if isinstance(obj, Mapping) else type(obj).__name__
    raise CheckpointError(
        f"{path}: no state dict found (top-level keys: {keys}); expected a mapping of parameter "
        f"names to tensors, possibly under one of {', '.join(STATE_KEYS)}"
    )


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def import_weights(
    method: str,
    checkpoint: str | Path,
    dataset: str = "synthetic",
    data_root: str | Path | None = None,
    preset: str | Path = "paper",
    seed: int = 0,
    out: str | Path = "results",
    overrides: Sequence[str] | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> RunSummary:
    """Load an official checkpoint of ``method`` and evaluate it on ``dataset``'s test split.

    ``preset`` sets the model size (``paper``: the official widths) and the evaluation protocol.

    Raises:
        UnknownNameError: the method has no official-code port.
        CheckpointError: the file cannot be loaded safely, or its keys or shapes do not fit.
    """
    checkpoint = Path(checkpoint)
    port = official_port(method)
    method_info(method)
    config = resolve_config(preset, overrides, [method]).for_method(method)
    if not checkpoint.is_file():
        raise CheckpointError(f"no checkpoint file at {checkpoint}")
    state = official_state_dict(load_checkpoint(checkpoint), checkpoint)
    torch.manual_seed(seed)
    strategy = create(method, preset=config)
    port.load_official(strategy, state)  # fails on any key or shape mismatch, before data work
    strategy.to(pick_device(config.train.device))

    label = f"{method}{IMPORTED_SUFFIX}"
    run = RunDir.for_run(out, dataset, label, seed, config.split.fold)
    split_path = run.split_path if run.split_path.exists() else None
    data = prepare_data(
        dataset,
        config,
        data_root,
        split_path=split_path,
        log=log,
        progress=progress,
        cache_dir=Path(out) / ".cache" / dataset,
    )
    run.check_config(config)
    run.check_split(data.split)
    run.write_json(schema.INVALID_FILE, [p.as_dict() for p in data.problems])
    run.write_json(schema.ENVIRONMENT_FILE, environment_info(pick_device(config.train.device)))
    if is_complete(run, data):
        log(f"{label}: already complete in {run.path}")
        return summarize(run, run.read_info())
    info = {
        "dataset": data.dataset,
        "method": label,
        "family": method_info(method).family,
        "paper": method_info(method).paper,
        "params": strategy.parameter_count(),
        "params_training_only": strategy.training_only_parameter_count(),
        "seed": seed,
        "fold": config.split.fold,
        "preset": config.preset,
        "data_root": str(data.root),
        "imported": {
            "method": method,
            "checkpoint": str(checkpoint.resolve()),
            "sha256": sha256(checkpoint),
            "source": port.source,
        },
        "train_seconds": 0.0,
    }
    previous = run.read_info()
    eval_seconds = float(previous.get("eval_seconds", 0.0))
    run.write_info({**info, "status": STATUS_EVALUATING, "eval_seconds": eval_seconds})
    strategy.name = label  # the rows' method column
    eval_seconds += evaluate_run(run, strategy, data, config, seed, progress)
    final = {**info, "status": STATUS_COMPLETE, "eval_seconds": eval_seconds}
    run.write_info(final)
    return summarize(run, final)


__all__ = ["import_weights", "official_state_dict"]
