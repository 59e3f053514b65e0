"""The commands' plumbing, run in this process through their `main(argv)`.

Folder naming, flags, bad inputs, files written and read back: what a user
of `python recipes/<name>.py` sees, without a process start-up per check
(`tests.helpers.run_command`). The runs train on this process's backend at
tiny settings; tests/test_recipes.py runs the real processes that need one.
"""

import json
import os
import zipfile

import keras
import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from tests.helpers import read_back_run
from tests.helpers import read_scalars
from tests.helpers import run_command

SUBSET = "mnist-subset"


def _fake_mnist_file(path, seed, n_train=5_600, n_test=200):
    """An mnist.npz in Keras's format: learnable random digits of 10 classes."""
    rng = np.random.default_rng(seed)
    prototypes = rng.integers(0, 256, size=(10, 28, 28))
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        labels = rng.integers(0, 10, size=n)
        noise = rng.integers(-40, 40, size=(n, 28, 28))
        arrays[f"x_{split}"] = np.clip(prototypes[labels] + noise, 0, 255).astype(
            "uint8"
        )
        arrays[f"y_{split}"] = labels.astype("uint8")
    np.savez(path, **arrays)
    return path


@pytest.mark.slow
def test_runs_on_other_data_keep_both_results(tmp_path):
    """Same settings, other data: another folder; the same again: replaced."""
    data_a = _fake_mnist_file(tmp_path / "a.npz", seed=1)
    data_b = _fake_mnist_file(tmp_path / "b.npz", seed=2)
    logs = tmp_path / "logs"
    # In this process (--workers 0): what is checked is where the results go.
    args = ["--batches", "20", "--batches-per-sample", "10", "--workers", "0"]
    args += ["--log-dir", logs]
    outs = [
        run_command("compare.py", *args, *extra).stdout
        for extra in (
            ["--data", data_a],
            ["--data", data_b],  # only the data file differs
            ["--data", data_a, "--dataset", "fashion_mnist"],  # only the dataset
        )
    ]
    folders = sorted(p.name for p in logs.iterdir())
    assert len(folders) == 3, folders
    configs = [json.loads((logs / f / "config.json").read_text()) for f in folders]
    assert len({c["data_tag"] for c in configs}) == 3
    assert {c["config"]["dataset"] for c in configs} == {"mnist", "fashion_mnist"}
    assert not any("Replacing" in out for out in outs)
    again = run_command("compare.py", *args, "--data", data_a).stdout
    assert "Replacing the results of an earlier run of this configuration" in again
    assert sorted(p.name for p in logs.iterdir()) == folders


def _bad_files(tmp_path):
    random_bytes = tmp_path / "random.npz"
    random_bytes.write_bytes(np.random.default_rng(0).bytes(4096))
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    not_a_model = tmp_path / "not_a_model.keras"
    with zipfile.ZipFile(not_a_model, "w") as archive:
        archive.writestr("hello.txt", "a zip archive, but not a Keras model")
    corrupt_model = tmp_path / "corrupt.keras"
    corrupt_model.write_bytes(b"\x00" * 100)
    return {
        "random": str(random_bytes),
        "file": str(a_file),
        "not_a_model": str(not_a_model),
        "corrupt_model": str(corrupt_model),
        "missing": str(tmp_path / "missing.npz"),
        "unwritable": "/proc/kbn-nope",
    }


