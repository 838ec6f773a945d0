"""The package's shape: subpackages along the flow, each importing only the layers below it,
and no function longer than a screen.

The flow, bottom to top: corpus → audio → features → store → featurize → training → evaluation
→ experiments → report, then the CLI. ``ser.errors`` and ``ser.threads`` sit under all of them.
Imports are read from the source (every ``import``/``from`` statement, lazy ones inside
functions too), so a layer cannot reach upwards by importing late.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "ser"
LAYERS = ("corpus", "audio", "features", "store", "featurize", "training", "evaluation", "experiments",
          "report")
BASE = ("errors", "threads")  # modules every layer may use
MAX_FUNCTION_LINES = 60


def _modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py"))


def _rank(path: Path) -> int:
    """A module's layer: -1 for the base modules, len(LAYERS) for the CLI and ``__main__``."""
    rel = path.relative_to(SRC).parts
    if rel[0] in LAYERS:
        return LAYERS.index(rel[0])
    if rel[0].removesuffix(".py") in BASE + ("__init__",):
        return -1
    return len(LAYERS)


def _imported(path: Path) -> set[str]:
    """The ``ser`` modules ``path`` imports, as dotted names after ``ser.``."""
    package = ".".join(("ser",) + path.relative_to(SRC).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.add(name)
            found.update(f"{name}.{a.name}" for a in node.names)
    return {n.removeprefix("ser.") for n in found if n == "ser" or n.startswith("ser.")}


def _target_rank(name: str) -> int | None:
    top = name.split(".")[0]
    if top in LAYERS:
        return LAYERS.index(top)
    if top in BASE or top in ("ser", "__version__"):
        return -1
    if top in ("cli", "__main__"):
        return len(LAYERS)
    return None  # a name imported from the package root that is not a module


def test_the_package_is_laid_out_along_the_flow() -> None:
    top = {p.name.removesuffix(".py") for p in SRC.iterdir() if not p.name.startswith("_") or p.name == "__main__.py"}
    top.discard("__pycache__")
    assert top <= set(LAYERS) | set(BASE) | {"cli", "__main__"}, sorted(top - set(LAYERS) - set(BASE))
    for layer in LAYERS:
        assert (SRC / layer / "__init__.py").is_file(), layer


def test_each_layer_imports_only_the_layers_below_it() -> None:
    upward = []
    for path in _modules():
        rank = _rank(path)
        for name in sorted(_imported(path)):
            target = _target_rank(name)
            if target is not None and target > rank:
                upward.append(f"{path.relative_to(SRC)} imports ser.{name}")
    assert not upward, "\n".join(upward)


def test_the_layer_check_catches_an_upward_import(tmp_path: Path) -> None:
    """The check above reads lazy imports too (a mutant of the rule, on a made-up module)."""
    fake = SRC / "corpus" / "_layout_probe.py"
    fake.write_text("def f():\n    from ser.training.loop import fit\n    return fit\n", encoding="utf-8")
    try:
        assert "training.loop" in _imported(fake)
        assert _target_rank("training.loop") > _rank(fake)
    finally:
        fake.unlink()


def _long_functions(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.end_lineno - node.lineno + 1  # from ``def`` to the last line, decorators aside
            if n > MAX_FUNCTION_LINES:
                out.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({n} lines)")
    return out


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_no_function_runs_over_a_screen(path: Path) -> None:
    assert not _long_functions(path), _long_functions(path)
