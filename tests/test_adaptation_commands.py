"""The adaptation recipes (`corruptions.py`, `fine_tuning.py`), run in this
process through their `main(argv)` at tiny settings: flags, bad inputs, and
the CSV, Markdown, PNG and TensorBoard files they write, read back."""

import os

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from tests.helpers import read_scalars
from tests.helpers import run_command

SUBSET = "mnist-subset"

# (recipe, arguments, exit status, text the one error line must contain).
BAD_INPUT = [
    ("corruptions.py", ["--corruptions", "snow"], 2, "argument --corruptions: expected distinct corruptions among gaussian_noise, blur, contrast, brightness, fog, rotation, inversion, comma-separated. Received: 'snow'"),
    ("corruptions.py", ["--corruptions", "blur,blur"], 2, "Received: 'blur,blur'"),
    ("corruptions.py", ["--severities", "4"], 2, "argument --severities: expected distinct severities from 1 to 3, comma-separated, such as 1,3. Received: '4'"),
    ("corruptions.py", ["--severities", "0,1"], 2, "Received: '0,1'"),
    ("corruptions.py", ["--source-samples", "0"], 2, "argument --source-samples: expected distinct positive numbers (Schneider's N; N = 0 is the test-batch statistics of --test-batch-sizes), comma-separated. Received: '0'"),
    ("corruptions.py", ["--source-samples", "8,-1"], 2, "Received: '8,-1'"),
    ("corruptions.py", ["--test-batch-sizes", "0"], 2, "argument --test-batch-sizes: expected distinct positive batch sizes, comma-separated. Received: '0'"),
    ("corruptions.py", ["--tent-learning-rates", "0"], 2, "Received: '0'"),
    ("corruptions.py", ["--models", "resnet"], 2, "argument --models: expected distinct models among convnet, mlp, comma-separated. Received: 'resnet'"),
    ("corruptions.py", ["--seeds", "0"], 2, "argument --seeds: expected a positive integer. Received: '0'"),
    ("corruptions.py", ["--log-dir", "{file}"], 2, "argument --log-dir: expected a folder, but it is a file"),
    ("corruptions.py", ["--data", "{random}"], 1, "Corrupt MNIST file {random}"),
    ("fine_tuning.py", ["--regimes", "frozen"], 2, "argument --regimes: expected distinct regimes among frozen_inference, frozen_batch_statistics, frozen_batch_statistics_updating, adabn_frozen, full, comma-separated. Received: 'frozen'"),
    ("fine_tuning.py", ["--fine-tune-batches", "0"], 2, "Received: '0'"),
    ("fine_tuning.py", ["--learning-rate", "-1"], 2, "argument --learning-rate: expected a positive number. Received: '-1'"),
    ("fine_tuning.py", ["--log-dir", "{file}"], 2, "expected a folder, but it is a file"),
    ("fine_tuning.py", ["--data", "{random}"], 1, "Corrupt MNIST file {random}"),
]  # fmt: skip


@pytest.mark.parametrize(
    "recipe,args,status,message",
    BAD_INPUT,
    ids=[f"{r}:{' '.join(a)}" for r, a, _, _ in BAD_INPUT],
)
def test_bad_input_is_one_line_and_changes_nothing(
    tmp_path, recipe, args, status, message
):
    random_bytes = tmp_path / "random.npz"
    random_bytes.write_bytes(np.random.default_rng(0).bytes(4096))
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    files = {"random": str(random_bytes), "file": str(a_file)}
    args = [a.format(**files) for a in args]
    message = message.format(**files)
    extra = [] if "--log-dir" in args else ["--log-dir", str(tmp_path / "out")]
    before = sorted(os.listdir(tmp_path))
    result = run_command(recipe, *args, *extra, check=False)
    assert result.returncode == status, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith(f"{recipe}: error: ")
    assert message in lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    assert sorted(os.listdir(tmp_path)) == before  # no results folder


