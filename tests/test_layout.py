"""The package's layers import one way only, and every module stays small enough to read.

Every import in nbtools, at module level or inside a function, is read from the source with `ast`.
A unit (a subpackage, or a top-level module) may import only units on a lower layer, or itself.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "nbtools"

# Lowest first. Units on one layer do not import each other.
LAYERS = [
    {"jsonsafe", "env"},
    {"atomic", "monitors"},
    {"config", "cache"},
    {"models", "losses", "data", "wording", "settings"},
    {"tasks"},
    {"runs", "step"},
    {"diagnose"},
    {"viz"},
    {"train"},
    {"recipes"},
    {"cli_exit", "cli_task"},
    {"cli_parsers"},
    {"cli"},
    {"__init__", "__main__"},
]
LAYER = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}
MAX_LINES = 300


def _unit(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imported_units(tree: ast.AST) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from nbtools import data` names the unit in the imported names
            names = (
                [f"{node.module}.{a.name}" for a in node.names] if node.module == "nbtools" else [node.module]
            )
        else:
            continue
        found |= {n.split(".")[1] for n in names if n.startswith("nbtools.")}
    return found


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_unit_has_a_layer():
    units = {_unit(p) for p in _modules()}
    assert units <= set(LAYER), f"put {sorted(units - set(LAYER))} on a layer in LAYERS (and README's Layout)"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_go_down_only(path):
    unit = _unit(path)
    tree = ast.parse(path.read_text(), filename=str(path))
    wrong = sorted(u for u in _imported_units(tree) if u != unit and LAYER[u] >= LAYER[unit])
    assert not wrong, (
        f"{path.relative_to(PACKAGE)} ({unit}, layer {LAYER[unit]}) imports {wrong} (not below it)"
    )


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_stay_within_300_lines(path):
    n = len(path.read_text().splitlines())
    assert n <= MAX_LINES, f"{path.relative_to(PACKAGE)} has {n} lines; split it by concept"


def test_the_checker_sees_imports_inside_functions():
    tree = ast.parse("def f():\n    from nbtools.train.fit import fit\n    import nbtools.viz\n")
    assert _imported_units(tree) == {"train", "viz"}
    assert _imported_units(ast.parse("from nbtools import recipes, data")) == {"recipes", "data"}
