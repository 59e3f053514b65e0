"""Runs the backend-sensitive tests again on the JAX backend.

The suite runs on Keras's default backend (TensorFlow). A Keras process
cannot switch backends, so this test starts pytest in a new process with
`KERAS_BACKEND=jax` on the modules whose code depends on the backend.
"""

import os
import subprocess
import sys

import keras
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKEND_SENSITIVE = [
    "tests/test_ops.py",
    "tests/test_batch_norm.py",
    "tests/test_batch_norm_features.py",
    "tests/test_subclassing.py",
    "tests/test_subclass_examples.py",
    "tests/test_folding.py",
    "tests/test_population.py",
    "tests/test_numerics.py",
    "tests/test_bn_lstm.py",
    "tests/test_callbacks.py",
    "tests/test_models.py",
    "tests/test_training.py",
]


@pytest.mark.skipif(
    keras.backend.backend() == "jax", reason="this process already runs on JAX"
)
def test_backend_sensitive_tests_pass_on_jax():
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider"]
        + BACKEND_SENSITIVE,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert " passed" in result.stdout
