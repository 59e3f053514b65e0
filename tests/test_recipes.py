"""The recipes as a user runs them: real processes, outputs read back."""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import matplotlib.image
import pandas as pd
import pytest

from tests.helpers import ROOT
from tests.helpers import alive
from tests.helpers import children_of
from tests.helpers import command_line
from tests.helpers import free_ports
from tests.helpers import read_back_run
from tests.helpers import read_scalars
from tests.helpers import run_command
from tests.helpers import run_recipe

SUBSET = "mnist-subset"


def _startup_noise(text):
    return [
        line
        for line in text.splitlines()
        if line.startswith(("I0000", "W0000", "E0000", "WARNING: All log messages"))
    ]


@pytest.mark.slow
def test_compare_default_run_batch_norm_wins(compare_default_run):
    """The README's main job: ReLU, lr 0.01, good weights, 2,000 batches."""
    result, log_dir, _ = compare_default_run
    out = result.stdout
    assert "Data: mnist-subset: train 3,929 / validation 357 / test 714" in out
    assert "Data source: MNIST subset: 5,000 digits shipped with kbn_study" in out
    assert "The study (full MNIST" in out
    # Quiet start-up: one line about the data, no TensorFlow/CUDA log lines.
    assert not _startup_noise(result.stdout + result.stderr), result.stderr[-2000:]
    assert result.stderr.strip() == "" or "Traceback" not in result.stderr
    run_dir = log_dir / f"relu_lr0.01_good_2000x60_seed0_{SUBSET}"
    summary = pd.read_csv(run_dir / "results.csv").set_index("network")
    final = summary["final_validation_accuracy"]
    # The figures themselves: tests/test_readme_figures.py against the README.
    assert final["with_bn"] > final["without_bn"] + 0.05
    assert final["with_bn"] > 0.9
    for network in ("without_bn", "with_bn"):
        assert f"{final[network]:.4f}" in out
    curves = pd.read_csv(run_dir / "curves.csv")
    assert curves["step"].max() == 2000 and len(curves) == 2 * 40
    assert matplotlib.image.imread(run_dir / "accuracy.png").ndim == 3


@pytest.mark.slow
def test_compare_on_tensorflow_with_sigmoid_is_quiet(tmp_path):
    # In the command's own process (--workers 0): a worker starts up through
    # the same code (kbn_study.cli.start), which the JAX run checks too.
    result = run_recipe(
        "compare.py", "--activation", "sigmoid", "--learning-rate", "1",
        "--batches", "100", "--batches-per-sample", "25", "--workers", "0",
        "--log-dir", tmp_path, backend="tensorflow",
    )  # fmt: skip
    name = f"sigmoid_lr1_good_100x60_sample25_seed0_{SUBSET}"
    assert f"Backend: tensorflow; run: {name}" in result.stdout
    assert not _startup_noise(result.stdout + result.stderr), result.stderr[-2000:]
    curves = pd.read_csv(tmp_path / name / "curves.csv")
    assert sorted(curves["step"].unique()) == [25, 50, 75, 100]


def _imported_top_level(stderr):
    """Top-level packages in the `-X importtime` lines of `stderr`."""
    return {
        line.split("|")[-1].strip().split(".")[0]
        for line in stderr.splitlines()
        if line.startswith("import time:")
    }


def test_help_is_fast_and_imports_no_framework():
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "recipes/compare.py", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0 and "--learning-rate" in result.stdout
    imported = _imported_top_level(result.stderr)
    assert not imported & {"keras", "tensorflow", "jax", "numpy", "pandas"}


