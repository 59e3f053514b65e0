"""Data-parallel training: tf.distribute (2 logical CPUs, 2 workers) and several
JAX processes on 127.0.0.1."""

import json
import os
import re
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from kbn import distributed
from tests.helpers import free_ports
from tests.helpers import read_scalars

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


@pytest.mark.slow  # processes
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


@pytest.mark.slow  # processes
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


@pytest.mark.slow  # processes
def test_jax_data_parallel_statistics_are_global_by_construction():
    report = _report("jax_data_parallel_check.py", {**os.environ, "PYTHONPATH": ROOT})
    assert report["devices"] == 2
    for mode in ("unsynchronized", "synchronized"):
        assert report[mode]["weights"] < 1e-5 and report[mode]["moving_mean"] < 1e-5


# Several JAX processes on 127.0.0.1 (kbn.distributed.initialize_jax_processes).


def _start(args, **popen):
    return subprocess.Popen(
        [sys.executable, *map(str, args)],
        cwd=ROOT,
        env={
            **os.environ,
            "KERAS_BACKEND": "jax",
            "KBN_OFFLINE": "1",
            "PYTHONPATH": ROOT,
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def _finish(processes, timeout):
    """Waits for every process; kills them all if any is still running at the
    end (or the test fails); returns their (returncode, stdout, stderr)."""
    deadline = time.monotonic() + timeout
    results = []
    try:
        for process in processes:
            out, err = process.communicate(timeout=max(deadline - time.monotonic(), 1))
            results.append((process.returncode, out, err))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    return results


@pytest.mark.slow  # processes
def test_two_jax_processes_train_as_one(tmp_path):
    """Two processes, each feeding half of every global batch of 60 through
    `fit`, end with the same weights, moving statistics and validation curve
    as each other and as one process trained on the same global batches."""
    script = os.path.join(HERE, "jax_process.py")
    coordinator = f"127.0.0.1:{free_ports(1)[0]}"
    processes = [_start([script, tmp_path, 1, 0])] + [
        _start([script, tmp_path, 2, i, coordinator]) for i in range(2)
    ]
    results = _finish(processes, timeout=240)
    for code, out, err in results:
        assert code == 0, out[-2000:] + err[-3000:]
    single = np.load(tmp_path / "state1_0.npz")
    first, second = (np.load(tmp_path / f"state2_{i}.npz") for i in range(2))
    assert sorted(single.files) == sorted(first.files)
    assert any("moving_mean" in key for key in single.files)
    for key in single.files:
        # The processes hold one replicated array: bit for bit the same.
        np.testing.assert_array_equal(first[key], second[key], err_msg=key)
        # Against one process: the same sums, added in another order (the
        # all-reduce adds two half-batch partial sums) in float32, over 20
        # steps: differences of a few float32 roundings of values of order 1.
        np.testing.assert_allclose(
            first[key], single[key], rtol=1e-5, atol=1e-5, err_msg=key
        )
    np.testing.assert_array_equal(first["curve_steps"], [10, 20])
    # Only process 0 wrote TensorBoard events: one event file, in its folder.
    events = list((tmp_path / "logs2").rglob("events.out.tfevents.*"))
    assert len(events) == 1, events


@pytest.mark.slow  # processes
def test_a_killed_jax_process_stops_the_other_with_a_clear_error(tmp_path):
    """Kill process 1 during training: process 0 exits with status 1 and one
    error line, stopped by the dead process's closed connections at its next
    all-reduce, not by the heartbeat timeout (which would abort it with
    another message)."""
    heartbeat = 60
    coordinator = f"127.0.0.1:{free_ports(1)[0]}"
    recipe = os.path.join(ROOT, "recipes", "distributed.py")
    common = [
        recipe, "--strategy", "jax-multiprocess", "--num-processes", 2,
        "--batches", 1_000_000, "--batches-per-sample", 20,
        "--heartbeat-timeout", heartbeat, "--coordinator", coordinator,
        "--log-dir", tmp_path, "--initialization-timeout", 200,
    ]  # fmt: skip
    processes = [_start([*common, "--process-id", i]) for i in range(2)]
    try:
        lines = []
        for line in processes[0].stdout:  # until training runs
            lines.append(line)
            if line.startswith("Trained the first"):
                break
        assert lines and lines[-1].startswith("Trained the first"), "".join(lines)
        processes[1].kill()
        processes[0].wait(timeout=heartbeat + 60)  # a bound, should it hang
    finally:
        results = _finish(processes, timeout=5)
    code, _, err = results[0]
    assert code == 1, err[-3000:]
    assert (
        "error: process 0 of 2: training stopped: another process failed or "
        "cannot be reached"
    ) in err, err[-3000:]
    assert re.search(r"Connection (closed|reset) by peer", err), err[-3000:]
    # What process 0 wrote before is intact: its event file reads back.
    (events,) = tmp_path.rglob("events.out.tfevents.*")
    assert [step for step, _ in read_scalars(events.parent)["validation/accuracy"]][
        :1
    ] == [20]


@pytest.mark.slow  # processes
def test_a_process_that_cannot_reach_the_coordinator(tmp_path):
    port = free_ports(1)[0]  # nobody listens there
    result = subprocess.run(
        [
            sys.executable, os.path.join(ROOT, "recipes", "distributed.py"),
            "--strategy", "jax-multiprocess", "--process-id", "1",
            "--coordinator", f"127.0.0.1:{port}", "--initialization-timeout", "2",
            "--log-dir", str(tmp_path),
        ],
        env={**os.environ, "KBN_OFFLINE": "1", "PYTHONPATH": ROOT},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr[-3000:]
    assert (
        f"error: process 1 of 2: Could not reach the coordinator (process 0) at "
        f"127.0.0.1:{port} within 2 s"
    ) in result.stderr, result.stderr[-3000:]


def test_process_shards_split_the_batch_axis():
    blocks = [(np.arange(12).reshape(2, 6), np.arange(12).reshape(2, 6) * 10)]
    shards = [
        next(distributed.process_shards(iter(blocks), index=i, count=3))
        for i in range(3)
    ]
    np.testing.assert_array_equal(shards[1][0], [[2, 3], [8, 9]])
    np.testing.assert_array_equal(
        np.concatenate([s[1] for s in shards], axis=1), blocks[0][1]
    )
    with pytest.raises(ValueError, match="Received: batch_size=6"):
        next(distributed.process_shards(iter(blocks), index=0, count=4))


def test_block_layout_splits_axis_1():
    layout = distributed.BlockDataParallel(
        devices=keras.distribution.list_devices()[:1]
    )
    assert layout.get_data_layout((5, 60)).axes == (None, "batch")
    assert layout.get_data_layout((5, 60, 784)).axes == (None, "batch", None)
    assert layout.get_data_layout((60,)).axes == ("batch",)


def test_bad_coordinator_addresses():
    with pytest.raises(ValueError, match="Received: coordinator='host'"):
        distributed.parse_address("host")
    assert distributed.parse_address("10.0.0.1:1234") == ("10.0.0.1", 1234)


@pytest.mark.slow  # processes
def test_jax_processes_with_different_data_stop_with_a_clear_error(tmp_path):
    # An npz in Keras's format, other than the shipped subset that the
    # other process falls back to (offline, without Keras's cache).
    subset = np.load(os.path.join(ROOT, "kbn_study", "resources", "mnist_5k.npz"))
    images, labels = (np.concatenate([subset[k]] * 2) for k in ("images", "labels"))
    other = tmp_path / "other.npz"
    np.savez(
        other,
        x_train=images[:8000],
        y_train=labels[:8000],
        x_test=images[8000:],
        y_test=labels[8000:],
    )
    coordinator = f"127.0.0.1:{free_ports(1)[0]}"
    common = [
        os.path.join(ROOT, "recipes", "distributed.py"),
        "--strategy", "jax-multiprocess", "--batches", 20,
        "--batches-per-sample", 10, "--coordinator", coordinator,
        "--log-dir", tmp_path / "logs",
        # Both processes start JAX beside the suite's other work; a CI run
        # once had process 1 join after the default 60 s.
        "--initialization-timeout", 200,
    ]  # fmt: skip
    processes = [
        _start([*common, "--process-id", 0]),
        _start([*common, "--process-id", 1, "--data", other]),
    ]
    results = _finish(processes, timeout=240)
    for index, (code, _, err) in enumerate(results):
        assert code == 1, err[-3000:]
        assert (
            f"error: process {index} of 2: the processes loaded different data"
        ) in err, err[-3000:]
    assert not (tmp_path / "logs").exists()
