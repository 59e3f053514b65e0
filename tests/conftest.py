import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Tests never download: Keras's cache is an empty folder and the download
# is off, so MNIST comes from the offline subset (or from explicit files).
os.environ["KERAS_HOME"] = tempfile.mkdtemp(prefix="kbn-tests-keras-home-")
os.environ["KBN_OFFLINE"] = "1"
# JAX's compilation cache of the recipe processes (tests/helpers.run_recipe).
if "KBN_TESTS_JAX_CACHE" not in os.environ:  # set: the JAX run, or "" for none
    os.environ["KBN_TESTS_JAX_CACHE"] = tempfile.mkdtemp(prefix="kbn-tests-jax-cache-")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

# The test that collects the JAX run's result (see pytest_collection_finish).
JAX_RUN_TEST = "tests/test_backends.py"


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)


@pytest.fixture
def rng():
    return np.random.default_rng(20150211)


@pytest.fixture(scope="session")
def compare_default_run(tmp_path_factory):
    """`(result, log_dir)` of `recipes/compare.py` with its defaults (the
    README's main job, 2,000 batches, JAX), run once for the tests that read
    its outputs (tests/test_recipes.py, tests/test_tensorboard_study.py)."""
    from tests.helpers import run_recipe

    log_dir = tmp_path_factory.mktemp("compare_default_run")
    return run_recipe("compare.py", "--log-dir", log_dir), log_dir


@pytest.fixture(scope="session")
def mnist_subset():
    from kbn_study import mnist

    return mnist.load_mnist()


def pytest_collection_modifyitems(session, config, items):
    """Puts the JAX run's test last: it waits for the JAX run, which then runs
    beside every other test instead of beside the few collected before it."""
    last = [item for item in items if item.nodeid.startswith(JAX_RUN_TEST)]
    items[:] = [item for item in items if item not in last] + last


def pytest_collection_finish(session):
    """Starts the JAX run of the backend-sensitive tests when it is collected."""
    wanted = any(item.nodeid.startswith(JAX_RUN_TEST) for item in session.items)
    if wanted and keras.backend.backend() != "jax":
        from tests.helpers import start_jax_run

        folder = tempfile.mkdtemp(prefix="kbn-tests-jax-run-")
        session.config._kbn_jax_run = (start_jax_run(folder), folder)


@pytest.fixture
def jax_run(request):
    run = getattr(request.config, "_kbn_jax_run", None)
    if run is None:
        pytest.skip("the JAX run was not started (this process runs on JAX)")
    return run


def pytest_unconfigure(config):
    """Stops a JAX run still going (an interrupted or partial session)."""
    run = getattr(config, "_kbn_jax_run", None)
    if run is not None and run[0].poll() is None:
        run[0].kill()
        run[0].wait()
