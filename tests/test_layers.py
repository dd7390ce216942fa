"""The import layers: core < training < reporting < the commands (predict, review, worker, exps) < stages < devtools.

devtools (what tests, benchmarks and studies share) may use any layer, and no module of the package or
stage may import it.

A module imports only from layers below its own, or from modules of its own layer with no circle
between them. Read from the source (ast), so it covers imports inside functions and under
TYPE_CHECKING too, and imports nothing.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("core", "training", "reporting", "commands", "stages", "devtools")
COMMANDS = ("signdigits.predict", "signdigits.review", "signdigits.worker", "signdigits.exps")
DEVTOOLS = "signdigits.devtools"


def layer_of(module: str) -> str:
    if module.startswith("stages."):
        return "stages"
    if module in COMMANDS or module.startswith(tuple(f"{command}." for command in COMMANDS)):
        return "commands"  # a command's package (signdigits.review.*) is its layer
    if module == DEVTOOLS:
        return "devtools"
    parts = module.split(".")
    if len(parts) > 2 and parts[1] in LAYERS:
        return parts[1]
    return "core"  # signdigits/__init__.py and the package folders' __init__.py hold no imports of their own


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT / "src" if path.is_relative_to(ROOT / "src") else ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(source: str, module: str) -> set[str]:
    """The signdigits modules `source` imports (a `from package import name` counts the submodule when it is one)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing package
                package = module.split(".")[: -node.level]
                base = ".".join([*package, *([base] if base else [])])
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return {name for name in found if name.split(".")[0] == "signdigits"}


def import_graph(files: dict[str, str]) -> dict[str, set[str]]:
    """module -> the modules of `files` it imports, from module -> source."""
    return {module: imports(source, module) & set(files) - {module} for module, source in files.items()}


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{module} ({layer_of(module)}) imports {target} ({layer_of(target)})"
        for module, targets in graph.items()
        for target in targets
        if LAYERS.index(layer_of(target)) > LAYERS.index(layer_of(module))
    )


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as [a, b, ..., a], or None."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" after

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                return [*path[path.index(target) :], target]
            if target not in state and (circle := visit(target, [*path, target])):
                return circle
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state and (circle := visit(module, [module])):
            return circle
    return None


def project_sources() -> dict[str, str]:
    files = [*(ROOT / "src").rglob("*.py"), *(ROOT / "stages").glob("*.py")]
    return {module_name(path): path.read_text() for path in files}


def test_the_project_has_no_upward_import():
    assert upward_imports(import_graph(project_sources())) == []


def test_the_project_has_no_import_circle():
    circle = find_circle(import_graph(project_sources()))
    assert circle is None, "import circle: " + " -> ".join(circle)


def test_every_module_is_in_a_layer():
    """A new top-level module or folder must be placed in the layers, not fall into core by default."""
    for module in project_sources():
        parts = module.split(".")
        placed = layer_of(module) == "commands" or module == DEVTOOLS or parts[0] == "stages" or len(parts) == 1
        placed = placed or parts[1] in LAYERS
        assert placed, f"{module}: add it to a layer in tests/test_layers.py"


# --- the checks themselves can fail ------------------------------------------------------------


def test_a_circle_is_found_even_through_a_function_level_or_type_checking_import():
    files = {
        "signdigits.training.model": "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from signdigits.training.familiarity import Familiarity\n",
        "signdigits.training.familiarity": "def f():\n    from signdigits.training import model\n",
        "signdigits.training.engine": "from signdigits.training.model import Classifier\n",
    }
    circle = find_circle(import_graph(files))
    assert circle is not None
    assert set(circle) == {"signdigits.training.model", "signdigits.training.familiarity"}


def test_an_upward_import_is_found():
    files = {
        "signdigits.core.data": "import signdigits.reporting.figures\n",
        "signdigits.reporting.figures": "from ..core import paths\n",
        "signdigits.core.paths": "",
        "signdigits.predict": "from signdigits.training.model import load_model\n",
        "signdigits.training.model": "",
    }
    assert upward_imports(import_graph(files)) == [
        "signdigits.core.data (core) imports signdigits.reporting.figures (reporting)"
    ]


@pytest.mark.parametrize(
    ("module", "layer"),
    [
        ("signdigits.core.params", "core"),
        ("signdigits.training.model_file", "training"),
        ("signdigits.reporting.report", "reporting"),
        ("signdigits.review", "commands"),
        ("stages.evaluate", "stages"),
        ("signdigits.devtools", "devtools"),
    ],
)
def test_layer_of(module, layer):
    assert layer_of(module) == layer
