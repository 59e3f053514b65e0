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
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.util import tensor_util

    accumulator = event_accumulator.EventAccumulator(
        str(folder), size_guidance={event_accumulator.TENSORS: 0}
    )
    accumulator.Reload()
    return {
        tag: [
            (event.step, np.asarray(tensor_util.make_ndarray(event.tensor_proto)))
            for event in accumulator.Tensors(tag)
        ]
        for tag in accumulator.Tags()["tensors"]
        if accumulator.SummaryMetadata(tag).plugin_data.plugin_name == plugin
    }


def read_back_run(run_dir, networks, steps):
    """Checks what a comparison wrote under `run_dir`: results, curves at
    `steps`, the plot, and each network's TensorBoard curve."""
    import matplotlib.image
    import pandas as pd
    import pytest

    summary = pd.read_csv(run_dir / "results.csv")
    assert summary["network"].tolist() == networks
    curves = pd.read_csv(run_dir / "curves.csv")
    for network in networks:
        mine = curves[curves["network"] == network]
        assert mine["step"].tolist() == steps
        final = summary.set_index("network").loc[network, "final_validation_accuracy"]
        assert mine["validation_accuracy"].iloc[-1] == pytest.approx(final)
    assert matplotlib.image.imread(run_dir / "accuracy.png").ndim == 3
    for network in networks:
        scalars = read_scalars(run_dir / network)
        assert [s for s, _ in scalars["validation/accuracy"]] == steps


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


# JAX's persistent compilation cache, shared by every JAX process of one
# session (conftest.py sets the folder in the environment, which they
# inherit): most of them compile the same programs (the study's MLP on
# batches of 60), which a process then loads instead of compiling them again
# (measured: a 20-batch compare.py run, 23 s of CPU, then 17 s). The loaded
# programs are XLA's own output for the same program and flags, so the
# results are those of a fresh compile.
JAX_CACHE = "KBN_TESTS_JAX_CACHE"


def _jax_cache_environment():
    folder = os.environ.get(JAX_CACHE)
    if not folder:
        return {}
    return {
        "JAX_COMPILATION_CACHE_DIR": folder,
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    }


def run_command(name, *args, check=True):
    """Runs the command of `recipes/<name>` in this process, through its
    `main(argv)`, as a user's `python recipes/<name> ARGS` would run it.

    Returns a `subprocess.CompletedProcess` with the exit status and what
    it printed. For the command's plumbing (folders, flags, files, errors):
    it runs on this process's backend, without a process start-up;
    `run_recipe` runs a real process.
    """
    import contextlib
    import importlib
    import io

    module = importlib.import_module(f"kbn_study.commands.{name[: -len('.py')]}")
    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    saved_argv, saved_environ = sys.argv, dict(os.environ)
    sys.argv = [os.path.join("recipes", name), *argv]
    status = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                module.main(argv)
            except SystemExit as exit:
                if isinstance(exit.code, int) or exit.code is None:
                    status = exit.code or 0
                else:  # SystemExit("message"): Python prints it, status 1
                    print(exit.code, file=sys.stderr)
                    status = 1
    finally:
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_environ)
    result = subprocess.CompletedProcess(
        [name, *argv], status, out.getvalue(), err.getvalue()
    )
    if check:
        assert status == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result


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
    "tests/test_bn_lstm_layer.py",
    "tests/test_callbacks.py",
    "tests/test_tensorboard_callbacks.py",
    "tests/test_networks.py",
    "tests/test_trainer.py",
    "tests/test_activation_percentiles.py",
    "tests/test_adaptation.py",
    "tests/test_conversion.py",
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
    """Starts pytest on `BACKEND_SENSITIVE` with KERAS_BACKEND=jax, once.

    Creates `folder` (a second call finds it and does nothing); the run's
    output goes to `<folder>/output.txt`, its JUnit XML report to
    `<folder>/report.xml`, its exit status to `<folder>/returncode` when it
    ends, its process group id to `<folder>/pid`. It runs in a shell of its
    own session, so that the status is written whichever pytest process
    started it, and `stop_jax_run` ends it with its children.

    XLA optimizes these tests' many small programs less
    (`--xla_backend_optimization_level=0`, cheaper LLVM passes): a third less
    compile time, the same operations. The tests compare kbn with references
    computed under the same flags; recipes and benchmarks keep XLA's
    defaults.
    """
    try:
        os.makedirs(folder)
    except FileExistsError:
        return
    command = [
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
        "-n", "0", "--durations=20",
        f"--junitxml={os.path.join(folder, 'report.xml')}",
        *BACKEND_SENSITIVE,
    ]  # fmt: skip
    output = _quote(os.path.join(folder, "output.txt"))
    returncode = _quote(os.path.join(folder, "returncode"))
    script = f"{' '.join(map(_quote, command))} > {output} 2>&1; echo $? > {returncode}"
    flags = (
        "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
    )
    process = subprocess.Popen(
        ["/bin/sh", "-c", script],
        cwd=ROOT,
        env={
            **os.environ,
            "KERAS_BACKEND": "jax",
            "XLA_FLAGS": f"{flags} {os.environ.get('XLA_FLAGS', '')}".strip(),
        },
        start_new_session=True,
    )
    with open(os.path.join(folder, "pid"), "w") as f:
        f.write(str(process.pid))


def wait_for_jax_run(folder, timeout=1800):
    """The JAX run's exit status, once it has ended."""
    import time

    path = os.path.join(folder, "returncode")
    deadline = time.monotonic() + timeout
    while not os.path.exists(path) or not open(path).read().strip():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the JAX run in {folder} did not end")
        time.sleep(1)
    return int(open(path).read())


def stop_jax_run(folder):
    """Ends the JAX run of `folder` and its children, if it still runs."""
    import signal

    try:
        pid = int(open(os.path.join(folder, "pid")).read())
    except (OSError, ValueError):
        return
    if not os.path.exists(os.path.join(folder, "returncode")):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _quote(text):
    import shlex

    return shlex.quote(str(text))


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


# Tasks for `kbn_study.sweeps.workers.WorkerPool` in the tests: module-level (a
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