def test_a_corrupt_data_file_fails_before_keras_is_imported(tmp_path):
    """`--data` is read with NumPy alone before the command imports Keras:
    one error line, status 1, no framework loaded, nothing written."""
    corrupt = tmp_path / "mnist.npz"
    corrupt.write_bytes(b"PK\x03\x04" + bytes(200))  # a zip header, then nothing
    result = subprocess.run(
        [
            sys.executable, "-X", "importtime", "recipes/compare.py",
            "--data", str(corrupt), "--log-dir", str(tmp_path / "logs"),
        ],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    errors = [
        line
        for line in result.stderr.splitlines()
        if line.strip() and not line.startswith("import time:")
    ]
    assert result.returncode == 1, result.stderr[-3000:]
    assert len(errors) == 1 and errors[0].startswith("compare.py: error: ")
    assert f"MNIST file {corrupt}" in errors[0]
    imported = _imported_top_level(result.stderr)
    assert "numpy" in imported
    assert not imported & {"keras", "tensorflow", "jax", "pandas"}
    assert sorted(os.listdir(tmp_path)) == ["mnist.npz"]


@pytest.mark.slow
def test_seed_grid_interrupted_then_resumed(tmp_path):
    """Two configurations x two seeds x two networks on two workers, Ctrl-C
    once three runs are finished."""
    args = [
        "--configs", "relu:2:good,sigmoid:1:good:2000",
        "--seeds", "2",
        "--fraction", "0.005",
        "--out", str(tmp_path),
    ]  # fmt: skip
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONUNBUFFERED": "1"}
    recipe = os.path.join(ROOT, "recipes", "seed_grid.py")
    process = subprocess.Popen(
        [sys.executable, recipe, *args, "--workers", "2"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Ctrl-C (to the parent alone) once the third run has finished: the
    # runs in progress in both workers must be dropped, the workers ended.
    seen = []
    for line in process.stdout:
        seen.append(line)
        if line.startswith("[3/8] "):
            children = {pid: command_line(pid) for pid in children_of(process.pid)}
            process.send_signal(signal.SIGINT)
            break
    out, err = process.communicate(timeout=120)
    out = "".join(seen) + out
    assert process.returncode == 130, out[-3000:] + err[-3000:]
    # The two workers (multiprocessing's "spawn" children) are gone when the
    # parent has exited; its resource tracker follows within moments.
    spawned = [pid for pid, line in children.items() if "spawn_main" in line]
    assert len(spawned) == 2, children
    assert not any(alive(pid) for pid in spawned), "a worker survived"
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [line for pid, line in children.items() if alive(pid)]
    assert "Stopping: runs in progress are dropped" in err
    finished = [line for line in out.splitlines() if line.startswith("[")]
    count = len(finished)
    assert 3 <= count < 8, out[-3000:]
    assert f"Interrupted. {count} finished runs saved" in out
    assert "run the same command again to resume" in out
    kept = pd.read_csv(tmp_path / "results.csv")
    assert len(kept) == count

    # Resumed in this process (the runs' identity does not depend on where
    # they ran; what is checked is what the grid keeps and adds).
    resumed = run_command("seed_grid.py", *args, "--workers", "0")
    assert f"Grid: 8 runs, {count} already finished" in resumed.stdout
    final = pd.read_csv(tmp_path / "results.csv")
    assert len(final) == 8
    pd.testing.assert_frame_equal(final.iloc[:count], kept)
    key = ["activation", "learning_rate", "weights", "study_batches", "seed", "network"]
    assert not final.duplicated(key).any()
    # 250 batches of relu:2 (5 samples), 10 of sigmoid:1:2000 (1 sample).
    assert sorted(final["batches"].unique()) == [10, 250]
    curves = pd.read_csv(tmp_path / "curves.csv")
    assert curves.groupby(key).size().sort_values().tolist() == [1] * 4 + [5] * 4

    summary = (tmp_path / "summary.md").read_text()
    assert "0.005 of the study's length: not comparable" in summary
    assert "2 seeds" in summary
    assert summary.count("| relu ") == 2 and summary.count("| sigmoid ") == 2
    assert "250 of 50,000" in summary and "10 of 2,000" in summary
    assert "0.0986" in summary  # the study's relu lr 2 without BN, beside ours
    table = pd.read_csv(tmp_path / "summary.csv")
    assert table["runs"].tolist() == [2, 2, 2, 2]
    image = matplotlib.image.imread(tmp_path / "overview.png")
    assert image.shape[1] > image.shape[0] > 200
    run = f"relu_lr2_good_250x60_seed1_{SUBSET}"
    assert "validation/accuracy" in read_scalars(tmp_path / run / "with_bn")


@pytest.mark.slow
def test_benchmark_table_is_complete(tmp_path):
    result = run_recipe(
        "benchmark.py", "--batches", "500", "--repeats", "1", "--suite", "mlp",
        "--backends", "jax", "--out", tmp_path,
    )  # fmt: skip
    frame = pd.read_csv(tmp_path / "benchmark.csv")
    assert len(frame["measurement"].unique()) == len(frame) == 10
    assert set(frame["backend"]) == {"jax"}
    markdown = (tmp_path / "benchmark.md").read_text()
    for ratio in (
        "kbn BN path / hand-written BN loop (jax)",
        "kbn BatchNorm / keras BatchNormalization (kbn path)",
        "BN / no BN (kbn path)",
        "validation recorder overhead",
    ):
        assert ratio in markdown and ratio in result.stdout


@pytest.mark.slow
def test_distributed_mirrored_equals_one_device(tmp_path):
    """Two logical CPUs (a process of its own: they must be set before
    TensorFlow starts) against one device (in this process, on TensorFlow)."""
    assert keras.backend.backend() == "tensorflow"
    finals = {}
    args = ["--batches", "100", "--batches-per-sample", "50", "--log-dir", tmp_path]
    run_command("distributed.py", "--strategy", "none", *args)
    run_recipe("distributed.py", "--strategy", "mirrored", *args, backend="tensorflow")
    for strategy in ("none", "mirrored"):
        name = f"distributed_{strategy}_relu_lr0.01_good_100x60_seed0_{SUBSET}"
        finals[strategy] = pd.read_csv(tmp_path / name / "results.csv").iloc[0]
        read_back_run(tmp_path / name, ["with_bn"], [50, 100])
    for key in ("final_validation_accuracy", "test_accuracy"):
        assert finals["none"][key] == finals["mirrored"][key]


@pytest.mark.slow
def test_distributed_two_jax_processes_started_by_one_command(tmp_path):
    result = run_recipe(
        "distributed.py", "--strategy", "jax-multiprocess", "--num-processes", "2",
        "--batches", "20", "--batches-per-sample", "10", "--log-dir", tmp_path,
        timeout=300,
    )  # fmt: skip
    # Process 0 prints the run's lines, once; the all-reduces of the MLP's
    # step: its 99,400 + 600 trainable weights (gradients, float32) and more.
    assert result.stdout.count("Strategy: jax-multiprocess, 2 process(es)") == 1
    assert result.stdout.count("with_bn:") == 1  # one progress line
    assert "All-reduced per batch:" in result.stdout
    name = f"distributed_jax2proc_relu_lr0.01_good_20x60_sample10_seed0_{SUBSET}"
    read_back_run(tmp_path / name, ["with_bn"], [10, 20])
    assert [p.name for p in tmp_path.iterdir()] == [name]
    assert len(list((tmp_path / name).rglob("events.out.tfevents.*"))) == 1
    config = json.loads((tmp_path / name / "config.json").read_text())
    assert config["processes"] == 2 and config["devices"] == 2
    assert config["all_reduced_per_batch"]["bytes"] >= 4 * 100_000


@pytest.mark.slow
def test_distributed_two_workers_with_the_same_command(tmp_path):
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    processes = []
    for index in range(2):
        config = json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": index}}
        )
        processes.append(
            subprocess.Popen(
                [
                    sys.executable, os.path.join(ROOT, "recipes", "distributed.py"),
                    "--strategy", "multiworker", "--batches", "20",
                    "--batches-per-sample", "10",
                    "--log-dir", str(tmp_path / f"w{index}"),
                ],
                cwd=ROOT,
                env={**os.environ, "TF_CONFIG": config},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )  # fmt: skip
    outs = [p.communicate(timeout=300) for p in processes]
    for process, (out, err) in zip(processes, outs):
        assert process.returncode == 0, out[-2000:] + err[-2000:]
    assert "2 replica(s), global batch 60 = 2 x 30" in outs[0][0]
    # Worker 0 writes the results; worker 1 nothing (its folder was only
    # checked, and the check leaves nothing behind).
    name = f"distributed_multiworker_relu_lr0.01_good_20x60_sample10_seed0_{SUBSET}"
    assert (tmp_path / "w0" / name / "results.csv").exists()
    assert not (tmp_path / "w1").exists()
