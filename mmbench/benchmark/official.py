"""``mmbench check-official``: compare mmbench's methods with their authors' code on golden
fixtures (:mod:`mmbench.golden`).

For every fixture folder the method's :class:`~mmbench.methods.official.OfficialPort` rebuilds
the official weights and inputs, runs mmbench's implementation and returns each stored output
and loss; each is compared at the fixture's tolerance. An output or loss the port does not
produce is a failure, as is an exception inside the port.
"""

from __future__ import annotations

import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from mmbench.errors import UnknownNameError
from mmbench.golden import Comparison, GoldenFixture, find_fixtures


def bundled_fixture_root() -> Path:
    """The fixtures shipped with mmbench (``mmbench/data/official``)."""
    return Path(str(resources.files("mmbench").joinpath("data/official")))


@dataclass
class FixtureCheck:
    """The comparison of one fixture."""

    method: str
    fixture: str
    outputs: dict[str, Comparison] = field(default_factory=dict)
    losses: dict[str, Comparison] = field(default_factory=dict)
    error: str = ""

    @property
    def ok(self) -> bool:
        return (
            not self.error
            and all(c.ok for c in self.outputs.values())
            and all(c.ok for c in self.losses.values())
        )

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "method": self.method,
            "fixture": self.fixture,
            "ok": self.ok,
            "outputs": {k: c.as_dict() for k, c in self.outputs.items()},
            "losses": {k: c.as_dict() for k, c in self.losses.items()},
        }
        if self.error:
            out["error"] = self.error
        return out


def check_fixture(fixture: GoldenFixture) -> FixtureCheck:
    """Run the method's port on one fixture and compare every stored output and loss."""
    from mmbench.methods import official_port

    result = FixtureCheck(fixture.method, str(fixture.folder))
    try:
        port = official_port(fixture.method)
        got = port.reproduce(fixture)
    except Exception as exc:  # reported as a failed fixture, with where it happened
        result.error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=6)}"
        return result
    for name in fixture.output_names:
        result.outputs[name] = fixture.compare_output(name, got.outputs.get(name))
    for name in fixture.loss_names:
        result.losses[name] = fixture.compare_loss(name, got.losses.get(name))
    return result


def check_official(
    fixtures: str | Path | None = None, methods: Sequence[str] | None = None
) -> list[FixtureCheck]:
    """Check every fixture folder under ``fixtures`` (default: the bundled ones).

    Args:
        fixtures: a fixture folder, or a folder holding fixture folders at any depth.
        methods: only fixtures of these methods; each must have at least one.

    Raises:
        UnknownNameError: no fixture under the folder, or none for a requested method.
    """
    root = Path(fixtures) if fixtures is not None else bundled_fixture_root()
    folders = find_fixtures(root)
    if not folders:
        raise UnknownNameError(f"no golden fixture (fixture.json) under {root}")
    loaded = [GoldenFixture(f) for f in folders]
    if methods:
        present = {f.method for f in loaded}
        missing = [m for m in methods if m not in present]
        if missing:
            raise UnknownNameError(
                f"no fixture for {', '.join(missing)} under {root}; fixtures there: "
                f"{', '.join(sorted(present))}"
            )
        loaded = [f for f in loaded if f.method in methods]
    return [check_fixture(f) for f in loaded]


def format_checks(results: Sequence[FixtureCheck]) -> str:
    """A readable table: one line per output and loss, a verdict per fixture and overall."""
    lines = []
    for r in results:
        verdict = "PASS" if r.ok else "FAIL"
        lines.append(f"{verdict}  {r.method}  ({r.fixture})")
        if r.error:
            lines.extend("      " + line for line in r.error.rstrip().splitlines())
            continue
        width = max((len(n) for n in [*r.outputs, *r.losses]), default=10)
        for kind, items in (("output", r.outputs), ("loss", r.losses)):
            for name, c in items.items():
                mark = "ok" if c.ok else "FAIL"
                detail = c.problem or f"max |err| {c.max_abs_err:.3g} <= tol {c.tol:.3g}"
                if not c.ok and not c.problem:
                    detail = f"max |err| {c.max_abs_err:.3g} >  tol {c.tol:.3g}"
                lines.append(f"  {mark:<4} {kind:<6} {name:<{width}}  {detail}")
    n_ok = sum(r.ok for r in results)
    lines.append(f"{n_ok}/{len(results)} fixture(s) reproduced")
    return "\n".join(lines)


def checks_json(results: Sequence[FixtureCheck]) -> dict[str, Any]:
    """``{"ok": bool, "fixtures": [...]}`` as ``mmbench check-official --json`` prints it."""
    return {"ok": all(r.ok for r in results), "fixtures": [r.as_dict() for r in results]}


__all__ = [
    "FixtureCheck",
    "bundled_fixture_root",
    "check_fixture",
    "check_official",
    "checks_json",
    "format_checks",
]
