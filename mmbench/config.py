"""The typed configuration: presets, ``--set`` overrides and their validation.

A configuration is a :class:`Config` of typed sections (``dataset``, ``split``, ``model``,
``train``, ``eval``, ...). It is built from a preset (YAML shipped in ``mmbench/presets/`` or a
file of the user's) plus ``key=value`` overrides, and validated **in full** when built: an
unknown key, a value of the wrong type or out of range is a :class:`~mmbench.errors.ConfigError`
that names the key and what is allowed, before any data is touched.

Each field says whether it changes results. Those that do not (threads, progress, jobs, where
work runs) are left out of :meth:`Config.comparable`, which decides whether an existing run
folder holds the same run.

Method sections (``methods.NAME.KEY``) are free-form here; the engine checks them against each
method's declared options (:attr:`mmbench.methods.Strategy.options`).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from mmbench.errors import ConfigError
from mmbench.metrics import DEFAULT_MAX_DISTANCE, EMPTY_POLICIES, HD95_MODES, VALID_METRICS
from mmbench.subsets import Subset, as_subset

PRESETS: tuple[str, ...] = ("smoke", "quick", "paper", "brats2018-rfnet")
METHOD_TRAIN_KEY = "train"
"""Key of a ``methods.<name>`` section whose mapping overrides ``train`` keys for that method."""

# ----------------------------------------------------------------------------------- checks
Check = Callable[[str, Any], Any]
"""``(dotted key, raw value) → converted value``; raises :class:`ConfigError`."""


def _fail(key: str, allowed: str, value: Any) -> ConfigError:
    return ConfigError(f"{key} must be {allowed}; got {value!r}")


def integer(minimum: int | None = None, maximum: int | None = None) -> Check:
    def check(key: str, value: Any) -> int:
        ok = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        if isinstance(value, bool) or not ok:
            raise _fail(key, _range("an integer", minimum, maximum), value)
        value = int(value)
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise _fail(key, _range("an integer", minimum, maximum), value)
        return value

    return check


def number(
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_min: bool = False,
    exclusive_max: bool = False,
) -> Check:
    def check(key: str, value: Any) -> float:
        allowed = _range("a number", minimum, maximum, exclusive_min, exclusive_max)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail(key, allowed, value)
        value = float(value)
        if value != value:  # NaN
            raise _fail(key, allowed, value)
        low_bad = minimum is not None and (value < minimum or (exclusive_min and value == minimum))
        high_bad = maximum is not None and (value > maximum or (exclusive_max and value == maximum))
        if low_bad or high_bad:
            raise _fail(key, allowed, value)
        return value

    return check


def _range(
    kind: str,
    minimum: float | None,
    maximum: float | None,
    exclusive_min: bool = False,
    exclusive_max: bool = False,
) -> str:
    parts = []
    if minimum is not None:
        parts.append(f"{'>' if exclusive_min else '>='} {minimum:g}")
    if maximum is not None:
        parts.append(f"{'<' if exclusive_max else '<='} {maximum:g}")
    return kind + (" " + " and ".join(parts) if parts else "")


def boolean() -> Check:
    def check(key: str, value: Any) -> bool:
        if not isinstance(value, bool):
            raise _fail(key, "true or false", value)
        return value

    return check


def choice(*values: Any) -> Check:
    def check(key: str, value: Any) -> Any:
        if isinstance(value, (list, dict)) or value not in values:
            raise _fail(key, "one of " + ", ".join(map(str, values)), value)
        return value

    return check


def text() -> Check:
    def check(key: str, value: Any) -> str:
        if not isinstance(value, str) or not value:
            raise _fail(key, "a non-empty string", value)
        return value

    return check


def optional(inner: Check) -> Check:
    def check(key: str, value: Any) -> Any:
        return None if value is None else inner(key, value)

    return check


def list_of(inner: Check, length: int | None = None, non_empty: bool = False) -> Check:
    def check(key: str, value: Any) -> list[Any]:
        if not isinstance(value, (list, tuple)):
            what = f"a list of {length}" if length else "a list"
            raise _fail(key, what, value)
        if length is not None and len(value) != length:
            raise _fail(key, f"a list of {length} values", value)
        if non_empty and not value:
            raise _fail(key, "a non-empty list", value)
        return [inner(f"{key}[{i}]", v) for i, v in enumerate(value)]

    return check


def subset_name() -> Check:
    def check(key: str, value: Any) -> str:
        try:
            return as_subset(str(value)).name if not isinstance(value, Subset) else value.name
        except ValueError as exc:
            raise _fail(
                key, "a modality subset such as T1ce+FLAIR or a 4-bit code such as 0101", value
            ) from exc

    return check


def either(first: Check, second: Check, allowed: str) -> Check:
    def check(key: str, value: Any) -> Any:
        for inner in (first, second):
            try:
                return inner(key, value)
            except ConfigError:
                continue
        raise _fail(key, allowed, value)

    return check


def jobs_value() -> Check:
    return either(choice("auto"), integer(minimum=1), "'auto' or a positive integer")


def subset_weights() -> Check:
    def check(key: str, value: Any) -> Any:
        if value == "uniform":
            return value
        if not isinstance(value, Mapping) or not value:
            raise _fail(key, "'uniform' or a mapping {subset: weight}", value)
        out = {}
        for k, v in value.items():
            out[subset_name()(f"{key}.{k}", k)] = number(minimum=0)(f"{key}.{k}", v)
        if sum(out.values()) <= 0:
            raise _fail(key, "weights with a positive sum", value)
        return out

    return check


def setting(default: Any, check: Check, help: str, results: bool = True) -> Any:
    """A dataclass field with its check, its help text and whether it changes results."""
    meta = {"check": check, "help": help, "results": results}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


def section(cls: type, help: str, results: bool = True) -> Any:
    return field(default_factory=cls, metadata={"section": cls, "help": help, "results": results})


# ----------------------------------------------------------------------------------- sections
@dataclass
class SyntheticSection:
    cases: int = setting(32, integer(minimum=3), "phantom cases generated")
    shape: list[int] = setting(
        [48, 48, 48], list_of(integer(minimum=8), 3), "phantom grid (voxels)"
    )
    mode: str = setting("glioma", choice("glioma", "mets", "post-treatment"), "tumour kind")
    seed: int = setting(0, integer(minimum=0), "generator seed")


@dataclass
class DatasetSection:
    synthetic: SyntheticSection = section(SyntheticSection, "the embedded phantom dataset")
    normalization: str = setting(
        "zscore", choice("zscore", "minmax"), "intensity normalisation over brain voxels"
    )
    cache: str = setting(
        "memory",
        choice("memory", "disk", "mmap", "none"),
        "where preprocessed cases are kept (mmap: training cases as float16 memory-mapped arrays)",
        results=False,
    )
    strict: bool = setting(False, boolean(), "stop on any invalid case instead of leaving it out")


@dataclass
class SplitSection:
    fractions: list[float] = setting(
        [0.7, 0.1, 0.2], list_of(number(minimum=0, maximum=1), 3), "train, val, test shares"
    )
    seed: int = setting(0, integer(minimum=0), "split seed")
    k_folds: int | None = setting(None, optional(integer(minimum=2)), "k-fold cross-validation")
    fold: int = setting(0, integer(minimum=0), "the fold (with k_folds)")
    file: str | None = setting(None, optional(text()), "a split file or a built-in split name")


@dataclass
class ModelSection:
    width: int = setting(8, integer(minimum=1), "base channels C0")
    depth: int = setting(3, integer(minimum=1, maximum=6), "down-samplings of the backbone")
    patch_size: list[int] = setting(
        [32, 32, 32], list_of(integer(minimum=4), 3), "training crop (D, H, W), voxels"
    )


DEFAULT_STEPS = 400
"""``train.steps`` when neither ``train.steps`` nor ``train.epochs`` is given."""


@dataclass
class TrainSection:
    steps: int | None = setting(
        None,
        optional(integer(minimum=1)),
        f"gradient steps per run (or train.epochs; neither: {DEFAULT_STEPS})",
    )
    epochs: int | None = setting(
        None,
        optional(integer(minimum=1)),
        "passes over the training cases: steps = ceil(epochs x training cases / batch_size)",
    )
    batch_size: int = setting(2, integer(minimum=1), "crops per step")
    lr: float = setting(0.006, number(minimum=0, exclusive_min=True), "initial learning rate")
    weight_decay: float = setting(1e-5, number(minimum=0), "Adam weight decay")
    poly_power: float = setting(0.9, number(minimum=0), "poly learning-rate decay power")
    grad_clip: float | None = setting(
        12.0, optional(number(minimum=0, exclusive_min=True)), "gradient norm clip"
    )
    val_every: int = setting(
        200,
        integer(minimum=0),
        "steps between validations, epochs with train.epochs (0: at the end)",
    )
    val_subsets: Any = setting(
        "all",
        either(
            choice("all", "full"),
            list_of(subset_name(), non_empty=True),
            "'all', 'full' or a non-empty list of subsets",
        ),
        "subsets scored on the val split for checkpoint selection",
    )
    subset_weights: Any = setting("uniform", subset_weights(), "training subset distribution")
    amp: str = setting("auto", choice("auto", "bf16", "fp16", "off"), "mixed precision on CUDA")
    deterministic: bool = setting(True, boolean(), "deterministic algorithms")
    intensity_jitter: bool = setting(False, boolean(), "random intensity scale/shift augmentation")
    log_every: int = setting(10, integer(minimum=1), "steps between training-log rows", False)
    num_workers: int = setting(0, integer(minimum=0), "data-loading worker processes", False)
    threads: int | None = setting(
        None, optional(integer(minimum=1)), "torch CPU threads per run (null: default)", False
    )
    device: str = setting("auto", text(), "auto, cpu, cuda or cuda:N", False)

    def __post_init__(self) -> None:
        # The run length has one unit: steps, or epochs resolved against the split size
        # (mmbench.benchmark.schedule).
        if self.steps is not None and self.epochs is not None:
            raise ConfigError(
                f"train.steps ({self.steps}) and train.epochs ({self.epochs}) are both set; give "
                "one of them and set the other to null, e.g. --set train.steps=null"
            )
        if self.steps is None and self.epochs is None:
            self.steps = DEFAULT_STEPS


@dataclass
class SavePredictionsSection:
    cases: int = setting(0, integer(minimum=0), "test cases whose predictions are saved", False)
    subsets: list[str] = setting([], list_of(subset_name()), "subsets saved", False)


@dataclass
class EvalSection:
    metrics: list[str] = setting(
        ["dice", "hd95", "iou", "sensitivity", "specificity"],
        list_of(choice(*VALID_METRICS), non_empty=True),
        "metrics per region",
    )
    hd95_mode: str = setting("pooled", choice(*HD95_MODES), "HD95 convention")
    empty_policy: str = setting("penalty", choice(*EMPTY_POLICIES), "empty-mask convention")
    max_distance: float = setting(
        DEFAULT_MAX_DISTANCE, number(minimum=0, exclusive_min=True), "HD95 of a one-empty pair, mm"
    )
    threshold: float = setting(
        0.5,
        number(minimum=0, maximum=1, exclusive_min=True, exclusive_max=True),
        "probability threshold",
    )
    etpp: bool = setting(False, boolean(), "also report ETpp")
    extra_regions: list[str] = setting(
        [], lambda k, v: _no_extra_regions(k, v), "extra regions (none supported yet)"
    )
    window: list[int] | None = setting(
        None, optional(list_of(integer(minimum=4), 3)), "sliding window (null: model.patch_size)"
    )
    sw_batch_size: int = setting(1, integer(minimum=1), "windows per forward pass", False)
    sw_overlap: float = setting(
        0.25, number(minimum=0, maximum=1, exclusive_max=True), "sliding-window overlap"
    )
    n_jobs: int = setting(1, integer(minimum=1), "workers scoring metrics", False)
    save_predictions: SavePredictionsSection = section(
        SavePredictionsSection, "NIfTI predictions kept", results=False
    )


def sbatch_options() -> Check:
    def check(key: str, value: Any) -> dict[str, Any]:
        if value is None:
            return {}
        ok = isinstance(value, Mapping) and all(
            isinstance(k, str) and isinstance(v, (str, int, float, bool)) for k, v in value.items()
        )
        if not ok:
            raise _fail(key, "a mapping {sbatch option: value}, e.g. {constraint: a100}", value)
        return dict(value)

    return check


@dataclass
class SlurmSection:
    cluster: str = setting(
        "slurm",
        choice("slurm", "local", "debug"),
        "submitit cluster: slurm, or local/debug to run the jobs on this machine",
        False,
    )
    partition: str | None = setting(None, optional(text()), "Slurm partition", False)
    gpus_per_job: int = setting(1, integer(minimum=0), "GPUs per job (one run)", False)
    cpus_per_task: int = setting(8, integer(minimum=1), "CPU cores per job", False)
    mem_gb: float = setting(64, number(minimum=0, exclusive_min=True), "memory per job, GB", False)
    timeout_min: int = setting(
        1440, integer(minimum=1), "time limit per job, minutes (then requeued)", False
    )
    account: str | None = setting(None, optional(text()), "Slurm account", False)
    qos: str | None = setting(None, optional(text()), "Slurm QOS", False)
    extra: dict[str, Any] = setting(
        {}, sbatch_options(), "more #SBATCH options, e.g. {constraint: a100}", False
    )
    setup: list[str] = setting(
        [], list_of(text()), "shell lines run before each job (module load ...)", False
    )
    max_requeue: int = setting(
        3, integer(minimum=0), "requeues of a preempted or timed-out job", False
    )
    array_parallelism: int = setting(
        256, integer(minimum=1), "jobs of the array running at once", False
    )


@dataclass
class ExecutorSection:
    name: str = setting("local", choice("local", "slurm"), "where runs execute (--executor)", False)
    slurm: SlurmSection = section(SlurmSection, "Slurm jobs through submitit", results=False)


@dataclass
class Config:
    """A validated configuration; see the module docstring. Build it with :func:`load_config`
    or :meth:`from_dict`; :meth:`to_dict` gives the YAML form written to run folders."""

    preset: str = setting("custom", text(), "preset name")
    seeds: list[int] = setting([0], list_of(integer(minimum=0), non_empty=True), "seeds", False)
    jobs: Any = setting(1, jobs_value(), "runs trained at once", False)
    dataset: DatasetSection = section(DatasetSection, "data")
    split: SplitSection = section(SplitSection, "train/val/test split")
    model: ModelSection = section(ModelSection, "network size and crop")
    train: TrainSection = section(TrainSection, "the training loop")
    eval: EvalSection = section(EvalSection, "evaluation")
    executor: ExecutorSection = section(
        ExecutorSection, "where runs execute (local or Slurm)", results=False
    )
    methods: dict[str, dict[str, Any]] = setting({}, lambda k, v: _methods(k, v), "per method")

    # ------------------------------------------------------------------------------ build
    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Config:
        """Validate a nested mapping (a preset with overrides applied) into a Config.

        Raises:
            ConfigError: the first unknown key or bad value, named by its dotted path.
        """
        return _build(cls, data, "")

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (lists, no tuples): the YAML form of the configuration."""
        return _plain(dataclasses.asdict(self))

    def comparable(self) -> dict[str, Any]:
        """:meth:`to_dict` without the keys that do not change results."""
        return _strip_non_results(type(self), self.to_dict())

    def get(self, dotted: str) -> Any:
        """The value at a dotted key (``"train.steps"``)."""
        node: Any = self
        for part in dotted.split("."):
            node = node[part] if isinstance(node, Mapping) else getattr(node, part)
        return node

    @property
    def window(self) -> tuple[int, int, int]:
        """The sliding-window size: ``eval.window``, by default ``model.patch_size``."""
        return tuple(int(v) for v in (self.eval.window or self.model.patch_size))  # type: ignore[return-value]

    def for_method(self, name: str) -> Config:
        """The configuration one run of method ``name`` trains with: ``train`` keys replaced by
        ``methods.<name>.train`` and only this method's section under ``methods`` (so another
        method's options do not make a finished run look differently configured)."""
        section_ = copy.deepcopy(self.methods.get(name) or {})
        override = section_.pop(METHOD_TRAIN_KEY, None)
        data = self.to_dict()
        data["methods"] = {name: section_} if section_ else {}
        if override:
            data["methods"][name] = {**section_, METHOD_TRAIN_KEY: override}
            # A method's run length in one unit replaces the invocation's in the other.
            for unit, other in (("steps", "epochs"), ("epochs", "steps")):
                if override.get(unit) is not None and other not in override:
                    data["train"][other] = None
            data["train"].update(override)
        return Config.from_dict(data)

    def method_options(self, name: str) -> dict[str, Any]:
        """The options of ``methods.<name>`` without the engine's ``train`` mapping."""
        section_ = dict(self.methods.get(name) or {})
        section_.pop(METHOD_TRAIN_KEY, None)
        return section_


