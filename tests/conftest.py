import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Tests never download: Keras's cache is an empty folder and the download
# is off, so MNIST comes from the offline subset (or from explicit files).
os.environ["KERAS_HOME"] = tempfile.mkdtemp(prefix="kbn-tests-keras-home-")
os.environ["KBN_OFFLINE"] = "1"
# JAX's persistent compilation cache, one folder for every process of the
# session that runs JAX (recipes, worker pools, Ray tasks, JAX processes, the
# JAX run; see tests/helpers.py): set before any of them starts, inherited.
if "KBN_TESTS_JAX_CACHE" not in os.environ:  # "" turns it off
    os.environ["KBN_TESTS_JAX_CACHE"] = tempfile.mkdtemp(prefix="kbn-tests-jax-cache-")
if os.environ["KBN_TESTS_JAX_CACHE"]:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = os.environ["KBN_TESTS_JAX_CACHE"]
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"

if os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":
    # Keras imports TensorFlow: imported first with its start-up log lines
    # filtered out, as the commands do (they would reach the terminal from
    # every pytest-xdist worker).
    from kbn_study.startup import import_tensorflow  # noqa: E402

    import_tensorflow()

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

# The test that collects the JAX run's result (see pytest_collection_finish).
JAX_RUN_TEST = "tests/test_backends.py"
# A folder shared by the processes of one session (pytest-xdist's workers
# inherit the controller's environment): where the JAX run lives.
SESSION = "KBN_TESTS_SESSION"


def pytest_configure(config):
    if not hasattr(config, "workerinput"):  # the controller, or the only process
        os.environ[SESSION] = tempfile.mkdtemp(prefix="kbn-tests-session-")


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)


@pytest.fixture
def rng():
    return np.random.default_rng(20150211)


@pytest.fixture(scope="session")
def compare_default_run():
    """`(result, log_dir, imports)` of `recipes/compare.py` with its defaults
    (the README's main job, 2,000 batches, JAX), run once per session for the
    tests that read its outputs (tests/test_recipes.py,
    tests/test_tensorboard_study.py), whichever pytest-xdist worker runs
    them: the first to ask runs it, the others wait for it and read what it
    printed. `imports` is the file in which its processes record importing
    TensorFlow (none should)."""
    import fcntl
    import json
    import pathlib
    import subprocess

    from tests.helpers import ROOT
    from tests.helpers import run_recipe

    folder = pathlib.Path(os.environ[SESSION]) / "compare_default_run"
    folder.mkdir(exist_ok=True)
    saved = folder / "result.json"
    imports = folder / "imports.log"
    with open(folder / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not saved.exists():
            # Every process of the run (the parent, its two workers) records
            # an import of TensorFlow into `imports` (tests/import_guard).
            guard = os.path.join(ROOT, "tests", "import_guard")
            env = {"PYTHONPATH": guard, "KBN_TESTS_IMPORT_LOG": str(imports)}
            result = run_recipe(
                "compare.py", "--log-dir", folder / "logs", env=env, check=False
            )
            saved.write_text(
                json.dumps([result.returncode, result.stdout, result.stderr])
            )
    returncode, stdout, stderr = json.loads(saved.read_text())
    assert returncode == 0, stdout[-4000:] + stderr[-4000:]
    result = subprocess.CompletedProcess(["compare.py"], returncode, stdout, stderr)
    return result, folder / "logs", imports


@pytest.fixture(scope="session")
def mnist_subset():
    from kbn_study.data import mnist

    return mnist.load_mnist()


def pytest_collection_modifyitems(session, config, items):
    """Puts the JAX run's test last: it waits for the JAX run, which then runs
    beside every other test instead of beside the few collected before it."""
    last = [item for item in items if item.nodeid.startswith(JAX_RUN_TEST)]
    items[:] = [item for item in items if item not in last] + last


def pytest_collection_finish(session):
    """Starts the JAX run of the backend-sensitive tests when it is collected.

    Under pytest-xdist every worker collects every test: the first to get
    here starts the run (once per session), which then runs beside all the
    other tests; the test of tests/test_backends.py waits for its result.
    """
    wanted = any(item.nodeid.startswith(JAX_RUN_TEST) for item in session.items)
    if wanted and keras.backend.backend() != "jax" and os.environ.get(SESSION):
        from tests.helpers import start_jax_run

        start_jax_run(os.path.join(os.environ[SESSION], "jax-run"))


@pytest.fixture
def jax_run():
    """The folder of the session's JAX run (see `helpers.start_jax_run`)."""
    if keras.backend.backend() == "jax":
        pytest.skip("this process runs on JAX already")
    folder = os.path.join(os.environ.get(SESSION, ""), "jax-run")
    if not os.path.isdir(folder):
        pytest.skip("the JAX run was not started")
    return folder


def pytest_unconfigure(config):
    """Stops a JAX run still going (an interrupted or partial session)."""
    if hasattr(config, "workerinput") or not os.environ.get(SESSION):
        return
    from tests.helpers import stop_jax_run

    stop_jax_run(os.path.join(os.environ[SESSION], "jax-run"))
