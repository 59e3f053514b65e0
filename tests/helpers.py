"""Helpers shared by the test modules (test modules never import each other)."""

import os
import socket
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_scalars(folder):
    """{tag: [(step, value), ...]} from the TensorBoard event files in `folder`,
    read back with TensorBoard's own reader."""
    import tensorflow as tf
    from tensorboard.backend.event_processing import event_accumulator

    accumulator = event_accumulator.EventAccumulator(
        str(folder), size_guidance={event_accumulator.TENSORS: 0}
    )
    accumulator.Reload()
    return {
        tag: [
            (event.step, float(np.asarray(tf.make_ndarray(event.tensor_proto))))
            for event in accumulator.Tensors(tag)
        ]
        for tag in accumulator.Tags()["tensors"]
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


def run_recipe(name, *args, check=True, backend="jax", env=None, timeout=600):
    """Runs `recipes/<name>` as a user does, in a new process."""
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "recipes", name), *map(str, args)],
        cwd=ROOT,
        env=user_environment(KERAS_BACKEND=backend, **(env or {})),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check:
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result