# (recipe, arguments, exit status, text the one error line must contain).
# {random}, {file}, ... are replaced by the files of `_bad_files`; every case
# also gets an output folder that must not be created.
BAD_INPUT = [
    ("compare.py", ["--seed", "-1"], 2, "argument --seed: expected a non-negative integer. Received: '-1'"),
    ("compare.py", ["--batches", "-3"], 2, "Received: '-3'"),
    ("compare.py", ["--batches-per-sample", "0"], 2, "Received: '0'"),
    ("compare.py", ["--learning-rate", "0"], 2, "argument --learning-rate: expected a positive number. Received: '0'"),
    ("compare.py", ["--learning-rate", "nan"], 2, "Received: 'nan'"),
    ("compare.py", ["--activation", "tanh"], 2, "argument --activation: invalid choice: 'tanh'"),
    ("compare.py", ["--dataset", "cifar"], 2, "invalid choice: 'cifar'"),
    ("compare.py", ["--batches", "10", "--full"], 2, "not allowed with argument"),
    ("compare.py", ["--log-dir", "{file}"], 2, "argument --log-dir: expected a folder, but it is a file. Received: '{file}'"),
    ("compare.py", ["--log-dir", "{unwritable}"], 2, "argument --log-dir: cannot write there"),
    ("compare.py", ["--data", "{missing}"], 2, "argument --data: no such file or folder. Received: '{missing}'"),
    ("compare.py", ["--data", "{random}"], 1, "Corrupt MNIST file {random}: expected an .npz archive"),
    ("seed_grid.py", ["--seeds", "0"], 2, "Received: '0'"),
    ("seed_grid.py", ["--configs", "relu:3:good"], 2, "Received: pattern='relu:3:good'"),
    ("seed_grid.py", ["--fraction", "0"], 2, "argument --fraction: expected a number in (0, 1]. Received: '0'"),
    ("seed_grid.py", ["--fraction", "2"], 2, "Received: '2'"),
    ("seed_grid.py", ["--out", "{file}"], 2, "argument --out: expected a folder, but it is a file"),
    ("seed_grid.py", ["--data", "{random}"], 1, "Corrupt MNIST file {random}"),
    ("seed_grid.py", ["--workers", "-2"], 2, "argument --workers: expected a non-negative integer. Received: '-2'"),
    ("seed_grid.py", ["--ray", "--workers", "2"], 2, "argument --workers: not allowed with argument --ray"),
    ("seed_grid.py", ["--time-workers", "1"], 2, "argument --time-workers: expected two worker counts such as 1,2. Received: '1'"),
    ("compare.py", ["--workers", "-1"], 2, "argument --workers: expected a non-negative integer. Received: '-1'"),
    ("inference_modes.py", ["--batches", "0"], 2, "Received: '0'"),
    ("inference_modes.py", ["--single-examples", "x"], 2, "Received: 'x'"),
    ("inference_modes.py", ["--save-model-as", "m.h5"], 2, "expected a path ending in .keras. Received: 'm.h5'"),
    ("inference_modes.py", ["--save-model-as", "{unwritable}/m.keras"], 2, "argument --save-model-as: cannot write there"),
    ("inference_modes.py", ["--restore-from", "{missing}.keras"], 2, "argument --restore-from: no such file. Received: '{missing}.keras'"),
    ("inference_modes.py", ["--restore-from", "{corrupt_model}"], 2, "not a .keras file (a .keras model is a zip archive; this file is not). Received: '{corrupt_model}'"),
    ("inference_modes.py", ["--restore-from", "{not_a_model}"], 2, "argument --restore-from: not a .keras file (a .keras model is a zip archive holding config.json and model.weights.h5; this one holds ['hello.txt']). Received: '{not_a_model}'"),
    ("convnet.py", ["--depth", "0"], 2, "Received: '0'"),
    ("keras_models.py", ["--variants", "kbn_bn,bogus"], 2, "Received: 'kbn_bn,bogus'"),
    ("keras_models.py", ["--ghost-batch-size", "5"], 2, "a divisor of --batch-size (32) smaller than it. Received: 5"),
    ("keras_models.py", ["--batches", "70"], 2, "a multiple of --batches-per-sample (50). Received: 70"),
    ("convnet.py", ["--learning-rate", "-1"], 2, "Received: '-1'"),
    ("convnet.py", ["--log-dir", "{file}"], 2, "expected a folder, but it is a file"),
    ("sequential_mnist.py", ["--units", "0"], 2, "Received: '0'"),
    ("sequential_mnist.py", ["--momentum", "1"], 2, "Received: '1'"),
    ("sequential_mnist.py", ["--data", "{random}"], 1, "Corrupt MNIST file {random}"),
    ("distributed.py", ["--strategy", "ring"], 2, "invalid choice: 'ring'"),
    ("distributed.py", ["--devices", "0"], 2, "Received: '0'"),
    ("distributed.py", ["--global-batch-size", "61", "--batches", "10"], 2, "Received: global_batch_size=61"),
    ("distributed.py", ["--process-id", "0"], 2, "only with --strategy jax-multiprocess"),
    ("distributed.py", ["--strategy", "jax-multiprocess", "--process-id", "2"], 2, "Received: process_id=2"),
    ("distributed.py", ["--strategy", "jax-multiprocess", "--process-id", "1"], 2, "Received: no --coordinator"),
    ("distributed.py", ["--strategy", "jax-multiprocess", "--process-id", "1", "--coordinator", "host"], 2, "Received: coordinator='host'"),
    ("distributed.py", ["--strategy", "jax-multiprocess", "--unsynchronized"], 2, "whatever the layer says"),
    ("distributed.py", ["--anchor"], 2, "argument --anchor: only with --strategy jax-multiprocess"),
    ("distributed.py", ["--strategy", "jax-multiprocess", "--anchor", "--network", "convnet"], 2, "Received: network='convnet'"),
    ("distributed.py", ["--strategy", "jax-multiprocess", "--anchor", "--scaling"], 2, "argument --anchor: the anchor is the MLP's step, measured on its own. Received: --scaling"),
    ("distributed.py", ["--network", "convnet"], 2, "argument --network: only with --strategy jax-multiprocess"),
    ("benchmark.py", ["--backends", "torch"], 2, "argument --backends: expected some of ('jax', 'tensorflow'). Received: 'torch'"),
    ("benchmark.py", ["--batches", "100"], 2, "expected a multiple of 500"),
    ("benchmark.py", ["--out", "{unwritable}"], 2, "argument --out: cannot write there"),
    ("covariate_shift.py", ["--unit", "100"], 2, "argument --unit: expected a unit of the last hidden layer, 0 to 99. Received: 100"),
    ("covariate_shift.py", ["--probe-size", "0"], 2, "Received: '0'"),
    ("covariate_shift.py", ["--data", "{random}"], 1, "Corrupt MNIST file {random}"),
    ("small_batches.py", ["--micro-batches", "7"], 2, "argument --micro-batches: expected distinct divisors of the batch size 60, comma-separated, such as 2,4. Received: '7'"),
    ("small_batches.py", ["--classes-per-batch", "7"], 2, "argument --classes-per-batch: expected a divisor of the batch size 60, at most 10 classes. Received: 7"),
    ("small_batches.py", ["--model", "resnet"], 2, "invalid choice: 'resnet'"),
    ("small_batches.py", ["--log-dir", "{file}"], 2, "expected a folder, but it is a file"),
]  # fmt: skip
OUTPUT_FLAG = {"seed_grid.py": "--out", "benchmark.py": "--out"}