def _no_extra_regions(key: str, value: Any) -> list[str]:
    if value:
        raise ConfigError(
            f"{key} is not supported yet: the strategies predict WT, TC and ET only; got {value!r}"
        )
    return []


def _methods(key: str, value: Any) -> dict[str, dict[str, Any]]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _fail(key, "a mapping {method: {option: value}}", value)
    out: dict[str, dict[str, Any]] = {}
    for name, options in value.items():
        if options is None:
            options = {}
        if not isinstance(options, Mapping):
            raise _fail(f"{key}.{name}", "a mapping {option: value}", options)
        override = options.get(METHOD_TRAIN_KEY)
        if override is not None:
            if not isinstance(override, Mapping):
                raise _fail(f"{key}.{name}.{METHOD_TRAIN_KEY}", "a mapping of train keys", override)
            _build(TrainSection, override, f"{key}.{name}.{METHOD_TRAIN_KEY}.", partial=True)
        out[str(name)] = copy.deepcopy(dict(options))
    return out


def _build(cls: type, data: Any, prefix: str, partial: bool = False) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise _fail(prefix.rstrip(".") or "the configuration", "a mapping", data)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            where = f"{prefix}{key}" if prefix else str(key)
            valid = ", ".join(f"{prefix}{k}" for k in fields)
            raise ConfigError(f"unknown configuration key {where!r}; valid keys here: {valid}")
    if partial:
        for key, value in data.items():
            f = fields[key]
            if "section" in f.metadata:
                _build(f.metadata["section"], value, f"{prefix}{key}.", partial=True)
            else:
                f.metadata["check"](f"{prefix}{key}", value)
        return None
    kwargs = {}
    for name, f in fields.items():
        path = f"{prefix}{name}"
        if "section" in f.metadata:
            kwargs[name] = _build(f.metadata["section"], data.get(name), path + ".")
        elif name in data:
            kwargs[name] = f.metadata["check"](path, copy.deepcopy(data[name]))
    return cls(**kwargs)


