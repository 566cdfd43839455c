"""Golden fixtures: outputs of a method's official code, and the rules that rebuild its inputs.

A fixture folder (format: ``docs/official.md``) holds ``fixture.json`` and ``expected.npz``. The
official code was run once on weights and inputs built from seeded rules; only the rules and the
outputs are stored. :class:`GoldenFixture` rebuilds the weights and inputs exactly and compares a
re-implementation's outputs and losses with the stored ones at the fixture's tolerance.

Rules, for a fixture of seed ``S``:

- weight ``i`` (0-based, official ``state_dict()`` order) of the state-dict list at position
  ``p`` of ``state_dicts`` (``p = 0`` for a single ``state_dict`` list) is drawn from
  ``numpy.random.default_rng([S, 1000 * p + i])``: ``normal`` = ``loc + scale * N(0, 1)``,
  ``abs`` = ``loc + scale * |N(0, 1)|``, ``const`` = ``loc``; computed in float64, cast to its
  dtype;
- an input with ``stream`` ``K`` is ``default_rng([S, 10**6 + K]).standard_normal(shape)`` as
  float32, with its ``zero_channels`` (axis 1) set to 0;
- a sampled output stores the values at ``default_rng([S, 7]).choice(numel, 4096,
  replace=False)`` (sorted) of the flattened tensor, plus its mean and standard deviation.

A tensor passes when ``max |ours - expected| <= atol + rtol * max |expected|``; a loss when
``|ours - expected| <= atol + rtol * |expected|``.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FIXTURE_FILE = "fixture.json"
EXPECTED_FILE = "expected.npz"
INPUT_STREAM_OFFSET = 10**6
LIST_STRIDE = 1000
SAMPLE_STREAM = 7


@dataclass(frozen=True)
class Comparison:
    """One compared output or loss."""

    name: str
    max_abs_err: float
    tol: float
    problem: str = ""  # why it could not be compared (missing, wrong shape, not finite)

    @property
    def ok(self) -> bool:
        return not self.problem and bool(self.max_abs_err <= self.tol)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"max_abs_err": self.max_abs_err, "tol": self.tol, "ok": self.ok}
        if self.problem:
            out["problem"] = self.problem
        return out


def _as_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        value = value.numpy()
    return np.asarray(value)


class GoldenFixture:
    """One fixture folder: its description, its rebuilt weights and inputs, its expected values.

    Args:
        folder: a folder holding ``fixture.json`` and ``expected.npz``.

    Raises:
        FileNotFoundError: a file is missing (the message names it).
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        spec_path = self.folder / FIXTURE_FILE
        npz_path = self.folder / EXPECTED_FILE
        for path in (spec_path, npz_path):
            if not path.is_file():
                raise FileNotFoundError(f"golden fixture {self.folder}: {path.name} is missing")
        self.spec: dict[str, Any] = json.loads(spec_path.read_text())
        with np.load(npz_path) as data:
            self.expected: dict[str, np.ndarray] = {k: data[k] for k in data.files}

    # ----------------------------------------------------------------------------- metadata
    @property
    def method(self) -> str:
        return str(self.spec["method"])

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def seed(self) -> int:
        return int(self.spec["seed"])

    @property
    def atol(self) -> float:
        return float(self.spec.get("tolerance", {}).get("atol", 1e-4))

    @property
    def rtol(self) -> float:
        return float(self.spec.get("tolerance", {}).get("rtol", 1e-4))

    @property
    def output_names(self) -> list[str]:
        return list(self.spec.get("outputs", {}))

    @property
    def loss_names(self) -> list[str]:
        return list(self.spec.get("losses", {}))

    # ----------------------------------------------------------------------------- weights
    def state_dict_names(self) -> list[str]:
        """Names of the state-dict lists, in position order (``["model"]`` for a single one)."""
        if "state_dicts" in self.spec:
            return list(self.spec["state_dicts"])
        return ["model"]

    def _entries(self, name: str | None) -> tuple[int, list[dict[str, Any]]]:
        if "state_dicts" in self.spec:
            names = list(self.spec["state_dicts"])
            key = name if name is not None else names[0]
            if key not in names:
                raise KeyError(f"{self.folder}: no state dict {key!r}; present: {names}")
            return names.index(key), self.spec["state_dicts"][key]
        if name not in (None, "model"):
            raise KeyError(f"{self.folder}: holds one state dict ('model'), not {name!r}")
        return 0, self.spec["state_dict"]

    def state_dict(self, name: str | None = None) -> OrderedDict[str, Any]:
        """The rebuilt official state dict (torch tensors, official key order and dtypes)."""
        import torch

        position, entries = self._entries(name)
        out: OrderedDict[str, Any] = OrderedDict()
        for i, entry in enumerate(entries):
            values = rule_values(self.seed, LIST_STRIDE * position + i, entry)
            out[entry["key"]] = torch.from_numpy(values)
        return out

    # ----------------------------------------------------------------------------- inputs
    def input_spec(self, name: str) -> Any:
        """The raw description of an input (a dict for tensors, or a plain value)."""
        return self.spec["inputs"][name]

    def input(self, name: str) -> Any:
        """A rule-built input tensor (float32), or a stored integer array (as a tensor)."""
        import torch

        entry = self.spec["inputs"][name]
        if isinstance(entry, Mapping) and entry.get("rule") == "normal":
            rng = np.random.default_rng([self.seed, INPUT_STREAM_OFFSET + int(entry["stream"])])
            x = rng.standard_normal(tuple(entry["shape"])).astype(np.float32)
            for c in entry.get("zero_channels") or []:
                x[:, int(c)] = 0
            return torch.from_numpy(x)
        if name in self.expected:
            return torch.from_numpy(np.array(self.expected[name]))
        if isinstance(entry, Mapping) and "value" in entry:
            return entry["value"]
        return entry

    # ----------------------------------------------------------------------------- comparison
    def sample_indices(self, numel: int) -> np.ndarray:
        """The flat indices a sampled output is stored at."""
        rng = np.random.default_rng([self.seed, SAMPLE_STREAM])
        return np.sort(rng.choice(numel, 4096, replace=False))

    def compare_output(self, name: str, actual: Any) -> Comparison:
        """Compare a re-implementation's output ``name`` with the stored one."""
        if actual is None:
            return Comparison(name, float("inf"), 0.0, "not produced")
        ours = _as_numpy(actual).astype(np.float64)
        shape = tuple(self.spec["outputs"].get(name, {}).get("shape", ()))
        if name in self.expected:
            ref = self.expected[name].astype(np.float64)
            if shape and ours.shape != tuple(shape):
                return self._bad_shape(name, ours.shape, shape)
            if ours.shape != ref.shape:
                return self._bad_shape(name, ours.shape, ref.shape)
            diffs = [np.abs(ours - ref)]
        elif f"{name}.idx" in self.expected:
            idx = self.expected[f"{name}.idx"]
            ref = self.expected[f"{name}.val"].astype(np.float64)
            if shape and ours.shape != tuple(shape):
                return self._bad_shape(name, ours.shape, shape)
            flat = ours.reshape(-1)
            diffs = [np.abs(flat[idx] - ref)]
            if f"{name}.mean" in self.expected:
                mean = float(self.expected[f"{name}.mean"])
                diffs.append(np.abs(np.array([flat.mean() - mean])))
        else:
            return Comparison(name, float("inf"), 0.0, "no expected value stored")
        tol = self.atol + self.rtol * float(np.max(np.abs(ref))) if ref.size else self.atol
        err = max(float(np.max(d)) if d.size else 0.0 for d in diffs)
        if not np.isfinite(ours).all():
            return Comparison(name, float("inf"), tol, "not finite")
        return Comparison(name, err, tol)

    def _bad_shape(self, name: str, got: tuple, want: Any) -> Comparison:
        return Comparison(name, float("inf"), 0.0, f"shape {tuple(got)}, expected {tuple(want)}")

    def compare_loss(self, name: str, actual: Any) -> Comparison:
        """Compare a re-implementation's loss ``name`` (a scalar) with the stored value."""
        if actual is None:
            return Comparison(name, float("inf"), 0.0, "not produced")
        expected = float(self.spec["losses"][name]["value"])
        value = float(_as_numpy(actual).reshape(()))
        tol = self.atol + self.rtol * abs(expected)
        if not np.isfinite(value):
            return Comparison(name, float("inf"), tol, "not finite")
        return Comparison(name, abs(value - expected), tol)