@pytest.mark.parametrize(
    "recipe,args,status,message",
    BAD_INPUT,
    ids=[f"{r}:{' '.join(a)}" for r, a, _, _ in BAD_INPUT],
)
def test_bad_input_is_one_line_and_changes_nothing(
    tmp_path, recipe, args, status, message
):
    files = _bad_files(tmp_path)
    args = [a.format(**files) for a in args]
    message = message.format(**files)
    out_dir = tmp_path / "out"
    flag = OUTPUT_FLAG.get(recipe, "--log-dir")
    extra = [] if flag in args else [flag, str(out_dir)]
    before = sorted(os.listdir(tmp_path))
    result = run_command(recipe, *args, *extra, check=False)
    assert result.returncode == status, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith(f"{recipe}: error: ")
    assert message in lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    assert sorted(os.listdir(tmp_path)) == before  # no results folder


@pytest.mark.parametrize(
    "recipe",
    [
        "compare.py",
        "seed_grid.py",
        "inference_modes.py",
        "convnet.py",
        "sequential_mnist.py",
        "distributed.py",
        "benchmark.py",
        "covariate_shift.py",
        "small_batches.py",
    ],
)
def test_every_flag_has_a_description_and_its_default(recipe):
    result = run_command(recipe, "--help")
    help_text = result.stdout.split("options:", 1)[1]
    # Each flag's entry: the flag line and its indented description lines.
    entries, current = [], None
    for line in help_text.splitlines():
        if line.startswith("  -"):
            current = [line]
            entries.append(current)
        elif current is not None and line.strip():
            current.append(line)
    assert len(entries) > 3
    for entry in entries:
        text = " ".join(" ".join(entry).split())
        flag = text.split()[0].rstrip(",")
        if flag in ("-h",):
            continue
        described = text.split("  ", 1)[-1] if "  " in " ".join(entry) else ""
        assert described, f"{recipe} {flag} has no description"
        store_true = flag in (
            "--full",
            "--pixels",
            "--permute",
            "--unsynchronized",
            "--scaling",
            "--anchor",
        )
        if not store_true:
            assert "default" in text, f"{recipe} {flag}: {text}"
        assert text.count("(default:") <= 1, f"{recipe} {flag}: {text}"