def build_section(cls: type, data: Mapping[str, Any], prefix: str = "") -> Any:
    """One validated section (e.g. :class:`TrainSection`) from a mapping; missing keys take
    their defaults. ``prefix`` is the section's dotted path, for error messages."""
    return _build(cls, data, prefix)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _strip_non_results(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(cls):
        if not f.metadata.get("results", True):
            continue
        value = data.get(f.name)
        if "section" in f.metadata:
            value = _strip_non_results(f.metadata["section"], value or {})
        out[f.name] = value
    return out


def non_result_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """Dotted keys that do not change results (declared with ``results=False``)."""
    keys = []
    for f in dataclasses.fields(cls):
        path = f"{prefix}{f.name}"
        if not f.metadata.get("results", True):
            keys.append(path)
        elif "section" in f.metadata:
            keys += non_result_keys(f.metadata["section"], path + ".")
    return keys


def config_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """Every dotted leaf key of the configuration (``methods`` as ``methods.NAME.OPTION``)."""
    keys = []
    for f in dataclasses.fields(cls):
        path = f"{prefix}{f.name}"
        if "section" in f.metadata:
            keys += config_keys(f.metadata["section"], path + ".")
        elif f.name == "methods" and cls is Config:
            keys.append("methods.NAME.OPTION")
        else:
            keys.append(path)
    return keys


def describe_keys(cls: type = Config, prefix: str = "") -> list[tuple[str, str, bool]]:
    """``(dotted key, help, changes results)`` for every leaf key."""
    out = []
    for f in dataclasses.fields(cls):
        path = f"{prefix}{f.name}"
        if "section" in f.metadata:
            out += describe_keys(f.metadata["section"], path + ".")
        else:
            out.append((path, f.metadata.get("help", ""), f.metadata.get("results", True)))
    return out


# ----------------------------------------------------------------------------------- presets
def preset_text(preset: str | Path) -> str:
    """The YAML text of a built-in preset (by name) or of a preset file."""
    if str(preset) in PRESETS:
        return resources.files("mmbench").joinpath(f"presets/{preset}.yaml").read_text()
    path = Path(preset)
    if not path.is_file():
        raise ConfigError(
            f"unknown preset {str(preset)!r}; valid: {', '.join(PRESETS)} or a YAML file path"
        )
    return path.read_text()


def load_preset(preset: str | Path = "quick") -> dict[str, Any]:
    """A preset as a plain nested dict (not yet validated)."""
    data = yaml.safe_load(preset_text(preset))
    if not isinstance(data, dict):
        raise ConfigError(f"preset {preset!s} is not a YAML mapping")
    return data


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str] | None) -> dict[str, Any]:
    """A copy of the nested dict ``data`` with ``key=value`` overrides applied.

    Values are parsed as YAML (``3``, ``1e-4``, ``[48,48,48]``, ``true``, ``null``). Keys are
    checked when the result is validated (:meth:`Config.from_dict`), except that they must be
    dotted paths through mappings.

    Raises:
        ConfigError: a malformed override.
    """
    out = copy.deepcopy(dict(data))
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set takes key=value, got {item!r}")
        key, raw = item.split("=", 1)
        key = key.strip()
        parts = key.split(".")
        if not all(parts):
            raise ConfigError(f"--set key {key!r} is not a dotted path such as train.steps")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"cannot parse the value of --set {key}: {raw!r}") from exc
        node = out
        for depth, p in enumerate(parts[:-1]):
            if node.get(p) is None:
                node[p] = {}
            if not isinstance(node[p], dict):
                where = ".".join(parts[: depth + 1])
                raise ConfigError(f"--set {key}: {where} is a value, not a section")
            node = node[p]
        node[parts[-1]] = value
    return out


