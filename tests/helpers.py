"""Helpers shared by the test modules (test modules never import each other)."""

import os
import socket
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_scalars(folder):
    """{tag: [(step, value), ...]} of the scalars in the TensorBoard event files
    in `folder`, read back with TensorBoard's own reader."""
    return {
        tag: [(step, float(value)) for step, value in events]
        for tag, events in _read_tensors(folder, "scalars").items()
    }


def read_histograms(folder):
    """{tag: [(step, buckets), ...]} of the histograms in `folder`; `buckets`
    is TensorBoard's `(k, 3)` array of left edge, right edge and count."""
    return _read_tensors(folder, "histograms")


def _read_tensors(folder, plugin):
    import tensorflow as tf
    from tensorboard.backend.event_processing import event_accumulator

    accumulator = event_accumulator.EventAccumulator(
        str(folder), size_guidance={event_accumulator.TENSORS: 0}
    )
    accumulator.Reload()
    return {
        tag: [
            (event.step, np.asarray(tf.make_ndarray(event.tensor_proto)))
            for event in accumulator.Tensors(tag)
        ]
        for tag in accumulator.Tags()["tensors"]
        if accumulator.SummaryMetadata(tag).plugin_data.plugin_name == plugin
    }


def free_ports(count):
    """`count` TCP ports that are free on 127.0.0.1 right now."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def user_environment(**extra):
    """The environment of a user's shell: the tests' own log settings removed."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return {**env, **extra}


# JAX's persistent compilation cache, shared by the recipe processes of one
# session (conftest.py sets the folder): most recipes compile the same
# programs (the study's MLP on batches of 60), which a process then loads
# instead of compiling them again (measured: a 20-batch compare.py run, 23 s
# of CPU, then 17 s). The loaded programs are XLA's own output for the same
# program, so the results are those of a fresh compile.
JAX_CACHE = "KBN_TESTS_JAX_CACHE"


def _jax_cache_environment():
    folder = os.environ.get(JAX_CACHE)
    if not folder:
        return {}
    return {
        "JAX_COMPILATION_CACHE_DIR": folder,
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    }


def run_recipe(name, *args, check=True, backend="jax", env=None, timeout=600):
    """Runs `recipes/<name>` as a user does, in a new process (with the
    session's JAX compilation cache, `JAX_CACHE`)."""
    extra = {**_jax_cache_environment(), **(env or {})}
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "recipes", name), *map(str, args)],
        cwd=ROOT,
        env=user_environment(KERAS_BACKEND=backend, **extra),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check:
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result


# Test modules whose code depends on the Keras backend: the suite runs them on
# TensorFlow (Keras's default) and again on JAX in a subprocess
# (tests/test_backends.py, started by conftest.py as soon as tests are
# collected, so that both backends run at once).
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
    "tests/test_bn_lstm_layer.py",
    "tests/test_callbacks.py",
    "tests/test_tensorboard_callbacks.py",
    "tests/test_networks.py",
    "tests/test_trainer.py",
    "tests/test_activation_percentiles.py",
]


def channels_first_conv_runs():
    """Whether this backend trains a channels-first `Conv2D` on this machine.

    JAX always does; TensorFlow's CPU kernels support NCHW convolutions (and
    their gradients) only where oneDNN provides them.
    """
    import keras

    if keras.backend.backend() != "tensorflow":
        return True
    import tensorflow as tf

    x = tf.zeros((1, 2, 4, 4))
    kernel = tf.zeros((3, 3, 2, 2))
    try:
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.nn.conv2d(x, kernel, strides=1, padding="VALID", data_format="NCHW")
        tape.gradient(y, x)
    except (tf.errors.UnimplementedError, tf.errors.InvalidArgumentError):
        return False
    return True


def start_jax_run(folder):
    """Starts pytest on `BACKEND_SENSITIVE` with KERAS_BACKEND=jax.

    Returns the `subprocess.Popen`; its output goes to `<folder>/output.txt`
    and its JUnit XML report to `<folder>/report.xml`.
    """
    with open(os.path.join(folder, "output.txt"), "w") as output:
        return subprocess.Popen(
            [
                sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                "--durations=20",
                f"--junitxml={os.path.join(folder, 'report.xml')}",
                *BACKEND_SENSITIVE,
            ],
            cwd=ROOT,
            env={**os.environ, "KERAS_BACKEND": "jax"},
            stdout=output,
            stderr=subprocess.STDOUT,
        )  # fmt: skip


def junit_failures(report_path):
    """`["<test id>: <first line of its failure>", ...]` from a JUnit report."""
    import xml.etree.ElementTree as ElementTree

    failures = []
    for case in ElementTree.parse(report_path).getroot().iter("testcase"):
        for problem in list(case.findall("failure")) + list(case.findall("error")):
            name = f"{case.get('classname')}::{case.get('name')}"
            message = (problem.get("message") or "").strip().splitlines()
            failures.append(f"{name}: {message[0] if message else problem.tag}")
    return failures


# Tasks for `kbn_study.workers.WorkerPool` in the tests: module-level (a
# worker imports them by name) and free of Keras, so a worker starts fast.
def square(item):
    return item * item


def exit_on_three(item):
    """Kills its worker process on item 3 (as the kernel's OOM killer would)."""
    if item == 3:
        os._exit(9)
    return item


def raise_on_two(item):
    if item == 2:
        raise ArithmeticError("two is not allowed")
    return item


def sleep_then_return(item):
    import time

    time.sleep(item)
    return item


def children_of(pid):
    """Process ids whose parent is `pid` (read from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def alive(pid):
    """Whether a process `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def command_line(pid):
    """The command line of process `pid` ('' if it is gone)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