@pytest.mark.slow
def test_inference_modes_constant_prediction_and_restore(tmp_path):
    model_path = tmp_path / "bn.keras"
    trained = run_command(
        "inference_modes.py",
        "--batches", "300",
        "--single-examples", "30",
        "--log-dir", tmp_path / "a",
        "--save-model-as", model_path,
    )  # fmt: skip
    run_dir = tmp_path / "a" / f"inference_modes_relu_lr0.01_good_300x60_seed0_{SUBSET}"
    first = json.loads((run_dir / "inference_modes.json").read_text())
    # Batch statistics of a single image: one class for every image.
    assert first["distinct_single_predictions_batch_statistics"] == 1
    assert len(set(first["single_predictions_population_statistics"])) > 3
    assert first["single_accuracy_population_statistics"] > 0.5
    assert "Why: With batch statistics" in trained.stdout
    # Every file it wrote is named; the layers' warning is a sentence, not a
    # UserWarning with a source line.
    for name in ("inference_modes.json", "accuracy.png", "results.csv", "curves.csv"):
        assert str(run_dir / name) in trained.stdout
    assert str(model_path) in trained.stdout
    assert "UserWarning" not in trained.stderr
    if keras.backend.backend() == "jax":
        # The layers warn where a batch of one is a static shape: JAX (the
        # recipe's backend). TensorFlow traces the pass again with an unknown
        # batch size, and the layer skips the update without a warning.
        assert "kbn warned" in trained.stdout

    restored = run_command(
        "inference_modes.py",
        "--single-examples", "30",
        "--log-dir", tmp_path / "b",
        "--restore-from", model_path,
    )  # fmt: skip
    assert f"Restored {model_path}" in restored.stdout
    second = json.loads(
        (
            tmp_path / "b" / f"inference_modes_bn_{SUBSET}" / "inference_modes.json"
        ).read_text()
    )
    for key in (
        "test_accuracy_batch_statistics",
        "test_accuracy_population_statistics",
        "single_predictions_population_statistics",
    ):
        assert second[key] == first[key]


@pytest.mark.slow
def test_convnet_tiny(tmp_path):
    result = run_command(
        "convnet.py", "--depth", "3", "--batches", "20", "--batches-per-sample", "10",
        "--batch-size", "16", "--log-dir", tmp_path,
    )  # fmt: skip
    assert "Published (20 layers" in result.stdout
    name = f"convnet_depth3_width4_adam0.002_20x16_sample10_seed0_{SUBSET}"
    read_back_run(tmp_path / name, ["without_bn", "with_bn"], [10, 20])