@pytest.mark.parametrize("recipe", ["corruptions.py", "fine_tuning.py"])
def test_every_flag_has_a_description_and_its_default(recipe):
    help_text = run_command(recipe, "--help").stdout.split("options:", 1)[1]
    entries, current = [], None
    for line in help_text.splitlines():
        if line.startswith("  -"):
            current = [line]
            entries.append(current)
        elif current is not None and line.strip():
            current.append(line)
    assert len(entries) > 5
    for entry in entries[1:]:  # after -h
        text = " ".join(" ".join(entry).split())
        assert "default" in text, text


def _hparams(folder):
    """The HParams plugin data of the event files in `folder`."""
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    accumulator = event_accumulator.EventAccumulator(str(folder))
    accumulator.Reload()
    return [
        plugin_data_pb2.HParamsPluginData.FromString(content)
        for content in accumulator.PluginTagToContent("hparams").values()
    ]


# Slow (about 50 s on 2 cores): 4 networks trained, each evaluated by 6
# methods on 5 target sets, and 120 HParams trials written.
@pytest.mark.slow
def test_corruptions_tiny(tmp_path):
    result = run_command(
        "corruptions.py", "--seeds", "2", "--convnet-batches", "10",
        "--mlp-batches", "10", "--corruptions", "contrast,inversion",
        "--severities", "1,3", "--test-batch-sizes", "1,64",
        "--mix-batch-sizes", "8", "--source-samples", "16",
        "--tent-learning-rates", "0.01", "--log-dir", tmp_path,
    )  # fmt: skip
    (run_dir,) = tmp_path.iterdir()
    assert run_dir.name.startswith("corruptions_convnet-mlp_seeds2_custom")
    assert run_dir.name.endswith(SUBSET)
    results = pd.read_csv(run_dir / "results.csv")
    methods = ["source", "batch1", "batch64", "adabn", "mix8_N16", "tent64_lr0.01"]
    # 2 models x 2 seeds x 6 methods x (clean + 2 corruptions x 2 severities).
    assert len(results) == 2 * 2 * 6 * 5
    assert list(results["method"].unique()) == methods
    assert results["error"].between(0, 1).all()
    # The MLP's batch norms give a single example one value per feature:
    # every prediction is the same class, whatever the image.
    mlp_one = results[(results.model == "mlp") & (results.method == "batch1")]
    assert mlp_one.groupby("seed")["error"].nunique().max() == 1
    summary = pd.read_csv(run_dir / "summary.csv")
    cell = summary[
        (summary.model == "convnet") & (summary.method == "adabn")
        & (summary.corruption == "mean")
    ]  # fmt: skip
    mine = results[
        (results.model == "convnet") & (results.method == "adabn")
        & (results.corruption != "clean")
    ]  # fmt: skip
    expected = mine.groupby("seed")["error"].mean()
    assert cell["error_mean"].item() == pytest.approx(expected.mean())
    markdown = (run_dir / "summary.md").read_text()
    text = f"{100 * expected.mean():.1f} ± {100 * expected.std():.1f}"
    assert "| AdaBN (whole target set) |" in markdown and text in markdown
    assert "## The papers' claims" in markdown
    assert "Tent lowers the error below test-batch statistics alone" in result.stdout
    image = matplotlib.image.imread(run_dir / "corruptions.png")
    assert image.ndim == 3 and image.shape[1] > image.shape[0]
    training = pd.read_csv(run_dir / "training.csv")
    assert len(training) == 4
    # TensorBoard: the training curve of every network, and one HParams
    # trial per model, seed, method and corruption.
    scalars = read_scalars(run_dir / "training" / "mlp_seed1")
    assert [s for s, _ in scalars["validation/accuracy"]] == list(range(1, 11))
    (experiment,) = _hparams(run_dir / "trials")
    names = [info.name for info in experiment.experiment.hparam_infos]
    assert {"method", "corruption", "model", "seed"} <= set(names)
    trial = run_dir / "trials" / "convnet_seed1" / "adabn" / "contrast"
    (start,) = _hparams(trial)
    values = start.session_start_info.hparams
    assert values["method"].string_value == "adabn"
    assert values["corruption"].string_value == "contrast"
    errors = results[
        (results.model == "convnet") & (results.seed == 1)
        & (results.method == "adabn") & (results.corruption == "contrast")
    ].set_index("severity")["error"]  # fmt: skip
    scalars = read_scalars(trial)
    assert scalars["results/error"][0][1] == pytest.approx(errors.mean(), abs=1e-6)
    assert scalars["results/error_severity_3"][0][1] == pytest.approx(errors[3])
    assert len(list((run_dir / "trials").glob("*/*/*"))) == 2 * 2 * 6 * 3


