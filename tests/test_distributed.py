"""Synchronized batch statistics on tf.distribute: 2 logical CPUs, 2 workers."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from kbn import distributed
from tests.helpers import free_ports

pytestmark = pytest.mark.slow  # several processes each

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.join(ROOT, "tests", "distributed")


def _env(**extra):
    return {**os.environ, "KERAS_BACKEND": "tensorflow", "PYTHONPATH": ROOT, **extra}


def _report(script, env):
    """Runs a check script in its own process; returns its JSON report."""
    result = subprocess.run(
        [sys.executable, os.path.join(HERE, script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [
        line for line in result.stdout.splitlines() if line.startswith("KBN-REPORT ")
    ]
    assert result.returncode == 0 and lines, (
        result.stdout[-3000:] + result.stderr[-3000:]
    )
    return json.loads(lines[-1][len("KBN-REPORT ") :])


def test_mirrored_strategy_equals_one_device():
    report = _report("mirrored_check.py", _env())
    assert report["replicas"] == 2
    synced = report["synchronized"]
    # A global batch of 60 split over 2 replicas: the same outputs, gradients
    # and moving statistics as one device with the batch of 60.
    for key in ("outputs", "gradients", "moving_mean"):
        assert synced[key] < 1e-5, (key, synced)
    assert synced["moving_variance"] < 1e-5 * 16  # variances of data with std 4
    assert synced["replicas_agree"]
    # Unsynchronized, each replica normalizes with its own half.
    unsynced = report["unsynchronized"]
    assert unsynced["outputs"] > 0.1 and unsynced["gradients"] > 0.01
    assert not unsynced["replicas_agree"]


def test_two_workers_end_with_identical_state(tmp_path):
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    workers = []
    for index in range(2):
        config = json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": index}}
        )
        workers.append(
            subprocess.Popen(
                [
                    sys.executable,
                    os.path.join(HERE, "multiworker_worker.py"),
                    str(tmp_path),
                ],
                env=_env(TF_CONFIG=config),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = []
    for worker in workers:
        try:
            out, err = worker.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            for w in workers:
                w.kill()
            raise
        outputs.append(out + err[-3000:])
        assert worker.returncode == 0, "\n".join(outputs)
    states = [np.load(tmp_path / f"worker{i}.npz") for i in range(2)]
    single = np.load(tmp_path / "single0.npz")
    for key in states[0].files:
        np.testing.assert_array_equal(states[0][key], states[1][key])
        np.testing.assert_allclose(states[0][key], single[key], rtol=1e-5, atol=1e-5)


def test_a_batch_the_replicas_do_not_divide():
    class TwoReplicas:
        num_replicas_in_sync = 2

    with pytest.raises(ValueError, match="Received: global_batch_size=61"):
        distributed.replica_batch_size(61, TwoReplicas())
    assert distributed.replica_batch_size(60, TwoReplicas()) == 30


def test_bad_strategy_names():
    with pytest.raises(ValueError, match="Received: strategy='horovod'"):
        distributed.make_strategy("horovod")


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TF only")
def test_multiworker_without_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="Received: no TF_CONFIG"):
        distributed.make_strategy("multiworker")


def test_jax_data_parallel_statistics_are_global_by_construction():
    report = _report("jax_data_parallel_check.py", {**os.environ, "PYTHONPATH": ROOT})
    assert report["devices"] == 2
    for mode in ("unsynchronized", "synchronized"):
        assert report[mode]["weights"] < 1e-5 and report[mode]["moving_mean"] < 1e-5