@pytest.mark.slow  # a ResNet compiled twice
def test_keras_models_tiny(tmp_path):
    """A ResNet built with Keras's batch norm, as is and converted to kbn's,
    from the same weights on the same batches."""
    result = run_command(
        "keras_models.py", "--variants", "kbn_bn,keras_bn", "--batches", "4",
        "--batch-size", "8", "--batches-per-sample", "2", "--workers", "0",
        "--log-dir", tmp_path,
    )  # fmt: skip
    name = f"resnet_adam0.001_4x8_sample2_seed0_{SUBSET}"
    read_back_run(tmp_path / name, ["keras_bn", "kbn_bn"], [2, 4])
    assert "Backend: " in result.stdout
    curves = pd.read_csv(tmp_path / name / "curves.csv").pivot(
        index="step", columns="network", values="validation_accuracy"
    )
    # The same maths in float32: at most one of the validation images may
    # fall the other side of a tie.
    validation_images = 357
    np.testing.assert_allclose(
        curves["kbn_bn"], curves["keras_bn"], rtol=0, atol=1.01 / validation_images
    )


@pytest.mark.slow
def test_sequential_mnist_tiny(tmp_path):
    result = run_command(
        "sequential_mnist.py", "--units", "8", "--batches", "20",
        "--batches-per-sample", "10", "--batch-size", "16", "--permute",
        "--log-dir", tmp_path,
    )  # fmt: skip
    assert "Sequences: permuted_rows, 28 steps of 28" in result.stdout
    name = f"sequential_permuted_rows_units8_adam0.001_20x16_sample10_seed0_{SUBSET}"
    read_back_run(tmp_path / name, ["lstm", "bn_lstm"], [10, 20])
    population = json.loads(
        (tmp_path / name / "population_statistics.json").read_text()
    )
    moving = pd.read_csv(tmp_path / name / "results.csv").set_index("network")
    assert population["moving_validation_accuracy"] == pytest.approx(
        moving.loc["bn_lstm", "final_validation_accuracy"]
    )
    assert population["gap_points"] == pytest.approx(
        100
        * (population["validation_accuracy"] - population["moving_validation_accuracy"])
    )
    assert "Population minus moving statistics (validation)" in result.stdout
    assert [r["network"] for r in population["networks"]] == ["lstm", "bn_lstm"]


@pytest.mark.slow
def test_sequential_mnist_permuted_pixels_tiny(tmp_path):
    """784 steps in a compiled loop, both networks; the paper's row."""
    result = run_command(
        "sequential_mnist.py", "--units", "4", "--batches", "2",
        "--batches-per-sample", "2", "--batch-size", "8", "--pixels", "--permuted",
        "--population-batches", "2", "--log-dir", tmp_path,
    )  # fmt: skip
    assert "Sequences: permuted_pixels, 784 steps of 1" in result.stdout
    name = f"sequential_permuted_pixels_units4_adam0.001_2x8_sample2_seed0_{SUBSET}"
    read_back_run(tmp_path / name, ["lstm", "bn_lstm"], [2])
    population = json.loads(
        (tmp_path / name / "population_statistics.json").read_text()
    )
    paper = {r["network"]: r["paper_test_accuracy"] for r in population["networks"]}
    assert paper == {"lstm": 0.902, "bn_lstm": 0.954}
    assert population["batches"] == 2


