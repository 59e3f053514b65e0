"""Runs the backend-sensitive tests again on the JAX backend.

The suite runs on Keras's default backend (TensorFlow). A Keras process
cannot switch backends, so `conftest.py` starts pytest in a new process with
`KERAS_BACKEND=jax` on the modules of `helpers.BACKEND_SENSITIVE` as soon as
the tests are collected (both backends then run at once, beside
pytest-xdist's workers), and this test, which conftest.py puts last, waits
for its result. A failure names each failing JAX test.
"""

import keras
import pytest


@pytest.mark.slow
@pytest.mark.skipif(
    keras.backend.backend() == "jax", reason="this process already runs on JAX"
)
def test_backend_sensitive_tests_pass_on_jax(jax_run):
    import os

    from tests.helpers import junit_failures
    from tests.helpers import wait_for_jax_run

    returncode = wait_for_jax_run(jax_run)
    with open(os.path.join(jax_run, "output.txt")) as f:
        output = f.read()
    report = os.path.join(jax_run, "report.xml")
    failures = junit_failures(report) if os.path.exists(report) else []
    assert returncode == 0 and not failures, (
        f"{len(failures)} test(s) failed on JAX:\n  "
        + "\n  ".join(failures or [output[-2000:]])
    )
    assert " passed" in output
