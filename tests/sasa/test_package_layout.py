"""The ``sasa`` package's import graph: no circle, dependencies one way, and a light command line.

Every ``import`` of a ``sasa`` module inside ``python/sasa`` is read from the source (module level
and inside functions alike: a function-level import is still a dependency; only ``if TYPE_CHECKING:``
blocks are skipped, they never run). The graph must have no cycle between modules, and none between
the package's top-level parts (``sasa.guard``, ``sasa.probe``, ...; a top-level module is a part of
its own). ``python -m tests.sasa.test_package_layout`` prints the parts in layers, lowest first.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "python" / "sasa"
KERNELS = Path(__file__).resolve().parents[2] / "sasa_kernels"


def module_names(root: Path, package: str) -> dict[str, Path]:
    """Every module of the package rooted at ``root``, by dotted name (a package by its own name)."""
    names = {}
    for path in root.rglob("*.py"):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> list[ast.stmt]:
    """The import statements of ``tree``, outside ``if TYPE_CHECKING:`` blocks."""
    found: list[ast.stmt] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """``module -> the modules of the same package it imports`` (``from a import b`` names module
    ``a.b`` where ``b`` is a module, else ``a``)."""
    top = next(iter(modules)).split(".")[0]
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        edges: set[str] = set()
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                if node.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[:len(base) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source for a in node.names]
            for target in targets:
                while target and target not in modules and "." in target:
                    target = target.rsplit(".", 1)[0]  # `import a.b.c` of a name inside a module
                if target in modules and target != name and target.split(".")[0] == top:
                    edges.add(target)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or ``[]``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        state[node] = 2
        path.pop()
        return []

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return []


def part_of(module: str) -> str:
    """The top-level part a module belongs to: ``sasa.guard.capture`` -> ``sasa.guard``."""
    return ".".join(module.split(".")[:2])


def part_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The graph between top-level parts (the package face ``sasa`` itself left out: it only names
    what the parts define)."""
    parts: dict[str, set[str]] = {}
    for module, targets in graph.items():
        if module == "sasa":
            continue
        parts.setdefault(part_of(module), set()).update(
            part_of(t) for t in targets if t != "sasa" and part_of(t) != part_of(module))
    return parts


def layers(graph: dict[str, set[str]]) -> list[list[str]]:
    """The nodes of an acyclic graph in layers: each imports only nodes of lower layers."""
    level: dict[str, int] = {}

    def depth(node: str) -> int:
        if node not in level:
            level[node] = 1 + max((depth(t) for t in graph.get(node, ())), default=-1)
        return level[node]

    for node in graph:
        depth(node)
    out: list[list[str]] = [[] for _ in range(max(level.values()) + 1)]
    for node, lv in level.items():
        out[lv].append(node)
    return [sorted(layer) for layer in out]


MODULES = module_names(PACKAGE, "sasa")
GRAPH = import_graph(MODULES)


def test_the_walker_sees_imports_of_every_form():
    # The checks below are only as good as the graph: these edges are written in four forms.
    assert "sasa.guard.capture" in GRAPH["sasa.guard.apply"]            # from sasa.guard.capture import ...
    assert "sasa.hf.compat" in GRAPH["sasa.guard.apply"]                # from sasa.hf import compat
    assert "sasa.guard.apply" in GRAPH["sasa.calibrate.run"]            # a function-level import or module level
    assert "sasa.locate.run" in GRAPH["sasa.organism.efficacy"]         # inside a function
    assert GRAPH["sasa"] == {"sasa._faces"}                             # TYPE_CHECKING imports skipped


def test_no_import_circle_between_modules():
    assert find_cycle(GRAPH) == [], "import circle: " + " -> ".join(find_cycle(GRAPH))


def test_no_import_circle_between_the_packages_parts():
    parts = part_graph(GRAPH)
    assert find_cycle(parts) == [], "import circle between parts: " + " -> ".join(find_cycle(parts))


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) == []


#: The layers of the README's Architecture table, lowest first (sasa_kernels below them all): a part
#: imports only from its own layer and the layers before it. A new folder must be placed here.
LAYERS = [
    {"sasa.config", "sasa.metrics", "sasa.refusal", "sasa._types", "sasa._faces", "sasa._reporting"},
    {"sasa.hf", "sasa.data", "sasa.distributed"},
    {"sasa.probe"},
    {"sasa.guard"},
    {"sasa.calibrate", "sasa.evaluate", "sasa.locate", "sasa.bench", "sasa.serve", "sasa.demo"},
    {"sasa.organism"},
    {"sasa.cli"},
]