@pytest.mark.slow
def test_covariate_shift_tiny(tmp_path):
    result = run_command(
        "covariate_shift.py", "--batches", "40", "--batches-per-sample", "10",
        "--unit", "3", "--probe-size", "50", "--log-dir", tmp_path,
    )  # fmt: skip
    name = f"covariate_shift_sigmoid_lr0.01_good_40x60_sample10_seed0_{SUBSET}"
    run_dir = tmp_path / name
    read_back_run(run_dir, ["without_bn", "with_bn"], [10, 20, 30, 40])
    table = pd.read_csv(run_dir / "percentiles.csv")
    # Step 0 and every sample; 100 units, 3 percentiles, 2 networks.
    assert sorted(table["step"].unique()) == [0, 10, 20, 30, 40]
    assert len(table) == 2 * 5 * 100 * 3
    assert set(table["layer"]) == {"sigmoid_3"}
    drift = pd.read_csv(run_dir / "drift.csv").set_index("network")
    for network in ("without_bn", "with_bn"):
        # The drift, recomputed from the percentiles: from step 0 (a tenth
        # of 40 is nearest to 0) to 40, mean over units of |median change|.
        medians = table[(table.network == network) & (table.percentile == 50)]
        wide = medians.pivot(index="unit", columns="step", values="value")
        expected = (wide[40] - wide[0]).abs().mean()
        assert drift.loc[network, "median_drift"] == pytest.approx(expected)
        assert drift.loc[network, "from_step"] == 0
        assert f"{expected:.4f}" in result.stdout
        # The TensorBoard run of the network holds the chosen percentiles
        # (pooled over every unit) beside the accuracy, on the same steps.
        scalars = read_scalars(run_dir / network)
        events = scalars["activation_percentiles/sigmoid_3/p50"]
        assert [s for s, _ in events] == [0, 10, 20, 30, 40]
        bands = [scalars[f"activation_percentiles/sigmoid_3/p{q}"] for q in (15, 85)]
        for (_, low), (_, median), (_, high) in zip(bands[0], events, bands[1]):
            assert low <= median <= high
    image = matplotlib.image.imread(run_dir / "covariate_shift.png")
    assert image.shape[1] > 2 * image.shape[0]


@pytest.mark.slow
def test_small_batches_tiny(tmp_path):
    result = run_command(
        "small_batches.py", "--batches", "20", "--batches-per-sample", "10",
        "--seeds", "2", "--micro-batches", "4", "--log-dir", tmp_path,
    )  # fmt: skip
    name = f"small_batches_mlp_sgd0.1_20x60_sample10_seeds2_micro4_classes2_{SUBSET}"
    run_dir = tmp_path / name
    results = pd.read_csv(run_dir / "results.csv")
    # 3 normalizations x 3 regimes x 2 seeds; the no-norm micro-batch cells
    # repeat the i.i.d. runs.
    assert len(results) == 18
    assert results["test_accuracy_population"].between(0, 1).all()
    repeated = results[results["same_as"].notna()]
    assert set(repeated["normalization"]) == {"none"}
    assert set(repeated["regime"]) == {"micro4"}
    summary = pd.read_csv(run_dir / "summary.csv")
    assert len(summary) == 9 and (summary["seeds"] == 2).all()
    cell = results[(results.normalization == "bn") & (results.regime == "noniid")]
    row = summary[(summary.normalization == "bn") & (summary.regime == "noniid")]
    assert row["test_accuracy_mean"].item() == pytest.approx(
        cell["test_accuracy_population"].mean()
    )
    markdown = (run_dir / "summary.md").read_text()
    mean, std = row["test_accuracy_mean"].item(), row["test_accuracy_std"].item()
    assert f"{mean:.4f} ± {std:.4f}" in markdown
    assert "| Batch renorm |" in markdown and "micro-batches of 4" in markdown
    assert "noniid: batch norm" in result.stdout
    curves = pd.read_csv(run_dir / "curves.csv")
    assert sorted(curves["step"].unique()) == [10, 20]
    image = matplotlib.image.imread(run_dir / "small_batches.png")
    assert image.ndim == 3
    scalars = read_scalars(run_dir / "noniid" / "renorm_seed1")
    assert [s for s, _ in scalars["validation/accuracy"]] == [10, 20]