# ----------------------------------------------------------------------------------- overlays
OVERLAY_CONFIG_KEY = "config"
"""Key of an overlay file whose mapping is merged into the preset (see :func:`load_overlay`)."""


def load_overlay(path: str | Path) -> dict[str, Any]:
    """The configuration part of a tuning overlay (``mmbench tune`` writes them).

    An overlay is YAML with the tuning evidence (grid, val scores, choice) and a ``config``
    mapping; only ``config`` is applied, and it may hold only ``methods.<name>.train`` keys: an
    overlay changes what tuning chose for a method, never the shared recipe.

    Raises:
        ConfigError: missing or unreadable file, or a key outside ``methods.<name>.train``.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--overlay {path}: no such file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"--overlay {path}: not valid YAML ({exc})") from exc
    if not isinstance(data, Mapping) or not isinstance(data.get(OVERLAY_CONFIG_KEY), Mapping):
        raise ConfigError(
            f"--overlay {path}: expected a mapping with a {OVERLAY_CONFIG_KEY!r} section "
            "(as written by mmbench tune)"
        )
    config = dict(data[OVERLAY_CONFIG_KEY])
    extra = [k for k in config if k != "methods"]
    methods = config.get("methods") or {}
    if extra or not isinstance(methods, Mapping):
        raise ConfigError(
            f"--overlay {path}: its config may hold only methods.<name>.train keys; "
            f"got {', '.join(map(str, extra)) or 'methods: ' + repr(methods)}"
        )
    for name, section_ in methods.items():
        keys = list(section_) if isinstance(section_, Mapping) else [section_]
        if keys != [METHOD_TRAIN_KEY]:
            raise ConfigError(
                f"--overlay {path}: methods.{name} may hold only a {METHOD_TRAIN_KEY!r} mapping; "
                f"got {section_!r}"
            )
    return {"methods": copy.deepcopy(dict(methods))}


def apply_overlay(data: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the nested dict ``data`` with an overlay's ``methods.<name>.train`` merged in
    (key by key: a method's other options stay)."""
    out = copy.deepcopy(dict(data))
    methods = out.get("methods") or {}
    for name, section_ in (overlay.get("methods") or {}).items():
        current = dict(methods.get(name) or {})
        train = {**(current.get(METHOD_TRAIN_KEY) or {}), **section_[METHOD_TRAIN_KEY]}
        methods[name] = {**current, METHOD_TRAIN_KEY: train}
    out["methods"] = methods
    return out


def load_config(preset: str | Path = "quick", overrides: Sequence[str] | None = None) -> Config:
    """A preset (name or YAML path) with ``--set`` overrides, validated.

    Raises:
        ConfigError: unknown preset, malformed override, unknown key or bad value.
    """
    return Config.from_dict(apply_overrides(load_preset(preset), overrides))


__all__ = [
    "PRESETS",
    "Config",
    "DatasetSection",
    "EvalSection",
    "ExecutorSection",
    "ModelSection",
    "SlurmSection",
    "SplitSection",
    "SyntheticSection",
    "TrainSection",
    "apply_overlay",
    "apply_overrides",
    "build_section",
    "config_keys",
    "describe_keys",
    "load_config",
    "load_overlay",
    "load_preset",
    "non_result_keys",
]