def test_every_part_has_one_layer():
    placed = [part for layer in LAYERS for part in layer]
    assert len(placed) == len(set(placed))
    assert set(placed) == set(part_graph(GRAPH)), "a part of the package is missing from LAYERS (or gone)"


def test_dependencies_point_one_way():
    # cli -> commands -> guard/probe/data -> sasa_kernels: each part imports only its own layer and
    # the ones below; a command never imports the module that assembles the commands.
    layer_of = {part: i for i, layer in enumerate(LAYERS) for part in layer}
    for part, targets in part_graph(GRAPH).items():
        upward = sorted(t for t in targets if layer_of[t] > layer_of[part])
        assert not upward, f"{part} (layer {layer_of[part]}) imports from a higher layer: {upward}"
    for module, targets in GRAPH.items():
        if module.startswith("sasa.cli.commands"):
            assert "sasa.cli.app" not in targets, module


def test_the_kernels_never_import_sasa():
    kernels = module_names(KERNELS, "sasa_kernels")
    for name, path in kernels.items():
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            assert not any(n == "sasa" or n.startswith("sasa.") for n in names), name


def test_the_command_line_builds_without_transformers():
    # Every package face is lazy and every command module imports only the standard library at
    # module level: building the whole parser (what `sasa --help` does) loads none of the hf extra
    # (torch is loaded by sasa_kernels, which the version string comes from).
    code = ("import sys\nfrom sasa.cli.app import build_parser\nbuild_parser()\nimport sasa, sasa.guard, sasa.probe, "
            "sasa.data, sasa.evaluate, sasa.calibrate, sasa.locate, sasa.bench, sasa.hf, sasa.demo\n"
            "heavy = sorted(m for m in ('transformers', 'PIL', 'matplotlib', 'safetensors') if m in sys.modules)\n"
            "print(','.join(heavy))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"imported by the parser or a package face: {result.stdout.strip()}"


@pytest.mark.parametrize("name", ["apply_sasa", "SASAProbe", "calibrate", "read_dataset", "PromptFormat"])
def test_every_public_name_resolves(name):
    import sasa

    assert getattr(sasa, name) is not None
    assert set(sasa.__all__) >= {name}


def test_every_face_names_what_exists():
    import importlib

    for module in ("sasa", "sasa.guard", "sasa.probe", "sasa.data", "sasa.calibrate", "sasa.evaluate",
                   "sasa.locate", "sasa.hf", "sasa.demo", "sasa.cli", "sasa.bench"):
        face = importlib.import_module(module)
        for name in face.__all__:
            if name != "__version__":
                assert getattr(face, name) is not None, f"{module}.{name}"


def test_each_face_types_exactly_what_it_exports():
    # A face's `if TYPE_CHECKING:` imports (what type checkers and IDEs see) name the same modules
    # and names as its lazy exports (what runs): the two lists are kept in step here.
    import importlib

    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        blocks = [n for n in tree.body if isinstance(n, ast.If) and _is_type_checking(n)]
        if path.name != "__init__.py" or not blocks:
            continue
        typed = {a.asname or a.name: node.module for block in blocks for node in block.body
                 if isinstance(node, ast.ImportFrom) for a in node.names}
        face = importlib.import_module(name)
        exports, subpackages = face._EXPORTS, set(getattr(face, "_MODULES", ()))
        assert set(typed) == set(exports) | subpackages, (name, set(typed) ^ (set(exports) | subpackages))
        for export, module in exports.items():
            assert typed[export] == f"{name}.{module}", (name, export, typed[export])


def test_no_face_exports_a_name_its_submodule_would_shadow():
    # Importing a submodule binds its name on the package: a face exporting a function under the
    # name of one of its own submodules (sasa.cli's `main` once lived in sasa/cli/main.py) gives the
    # module instead of the function once anything has imported that submodule.
    import importlib

    for name, path in MODULES.items():
        if path.name != "__init__.py":
            continue
        exports = getattr(importlib.import_module(name), "_EXPORTS", {})
        depth = name.count(".") + 1
        submodules = {m.rsplit(".", 1)[1] for m in MODULES if m.startswith(name + ".") and m.count(".") == depth}
        assert not set(exports) & submodules, (name, set(exports) & submodules)


if __name__ == "__main__":
    for i, layer in enumerate(layers(part_graph(GRAPH))):
        print(f"{i}: {', '.join(layer)}")