@pytest.mark.slow
def test_benchmark_lstm_suite_gives_the_ratio(tmp_path):
    """Measured in this process: its backend is the one asked for."""
    result = run_command(
        "benchmark.py", "--suite", "lstm", "--sequence-batches", "1",
        "--repeats", "1", "--backends", keras.backend.backend(), "--out", tmp_path,
    )  # fmt: skip
    frame = pd.read_csv(tmp_path / "benchmark.csv")
    assert sorted(frame["measurement"]) == [
        "BN-LSTM, 784 pixel steps",
        "LSTM, 784 pixel steps",
    ]
    assert (frame["steps_per_second"] > 0).all()
    ratio = "BN-LSTM / LSTM time per training batch (784 steps)"
    assert ratio in result.stdout
    speed = frame.set_index("measurement")["steps_per_second"]
    expected = speed["LSTM, 784 pixel steps"] / speed["BN-LSTM, 784 pixel steps"]
    markdown = (tmp_path / "benchmark.md").read_text()
    assert f"| {ratio} | {keras.backend.backend()} | {expected:.2f} " in markdown


def test_seed_grid_prints_lines_a_terminal_holds(tmp_path, monkeypatch):
    """At tiny settings: every line but the progress lines fits 100
    columns; the whole table is in summary.md."""
    monkeypatch.chdir(tmp_path)  # output paths as short as a user's
    result = run_command(
        "seed_grid.py", "--configs", "sigmoid:*:good:2000", "--fraction", "0.005",
        "--workers", "0", "--out", "grid",
    )  # fmt: skip
    lines = result.stdout.splitlines()
    progress = [line for line in lines if line.startswith("[")]
    assert len(progress) == 4
    long = [line for line in lines if len(line) > 100 and line not in progress]
    assert long == []
    assert "sigmoid lr 1 good" in result.stdout and "10/2,000" in result.stdout
    assert "All columns (spreads, successes, step at 0.9, steps/s): grid/" in (
        result.stdout
    )
    summary = (tmp_path / "grid" / "summary.md").read_text()
    assert "steps/s (with compilation)" in summary


def test_the_overview_titles_name_the_batches_trained():
    from kbn_study.outputs import plots

    curves = pd.DataFrame(
        {
            "activation": "relu", "learning_rate": 2.0, "weights": "good",
            "study_batches": 50_000, "seed": 0, "network": "with_bn",
            "step": [50, 100], "validation_accuracy": [0.5, 0.6],
        }
    )  # fmt: skip
    figure = plots.plot_grid_overview(curves)
    (title,) = [ax.get_title() for ax in figure.axes if ax.get_title()]
    assert title == "relu, lr 2, good weights, 100 of 50,000 batches"
    plots.close(figure)


def test_applications_ratios_are_time_ratios():
    """`--suite applications`' ratios: kbn / Keras time is Keras's calls/s
    over kbn's; folded / unfolded likewise; a network not measured gives no
    row."""
    from kbn_study.studies import keras_models_speed as speed_study

    name = speed_study.measurement_name
    speed = pd.Series(
        {
            ("jax", name("ResNet50", "training step", "Keras BatchNormalization")): 2.0,
            ("jax", name("ResNet50", "training step", "kbn BatchNorm")): 1.6,
            ("jax", name("ResNet50", "inference", "Keras BatchNormalization")): 10.0,
            ("jax", name("ResNet50", "inference", "kbn BatchNorm")): 10.0,
            ("jax", name("ResNet50", "inference", "kbn BatchNorm folded")): 12.5,
        }
    )
    rows = {r["ratio"]: r["value"] for r in speed_study.ratios(speed, ["jax"])}
    assert rows == {
        "ResNet50 training step: kbn / Keras time": pytest.approx(1.25),
        "ResNet50 inference: kbn / Keras time": pytest.approx(1.0),
        "ResNet50 inference: folded / unfolded time": pytest.approx(0.8),
    }
