"""The package's layers, bottom to top, and the imports each may make (docs/architecture.md).

Every ``import`` of every module is checked, function-level imports included.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mmbench"

#: Top-level modules of the shared vocabulary: they import no sub-package.
VOCABULARY = {"subsets", "regions", "families", "errors", "atomic", "metrics", "golden", "config"}

#: layer → the layers its modules may import.
ALLOWED: dict[str, set[str]] = {
    "vocabulary": {"vocabulary"},
    "datasets": {"vocabulary", "datasets"},
    "methods": {"vocabulary", "methods"},
    "benchmark": {"vocabulary", "datasets", "methods", "benchmark"},
    "testing": {"vocabulary", "datasets", "methods", "benchmark", "testing"},
    "reporting": {"vocabulary", "datasets", "methods", "benchmark", "reporting"},
    "cli": {"vocabulary", "datasets", "methods", "benchmark", "testing", "reporting", "cli"},
}

#: Deprecated aliases kept for one release; they re-export the vocabulary and nothing else.
ALIASES = {"mmbench.benchmark.subsets", "mmbench.benchmark.metrics"}


def layer_of(module: str) -> str:
    parts = module.split(".")
    if parts[0] != "mmbench":
        raise ValueError(module)
    if len(parts) == 1 or parts[1] in VOCABULARY or parts[1] == "__init__":
        return "vocabulary"
    if parts[1] in ALLOWED:
        return parts[1]
    raise AssertionError(f"{module}: not in any layer; add it to tests/test_layers.py")


def module_name(path: Path, root: Path = PACKAGE) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(path: Path, root: Path = PACKAGE) -> list[tuple[int, str]]:
    """``(line, absolute module)`` of every mmbench import in a file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = module_name(path, root)
    package = here if path.name == "__init__.py" else here.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("mmbench")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("mmbench"):
                continue
            if target == "mmbench":  # `from mmbench import x`: x may be a module of the package
                out += [
                    (node.lineno, f"mmbench.{a.name}" if _is_module(root, a.name) else "mmbench")
                    for a in node.names
                ]
            else:
                out.append((node.lineno, target))
    return out


def _is_module(root: Path, name: str) -> bool:
    return (root / f"{name}.py").exists() or (root / name / "__init__.py").exists()


def violations(root: Path = PACKAGE) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        here = module_name(path, root)
        if here in ALIASES:
            continue
        source = layer_of(here)
        for line, target in imported_modules(path, root):
            if layer_of(target) not in ALLOWED[source]:
                found.append(
                    f"{path.relative_to(root.parent)}:{line}: {here} ({source}) imports "
                    f"{target} ({layer_of(target)})"
                )
    return found


def test_no_import_goes_against_the_layers() -> None:
    assert violations() == []


def test_the_layer_check_catches_a_function_level_import(tmp_path: Path) -> None:
    # A copy of the package with one offending import added inside a function must fail.
    import shutil

    copy = tmp_path / "mmbench"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("data", "__pycache__"))
    target = copy / "methods" / "base.py"
    target.write_text(
        target.read_text()
        + "\n\ndef _offending():\n    from mmbench.benchmark.trainer import Trainer  # noqa\n"
    )
    found = violations(copy)
    assert len(found) == 1 and "mmbench.methods.base (methods) imports" in found[0]


@pytest.mark.parametrize(
    "module, target, ok",
    [
        ("mmbench.subsets", "mmbench.methods", False),
        ("mmbench.datasets.prepare", "mmbench.config", True),
        ("mmbench.datasets.prepare", "mmbench.methods.base", False),
        ("mmbench.methods.rfnet", "mmbench.datasets", False),
        ("mmbench.benchmark.run", "mmbench.reporting", False),
        ("mmbench.reporting.api", "mmbench.benchmark.run", True),
        ("mmbench.cli", "mmbench.reporting.api", True),
    ],
)
def test_layer_rules(module: str, target: str, ok: bool) -> None:
    assert (layer_of(target) in ALLOWED[layer_of(module)]) is ok