def rule_values(seed: int, stream: int, entry: Mapping[str, Any]) -> np.ndarray:
    """The values of one state-dict entry by its rule (see the module docstring)."""
    shape = tuple(int(s) for s in entry["shape"])
    loc = float(entry.get("loc", 0.0))
    scale = float(entry.get("scale", 1.0))
    rule = entry["rule"]
    rng = np.random.default_rng([seed, stream])
    if rule == "normal":
        values = loc + scale * rng.standard_normal(shape)
    elif rule == "abs":
        values = loc + scale * np.abs(rng.standard_normal(shape))
    elif rule == "const":
        values = np.full(shape, loc, dtype=np.float64)
    else:
        raise ValueError(f"unknown fixture rule {rule!r} for {entry.get('key')!r}")
    return np.asarray(values, dtype=np.float64).astype(np.dtype(entry["dtype"]))


def find_fixtures(root: str | Path) -> list[Path]:
    """Fixture folders under ``root`` (``root`` itself or its sub-folders, sorted)."""
    root = Path(root)
    if (root / FIXTURE_FILE).is_file():
        return [root]
    return sorted(p.parent for p in root.rglob(FIXTURE_FILE))


__all__ = [
    "Comparison",
    "GoldenFixture",
    "find_fixtures",
    "rule_values",
]
