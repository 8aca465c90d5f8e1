"""The package's house rules, checked on its source (README "Layout"):

- no import cycle among fastclipseg's modules, counting imports made inside functions (so none
  can hide one) and leaving out `if TYPE_CHECKING:` imports (never run);
- each area imports only from the areas below it (the layer table here is README's);
- imports inside functions only for optional dependencies and the few documented exceptions;
- no private name (`_x`) used outside the module that defines it; `_core` only through `ops`;
- no test module imports another (shared helpers live in tests/helpers and conftest.py).
"""

from __future__ import annotations

import ast
from pathlib import Path

import fastclipseg
import pytest

PACKAGE = Path(fastclipseg.__file__).parent

# Lowest first: a module may import from its own layer and the layers below (never above).
LAYERS = [
    ("fastclipseg", "fastclipseg._moved", "fastclipseg._core", "fastclipseg.native_package"),
    ("fastclipseg.ops", "fastclipseg.overlays"),
    ("fastclipseg.model",),
    ("fastclipseg.engines",),
    ("fastclipseg.prompts", "fastclipseg.results", "fastclipseg.instances"),
    ("fastclipseg.core",),
    ("fastclipseg.features", "fastclipseg.session", "fastclipseg.streams"),
    ("fastclipseg.segmenter",),
    ("fastclipseg.bench", "fastclipseg.cli", "fastclipseg.demo", "fastclipseg.integrations"),
    ("fastclipseg.__main__",),
]

# Imports inside functions: optional dependencies, and where waiting is the point.
OPTIONAL = {"av", "onnxruntime", "onnx", "onnxscript", "ray", "torch_tensorrt", "tensorrt", "modelopt"}
DEFERRED = {
    # A segmenter loaded from an export runs without transformers (tests/engines/test_export_cache.py).
    "fastclipseg.segmenter": {"transformers", "fastclipseg.model.loading"},
    # Model folders load without transformers; it is imported only on request (the escape hatch), and
    # huggingface_hub (0.2 s to import) only to download a model that is not cached (issue 17).
    "fastclipseg.model.loading": {"transformers"},
    "fastclipseg.model.hub": {"huggingface_hub"},
    # numpy callers of the kernels never import torch (the command line checks its arguments first).
    "fastclipseg.ops.preprocess": {"torch"},
    # Benchmarks run where torch is missing (CPU-only machine facts).
    "fastclipseg.bench.measure": {"torch"},
    # A peak-memory worker of an export side must not count transformers' 0.15 GB (issue 19).
    "fastclipseg.bench.suite": {"fastclipseg.model.loading", "fastclipseg.model.random_model"},
    # Inductor (seconds to import) only when an aoti build asks which C++ compiler it will use.
    "fastclipseg.engines.aoti_engine": {"torch._inductor"},
}
# The command line loads torch and the network only for the command that runs (`--help` stays fast).
DEFERRED_ANYTHING = {"fastclipseg.cli", "fastclipseg.__main__"}

# Private attributes of other libraries' objects that the package uses on purpose.
# `_usage_display_name`: typer's argument usage text, replaced by click's in cli._click_style_arguments.
# `_inductor`: torch's documented AOTInductor entry point (aoti_compile_and_package) lives there; `_C._aoti`:
# the tensor handles that cross an AOTInductor package's C interface (engines/aoti_engine.py says why it is
# called directly).
FOREIGN_PRIVATE = {"_asdict", "_POOL_HANDLE", "_usage_display_name", "_inductor", "_C", "_aoti"}


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    hidden: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            for child in node.body:
                hidden.update(id(n) for n in ast.walk(child))
    return hidden


def _imports(name: str):
    """(imported module, the import node, inside a function?) for each runtime import of `name`."""
    tree = ast.parse(MODULES[name].read_text())
    hidden = _type_checking_nodes(tree)
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            inside.update(id(n) for n in ast.walk(node) if n is not node)
    package = name if _is_package(name) else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if id(node) in hidden:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node, id(node) in inside
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                yield (submodule if submodule in MODULES else source), node, id(node) in inside


