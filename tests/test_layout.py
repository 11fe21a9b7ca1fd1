"""The package's layout holds: two halves and a training folder, imports that run one way, no circles.

    cadlab/lm     the language-model half (notebooks 01-05, 10): imports nothing from cad/ or train/
    cadlab/cad    the CAD half (notebooks 06-10): imports nothing from train/
    cadlab/train  the training loop and one recipe per shipped model: may import both halves
    cadlab/paths.py, cadlab/arguments.py   where files live, what the commands accept: import neither half

The graph is read from the source (every ``import`` and ``from ... import``, at the top or inside a
function), so a deferred import cannot hide a circle.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "cadlab"
FORBIDDEN = {            # a module under the first folder may not import one under any of the others
    "cadlab.lm": ("cadlab.cad", "cadlab.train", "cadlab.exercises"),
    "cadlab.cad": ("cadlab.train", "cadlab.exercises"),
    "cadlab.train": ("cadlab.exercises",),
    "cadlab.paths": ("cadlab.lm", "cadlab.cad", "cadlab.train", "cadlab.exercises"),
    "cadlab.arguments": ("cadlab.lm", "cadlab.cad", "cadlab.train", "cadlab.exercises"),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    """Every module of the package (the workshop parts under data/ are CadQuery programs, not modules)."""
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "data" not in p.relative_to(PACKAGE).parts}


def imports_of(path: Path, known: dict) -> set[str]:
    """The package's modules that ``path`` imports (``from cadlab.cad import sandbox`` names the module
    ``cadlab.cad.sandbox``; ``from cadlab.cad.sandbox import run_cadquery`` names it too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            if name in known:
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(path, known) - {name} for name, path in known.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_package_has_its_two_halves_and_a_training_folder():
    names = set(modules())
    assert {"cadlab.lm", "cadlab.cad", "cadlab.train", "cadlab.exercises", "cadlab.paths", "cadlab.cli"} <= names
    assert {"cadlab.train.loop", "cadlab.train.babygpt", "cadlab.train.cadrecode", "cadlab.train.cadrille",
            "cadlab.train.autocomplete"} <= names
    top_level = {n for n in names if n.count(".") == 1}
    assert top_level == {"cadlab.lm", "cadlab.cad", "cadlab.train", "cadlab.exercises", "cadlab.paths",
                         "cadlab.cli", "cadlab.doctor", "cadlab.arguments", "cadlab.notebook"}, "a new module belongs in lm/, cad/ or train/"


def test_no_import_circles():
    assert circles(import_graph()) == []


def test_imports_run_one_way():
    against = [(a, b) for a, targets in import_graph().items() for b in sorted(targets)
               for folder, forbidden in FORBIDDEN.items()
               if (a == folder or a.startswith(folder + ".")) and b.startswith(forbidden)]
    assert against == [], "imports against the layout's direction (lm <- cad <- train)"


def test_the_circle_finder_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []
