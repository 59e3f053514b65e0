"""The library stands alone: `kbn` never loads the study or its tools."""

import ast
import os
import subprocess
import sys

from tests.helpers import ROOT

STUDY_ONLY = ("kbn_study", "pandas", "matplotlib", "tensorboard", "mlxtend")


def _imports(path):
    tree = ast.parse(open(path).read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def _python_files(folder):
    for base, _, names in os.walk(os.path.join(ROOT, folder)):
        yield from (os.path.join(base, n) for n in names if n.endswith(".py"))


# Keras 3 itself imports pandas and matplotlib when they are installed (its
# array adapters and its image-gallery helper), so this test hides the study's
# packages from the process, as on a machine with the library alone: kbn must
# import, build, train and save without them, and load none of them.
BLOCKED_IMPORTS = """
import importlib.abc, sys
class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError(f"{{name}} is hidden from this process")
sys.meta_path.insert(0, Blocked())
"""

LIBRARY_ONLY = """
import sys, tempfile, os, time
start = time.perf_counter(); import keras; keras_s = time.perf_counter() - start
start = time.perf_counter(); import kbn; kbn_s = time.perf_counter() - start
import numpy as np
inputs = keras.Input((4,))
outputs = keras.layers.Dense(2)(kbn.layers.BatchNorm()(inputs))
model = keras.Model(inputs, outputs)
model.compile(optimizer="sgd", loss="mse")
model.fit(np.ones((8, 4)) * np.arange(8)[:, None], np.zeros((8, 2)), verbose=0)
path = os.path.join(tempfile.mkdtemp(), "m.keras")
model.save(path)
keras.saving.load_model(path)
print(sorted(m for m in {blocked!r} if m in sys.modules))
print(f"import keras {{keras_s:.2f}} s, then import kbn {{kbn_s:.2f}} s")
"""


def test_the_library_works_without_the_study_and_loads_none_of_it():
    code = (BLOCKED_IMPORTS + LIBRARY_ONLY).format(blocked=STUDY_ONLY)
    # On JAX: the library is the same on either backend, and JAX starts faster.
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd="/",
        env={**os.environ, "KERAS_BACKEND": "jax"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded, timing = result.stdout.strip().splitlines()[-2:]
    assert loaded == "[]", f"import kbn loaded {loaded}"
    print(timing)


# The one library module that writes TensorBoard files imports TensorBoard's
# own package (never TensorFlow): only when it writes.
ALLOWED = {os.path.join("kbn", "event_file.py"): {"tensorboard"}}


def test_no_library_module_imports_the_study():
    for path in _python_files("kbn"):
        name = os.path.relpath(path, ROOT)
        allowed = ALLOWED.get(name, set())
        bad = [
            m
            for m in _imports(path)
            if m.split(".")[0] in STUDY_ONLY and m.split(".")[0] not in allowed
        ]
        assert not bad, f"{name} imports {bad}"


def test_recipes_are_thin_scripts_over_the_study_commands():
    for path in _python_files("recipes"):
        name = os.path.splitext(os.path.basename(path))[0]
        assert list(_imports(path)) == [f"kbn_study.commands.{name}"], path


PACKAGES = ("kbn", "kbn_study")


def _module_of(path):
    relative = os.path.relpath(path, ROOT)[: -len(".py")].split(os.sep)
    if relative[-1] == "__init__":
        relative = relative[:-1]
    return ".".join(relative)


def _import_graph():
    """`{module: {module it imports}}` over kbn and kbn_study, every import
    statement counted, those inside functions too; `from package import
    name` is an import of `package.name` when that is a module."""
    modules = {
        _module_of(path): path
        for package in PACKAGES
        for path in _python_files(package)
    }
    graph = {}
    for module, path in modules.items():
        edges = set()
        for name in _all_imports(path, module):
            if name.split(".")[0] in PACKAGES:
                while name not in modules and "." in name:
                    name = name.rsplit(".", 1)[0]
                if name in modules and name != module:
                    edges.add(name)
        graph[module] = edges
    return graph


def _all_imports(path, module):
    package = module if path.endswith("__init__.py") else module.rsplit(".", 1)[0]
    tree = ast.parse(open(path).read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            for alias in node.names:
                yield f"{base}.{alias.name}"


def _cycles(graph):
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
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
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_and_the_library_never_imports_the_study():
    graph = _import_graph()
    assert len(graph) > 60 and "kbn_study.grid.runner" in graph["kbn_study.grid.timing"]
    assert _cycles(graph) == []
    upward = {
        m: sorted(e) for m, e in graph.items() if m.startswith("kbn.") or m == "kbn"
    }
    assert not {
        m: e for m, e in upward.items() if any(x.startswith("kbn_study") for x in e)
    }


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_every_module_opens_with_a_docstring_of_what_it_holds():
    missing = []
    for package in PACKAGES + ("recipes",):
        for path in _python_files(package):
            tree = ast.parse(open(path).read(), path)
            doc = ast.get_docstring(tree)
            if not doc or len(doc.split()) < 5:
                missing.append(os.path.relpath(path, ROOT))
    assert missing == []


# kbn_study's layers, in the order of its docstring: a module imports only
# modules of its own layer or of the layers before it.
STUDY_LAYERS = [
    "startup", "data", "models", "outputs", "training", "sweeps", "studies",
    "grid", "cli", "commands",
]  # fmt: skip


def test_the_study_imports_only_downwards():
    def layer(module):
        parts = module.split(".")
        return STUDY_LAYERS.index(parts[1]) if len(parts) > 1 else -1

    graph = _import_graph()
    upward = [
        f"{module} imports {other}"
        for module, edges in graph.items()
        if module.startswith("kbn_study.")
        for other in edges
        if other.startswith("kbn_study.") and layer(other) > layer(module)
    ]
    assert upward == []