def _edges(name: str) -> set[str]:
    """The package's modules that importing `name` runs: each imported module and its packages
    (those that `name` is not inside, whose __init__ is already running)."""
    edges = set()
    for target, _, _ in _imports(name):
        if target not in MODULES:
            continue
        parts = target.split(".")
        for depth in range(1, len(parts) + 1):
            step = ".".join(parts[:depth])
            if step in MODULES and not (name == step or name.startswith(step + ".")):
                edges.add(step)
    edges.discard(name)
    return edges


def _layer(name: str) -> int:
    best = None
    for index, members in enumerate(LAYERS):
        for member in members:
            if (name == member or name.startswith(member + ".")) and (best is None or len(member) > len(best[1])):
                best = (index, member)
    assert best is not None, f"{name} is in no layer of the table: add it (and to README's layout)"
    return best[0]


def test_every_module_has_a_layer():
    for name in MODULES:
        _layer(name)


def test_no_import_cycle():
    graph = {name: _edges(name) for name in MODULES}
    # Tarjan's strongly connected components.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for name in graph:
        if name not in index:
            visit(name)
    assert not cycles, f"import cycles: {cycles}"


def test_the_cycle_check_finds_a_cycle(monkeypatch):
    # The check above can fail: a made-up edge from ops back up to the core is a cycle.
    real = _edges

    def with_a_cycle(name: str) -> set[str]:
        return real(name) | ({"fastclipseg.core"} if name == "fastclipseg.ops.rle" else set())

    monkeypatch.setitem(globals(), "_edges", with_a_cycle)
    with pytest.raises(AssertionError, match="import cycles"):
        test_no_import_cycle()


def test_no_area_imports_from_above():
    upward = []
    for name in MODULES:
        for target in _edges(name):
            if _layer(target) > _layer(name):
                upward.append(f"{name} -> {target}")
    assert not upward, "imports from a higher layer: " + "; ".join(sorted(upward))


def test_imports_inside_functions_are_for_optional_dependencies_only():
    found = []
    for name in MODULES:
        for target, node, inside in _imports(name):
            if not inside or name in DEFERRED_ANYTHING:
                continue
            root = target.split(".")[0]
            allowed = DEFERRED.get(name, set())
            if root in OPTIONAL or target in allowed or root in allowed:
                continue
            found.append(f"{name}:{node.lineno} imports {target}")
    assert not found, "imports inside functions: " + "; ".join(found)


def test_engines_are_used_through_their_package():
    found = []
    for name in MODULES:
        if name.startswith("fastclipseg.engines"):
            continue
        for target, node, _ in _imports(name):
            if target.startswith("fastclipseg.engines."):
                found.append(f"{name}:{node.lineno} imports {target}")
    assert not found, "import fastclipseg.engines, not its modules: " + "; ".join(found)


def _private_names_defined(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def test_no_private_name_crosses_a_module_border():
    found = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        own = _private_names_defined(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                    continue
                if node.attr not in own and node.attr not in FOREIGN_PRIVATE:
                    found.append(f"{name}:{node.lineno} uses {ast.unparse(node)}")
        for target, node, _ in _imports(name):
            if not isinstance(node, ast.ImportFrom):
                continue
            for alias in node.names:
                private = alias.name.startswith("_") and not alias.name.startswith("__")
                if not private:
                    continue
                if alias.name == "_core" and name.startswith("fastclipseg.ops"):
                    continue  # ops is the typed face of the native module
                if alias.name == "_moved" and name == "fastclipseg":
                    continue
                found.append(f"{name}:{node.lineno} imports {alias.name} from {target}")
    assert not found, "private names used across modules: " + "; ".join(found)


def test_the_private_name_check_finds_one(tmp_path, monkeypatch):
    # What the old refine.py did (segmenter._embed) is caught.
    fake = tmp_path / "fake.py"
    fake.write_text("def f(segmenter):\n    return segmenter._embed([])\n")
    monkeypatch.setitem(MODULES, "fastclipseg.fake", fake)
    with pytest.raises(AssertionError, match=r"fake:2 uses segmenter._embed"):
        test_no_private_name_crosses_a_module_border()


def test_no_test_module_imports_another():
    tests = Path(__file__).resolve().parent
    found = []
    for path in sorted(tests.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            found += [f"{path.relative_to(tests)}:{node.lineno} imports {name}"
                      for name in names if name.split(".")[-1].startswith(("test_", "conftest"))]
    assert not found, "tests importing test modules: " + "; ".join(found)
