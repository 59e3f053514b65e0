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