# Slow (about 50 s on 2 cores): 2 pretrainings and 10 fine-tuning runs,
# each a model built and compiled afresh.
@pytest.mark.slow
def test_fine_tuning_tiny(tmp_path):
    result = run_command(
        "fine_tuning.py", "--seeds", "2", "--pretrain-batches", "20",
        "--fine-tune-batches", "20", "--batches-per-sample", "10",
        "--depth", "2", "--log-dir", tmp_path,
    )  # fmt: skip
    (run_dir,) = tmp_path.iterdir()
    assert run_dir.name.startswith("fine_tuning_20x60-20x60_seeds2_custom")
    results = pd.read_csv(run_dir / "results.csv")
    regimes = [
        "frozen_inference", "frozen_batch_statistics",
        "frozen_batch_statistics_updating", "adabn_frozen", "full",
    ]  # fmt: skip
    assert len(results) == 2 * (1 + len(regimes))
    assert list(results["regime"].unique()) == ["pretrain", *regimes]
    np.testing.assert_allclose(
        results["gap"],
        results["test_accuracy_batch_statistics"] - results["test_accuracy"],
    )
    # Frozen in inference mode: what training saw is what inference sees.
    frozen = results[results.regime.isin(["frozen_inference", "adabn_frozen"])]
    assert (frozen["gap"] == 0).all()
    curves = pd.read_csv(run_dir / "curves.csv")
    assert sorted(curves["step"].unique()) == [10, 20]
    summary = pd.read_csv(run_dir / "summary.csv").set_index("regime")
    mine = results[results.regime == "full"]["test_accuracy"]
    assert summary.loc["full", "test_accuracy_mean"] == pytest.approx(mine.mean())
    markdown = (run_dir / "summary.md").read_text()
    assert f"{mine.mean():.4f} ± {mine.std():.4f}" in markdown
    assert "train well and predict badly" in markdown
    assert "train well and predict badly" in result.stdout
    image = matplotlib.image.imread(run_dir / "fine_tuning.png")
    assert image.ndim == 3
    (experiment,) = _hparams(run_dir)
    assert [i.name for i in experiment.experiment.hparam_infos][0] == "regime"
    folder = run_dir / "frozen_batch_statistics" / "seed1"
    scalars = read_scalars(folder)
    assert [s for s, _ in scalars["validation/accuracy"]] == [10, 20]
    row = results[(results.regime == "frozen_batch_statistics") & (results.seed == 1)]
    assert scalars["results/gap"][0][1] == pytest.approx(row["gap"].item(), abs=1e-6)
    (start,) = _hparams(folder)
    assert start.session_start_info.hparams["regime"].string_value == (
        "frozen_batch_statistics"
    )


def test_the_commands_import_no_keras_before_they_choose_the_backend():
    # `main` parses, then sets KERAS_BACKEND: a module-level import of kbn
    # (kbn_study.data.corruptions once had one) would import Keras on the
    # default backend first, and on JAX import TensorFlow with it.
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import kbn_study.commands.corruptions, kbn_study.commands.fine_tuning\n"
        "print(sorted(m for m in ('keras', 'kbn', 'tensorflow', 'jax') "
        "if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "[]"
