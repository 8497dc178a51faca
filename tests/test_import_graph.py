"""The import graph of the platform (``glocon``) and the QGNet plugin (``glocon_qgnet``) has no cycle.

The goal is a layered design: every module can be read, tested and replaced knowing only the
modules below it. The graph is built statically with ``ast`` (nothing is imported), so a test
run costs no torch or Ray import and sees modules that are hard to import in a test.

What counts as an edge A -> B:
- ``import B`` and ``from B import name`` anywhere in A, **including inside functions, methods
  and ``if TYPE_CHECKING:`` blocks**. A function-level import is a real dependency that was
  only moved out of the way of the import-time cycle it would cause: it still ties the lower
  module to the upper one (a change up there can break it, and neither can be understood
  alone), so it counts. ``TYPE_CHECKING`` imports count too: a type annotation that names an
  upper layer is the same dependency, written down.
- ``importlib.import_module("B")`` (or ``import_module`` / ``__import__``) with a literal name: an
  import by another spelling (the ``glocon.models`` package imports ``lite0`` that way). A name
  built at run time (``f"glocon.jobs.{script}"``: the CLI's jobs, the data layouts) is a
  registry lookup by the caller's input, not a fixed dependency, and is not counted.
- ``from P import name`` is an edge to ``P.name`` when that is a module of these packages,
  else to ``P`` (a name defined in ``P``'s ``__init__``). An edge to a package means its
  ``__init__.py``: the package module ``P`` itself.
- Relative imports (``from . import x``, ``from ..m import y``) are resolved against A's package.
- Only edges between modules of these two packages count (the stdlib and third parties are not
  ours to layer). A package's ``__init__`` importing its own submodules is an ordinary edge.
  Importing ``P.m`` also runs ``P``'s ``__init__`` first; that implicit edge is not counted (a
  package whose ``__init__`` re-exports its submodules would otherwise be a cycle by itself).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_ROOTS = {  # top-level package -> the folder that holds it
    "glocon": ROOT / "platform",
    "glocon_qgnet": ROOT / "plugins" / "qgnet",
}


def module_files() -> dict[str, tuple[Path, bool]]:
    """Every module of the two packages: dotted name -> (file, is it a package's __init__)."""
    modules: dict[str, tuple[Path, bool]] = {}
    for top, base in PACKAGE_ROOTS.items():
        for path in sorted((base / top).rglob("*.py")):
            parts = list(path.relative_to(base).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts = parts[:-1]
            modules[".".join(parts)] = (path, is_package)
    return modules


def _resolve(name: str, level: int, module: str, is_package: bool) -> str:
    """The absolute name of ``from <level dots><name> import ...`` written in ``module``."""
    if level == 0:
        return name
    package = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        package = package[: len(package) - (level - 1)]
    return ".".join(package + ([name] if name else []))


def _own(name: str, modules: dict) -> str | None:
    """``name`` or its longest prefix that is one of our modules (``glocon.x.Y`` -> ``glocon.x``)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def _is_import_call(func: ast.expr) -> bool:
    """``importlib.import_module``, ``import_module`` or ``__import__``."""
    if isinstance(func, ast.Attribute):
        return func.attr == "import_module" and isinstance(func.value, ast.Name) and func.value.id == "importlib"
    return isinstance(func, ast.Name) and func.id in ("import_module", "__import__")


def import_graph() -> dict[str, set[str]]:
    """module -> the modules of these packages it imports (anywhere in its body)."""
    modules = module_files()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for module, (path, is_package) in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):  # every statement, inside functions and classes too
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(node.module or "", node.level, module, is_package)
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in modules else base)
            elif isinstance(node, ast.Call) and _is_import_call(node.func) and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str) and not first.value.startswith("."):
                    targets = [first.value]
            for target in targets:
                own = _own(target, modules)
                if own is not None and own != module:
                    graph[module].add(own)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as ``[a, b, ..., a]``, or None. Depth-first search in a fixed order, so the
    cycle named on failure is the same on every run."""
    WHITE, GREY, BLACK = 0, 1, 2
    colour = dict.fromkeys(graph, WHITE)
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = GREY
        stack.append(node)
        for nxt in sorted(graph[node]):
            if colour[nxt] == GREY:
                return stack[stack.index(nxt):] + [nxt]
            if colour[nxt] == WHITE:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        colour[node] = BLACK
        return None

    for start in sorted(graph):
        if colour[start] == WHITE:
            found = visit(start)
            if found:
                return found
    return None


def all_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan), so a
    failure lists every tangle at once rather than one per run."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
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
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    cycles = []
    for component in sorted(components):
        members = set(component)
        cycle = find_cycle({m: graph[m] & members for m in component})
        cycles.append(cycle)
    return cycles


def test_the_walker_sees_imports_inside_functions_and_relative_ones():
    graph = import_graph()
    assert len(graph) > 100 and "glocon_qgnet.model" in graph
    # A known edge of each kind, so that a walker that silently found nothing cannot pass.
    assert "glocon.ops" in graph["glocon.regionmaps"]  # from glocon.ops import ...
    assert "glocon.plugin_api" in graph["glocon_qgnet.plugin"]  # the plugin sees the platform through glocon.plugin_api
    assert "glocon_qgnet.model" in graph["glocon_qgnet.plugin"]
    assert "glocon.models.lite0" in graph["glocon.models"]  # importlib.import_module("glocon.models.lite0") in __init__
    assert "glocon.models.backbones" in graph["glocon.models.lite0"]
    assert "glocon.probe.run" in graph["glocon.train.loop"]  # imported inside a function
    assert _resolve("", 1, "glocon.data.layouts", True) == "glocon.data.layouts"
    assert _resolve("_common", 1, "glocon.data.layouts.voc", False) == "glocon.data.layouts._common"
    assert _resolve("ops", 2, "glocon.probe.run", False) == "glocon.ops"


def test_find_cycle_names_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert all_cycles({"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"c"}, "e": {"a"}}) == [["a", "b", "a"], ["c", "d", "c"]]


def test_no_import_cycles():
    cycles = all_cycles(import_graph())
    assert not cycles, "import cycles (a layered design has none; see this file's docstring):\n" + "\n".join(
        "  " + " -> ".join(cycle) for cycle in cycles
    )
