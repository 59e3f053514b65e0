"""The study in TensorBoard: curves on one step axis, the grid in HParams.

The event files are read back with TensorBoard's own reader, and the HParams
dashboard's data from a real `tensorboard --logdir` server over HTTP.
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pandas as pd
import pytest

from kbn_study.grid import runner as grid
from kbn_study.outputs import hparams
from kbn_study.studies import published
from tests.helpers import free_ports
from tests.helpers import read_histograms
from tests.helpers import read_scalars
from tests.helpers import user_environment

CURVES = ["train/loss", "validation/accuracy"]
RESULTS = ["results/diverged", "results/test_accuracy"]
FIRST_STEP = "results/first_step_0.9"
BATCH_NORM_LAYERS = ["batch_norm_1", "batch_norm_2", "batch_norm_3"]


@pytest.mark.slow  # a recipe process or a TensorBoard server
def test_compare_writes_both_networks_on_one_step_axis(compare_default_run):
    """`compare.py` (JAX): the curves of both networks overlay in TensorBoard.

    Read from the README's main job (2,000 batches, sampled every 50, each
    network in its own worker process), which tests/test_recipes.py runs and
    checks too: one recipe process for both tests (see conftest.py).
    """
    _, log_dir, _ = compare_default_run
    run_dir = log_dir / "relu_lr0.01_good_2000x60_seed0_mnist-subset"
    steps = list(range(50, 2_001, 50))
    curves = pd.read_csv(run_dir / "curves.csv")
    scalars = {n: read_scalars(run_dir / n) for n in ("without_bn", "with_bn")}
    histograms = {n: read_histograms(run_dir / n) for n in ("without_bn", "with_bn")}
    gaps = [
        f"batch_norm/{layer}/{gap}"
        for layer in BATCH_NORM_LAYERS
        for gap in ("mean_gap", "variance_gap")
    ]
    # The same tag names, but for the statistics of the network with batch
    # norm and the step at which a network first reached 0.9 validation
    # accuracy (written when it did: with batch norm here, at step 450).
    reached = {}
    for network in ("without_bn", "with_bn"):
        mine = curves[curves["network"] == network]
        above = mine[mine["validation_accuracy"] >= 0.9]["step"]
        reached[network] = [] if above.empty else [FIRST_STEP]
        if reached[network]:
            assert scalars[network][FIRST_STEP] == [(2_000, above.iloc[0])]
    assert reached["with_bn"] == [FIRST_STEP]
    assert sorted(scalars["without_bn"]) == sorted(
        CURVES + RESULTS + reached["without_bn"]
    )
    assert sorted(scalars["with_bn"]) == sorted(CURVES + RESULTS + [FIRST_STEP] + gaps)
    assert histograms["without_bn"] == {}
    assert sorted(histograms["with_bn"]) == sorted(
        f"batch_norm/{layer}/{weight}"
        for layer in BATCH_NORM_LAYERS
        for weight in ("beta", "gamma", "moving_mean", "moving_variance")
    )
    for network, tags in scalars.items():
        # One step axis: the global training batch, for every curve.
        for tag in CURVES:
            assert [s for s, _ in tags[tag]] == steps, (network, tag)
        for tag in gaps if network == "with_bn" else []:
            assert [s for s, _ in tags[tag]] == [0, *steps], (network, tag)
        mine = curves[curves["network"] == network]
        assert [v for _, v in tags["validation/accuracy"]] == pytest.approx(
            mine["validation_accuracy"].tolist()
        )
        assert [v for _, v in tags["train/loss"]] == pytest.approx(
            mine["training_loss"].tolist()
        )
    # The curves of one network are one event file; the HParams trial another.
    for network in ("without_bn", "with_bn"):
        files = [f for f in os.listdir(run_dir / network) if "tfevents" in f]
        assert len(files) == 2, files


@pytest.mark.slow  # a recipe process or a TensorBoard server
def test_the_jax_run_writes_its_tensorboard_files_without_tensorflow(
    compare_default_run,
):
    """No process of the README's main job (JAX: the parent and its two
    workers) imports TensorFlow, and its event files hold the validation
    curve, the training loss, the batch norms' histograms and the HParams
    experiment and trials, read back with TensorBoard's `EventAccumulator`."""
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    _, log_dir, imports = compare_default_run
    assert not imports.exists(), imports.read_text()[-3000:]
    run = "relu_lr0.01_good_2000x60_seed0_mnist-subset"

    def hparams_data(folder):
        accumulator = event_accumulator.EventAccumulator(str(folder))
        accumulator.Reload()
        return [
            plugin_data_pb2.HParamsPluginData.FromString(content)
            for content in accumulator.PluginTagToContent("hparams").values()
        ]

    (experiment,) = hparams_data(log_dir / run)
    names = [info.name for info in experiment.experiment.hparam_infos]
    assert names == list(hparams.HPARAMS)
    for network in ("without_bn", "with_bn"):
        scalars = read_scalars(log_dir / run / network)
        assert len(scalars["validation/accuracy"]) == 40
        assert len(scalars["train/loss"]) == 40
        (trial,) = hparams_data(log_dir / run / network)
        values = trial.session_start_info.hparams
        assert values["network"].string_value == network
        assert values["batches"].number_value == 2000
    assert len(read_histograms(log_dir / run / "with_bn")) == 12


def test_the_import_guard_sees_tensorflow_imported(tmp_path):
    """The guard of the test above records an import (a stand-in package
    named `tensorflow`, so that the check takes no TensorFlow start-up)."""
    from tests.helpers import ROOT

    stand_in = tmp_path / "packages" / "tensorflow"
    stand_in.mkdir(parents=True)
    (stand_in / "__init__.py").write_text("")
    log = tmp_path / "imports.log"
    guard = os.path.join(ROOT, "tests", "import_guard")
    subprocess.run(
        [sys.executable, "-c", "import tensorflow"],
        env={
            **os.environ,
            "PYTHONPATH": f"{guard}{os.pathsep}{tmp_path / 'packages'}",
            "KBN_TESTS_IMPORT_LOG": str(log),
        },
        check=True,
    )
    assert log.read_text().startswith("process "), "the guard recorded nothing"


def _tensorboard_command(log_dir, port):
    script = os.path.join(os.path.dirname(sys.executable), "tensorboard")
    command = (
        [script]
        if os.path.exists(script)
        else [sys.executable, "-m", "tensorboard.main"]
    )
    return command + [
        "--logdir",
        str(log_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]


@contextlib.contextmanager
def _tensorboard(log_dir, stderr_path):
    """A real TensorBoard on a free local port; stopped, children included."""
    (port,) = free_ports(1)
    with open(stderr_path, "w") as stderr:
        process = subprocess.Popen(
            _tensorboard_command(log_dir, port),
            env=user_environment(),
            stdout=stderr,
            stderr=stderr,
            start_new_session=True,  # its own process group: the data server too
        )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        deadline = time.monotonic() + 30
        while _group_alive(process.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _group_alive(process.pid):
            os.killpg(process.pid, signal.SIGKILL)
            pytest.fail("TensorBoard left a process behind")


def _group_alive(pgid):
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _hparams_query(base, route, request):
    url = f"{base}/data/plugin/hparams/{route}?request=" + urllib.parse.quote(
        json.dumps(request)
    )
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


ALL_STATUSES = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]


def _session_groups(base, expected, timeout=120):
    """The session groups, once TensorBoard has loaded `expected` of them."""
    request = {"allowedStatuses": ALL_STATUSES, "startIndex": 0, "sliceSize": 100}
    deadline = time.monotonic() + timeout
    groups = []
    while time.monotonic() < deadline:
        try:
            groups = _hparams_query(base, "session_groups", request)["sessionGroups"]
        except (urllib.error.URLError, ConnectionError):
            groups = []  # not serving yet
        if len(groups) >= expected:
            return groups
        time.sleep(1)
    raise AssertionError(f"TensorBoard served {len(groups)} of {expected} trials")


@pytest.mark.slow  # a recipe process or a TensorBoard server
def test_tensorboard_shows_the_grid_in_its_hparams_dashboard(mnist_subset, tmp_path):
    out = tmp_path / "grid"
    configurations = published.select_configurations("sigmoid:*:good:2000")
    grid.run_grid(out, mnist_subset, configurations, fraction=0.01, verbose=False)
    results = pd.read_csv(out / "results.csv")
    assert len(results) == 4  # lr 1 and 2, without and with batch norm

    with _tensorboard(out, tmp_path / "tensorboard.log") as base:
        try:
            groups = _session_groups(base, expected=4)
            experiment = _hparams_query(base, "experiment", {})
        except AssertionError:
            print((tmp_path / "tensorboard.log").read_text()[-3000:])
            raise

    infos = {info["name"]: info for info in experiment["hparamInfos"]}
    assert sorted(infos) == sorted(hparams.HPARAMS)
    varying = {name for name, info in infos.items() if info["differs"]}
    assert varying == {"network", "learning_rate"}
    assert infos["learning_rate"]["domainDiscrete"] == [1.0, 2.0]
    metrics = [info["name"]["tag"] for info in experiment["metricInfos"]]
    assert metrics == list(hparams.METRICS)

    assert len(groups) == 4
    for group in groups:
        (session,) = group["sessions"]
        run_name, network = session["name"].rsplit("/", 1)
        row = results[
            (results["learning_rate"] == group["hparams"]["learning_rate"])
            & (results["network"] == network)
        ].iloc[0]
        assert (
            run_name
            == f"sigmoid_lr{row['learning_rate']:g}_good_20x60_seed0_mnist-subset"
        )
        assert group["name"] == session["name"]  # the trial id
        assert group["hparams"] == {
            "network": network,
            "activation": "sigmoid",
            "learning_rate": row["learning_rate"],
            "weights": "good",
            "batches": 20.0,
            "seed": 0.0,
            "data": "mnist-subset",
        }
        values = {m["name"]["tag"]: m["value"] for m in session["metricValues"]}
        assert values.pop("validation/accuracy") == pytest.approx(
            row["final_validation_accuracy"]
        )
        assert values.pop("results/test_accuracy") == pytest.approx(
            row["test_accuracy"]
        )
        assert values.pop("results/diverged") == float(row["diverged"])
        if pd.isna(row["first_step_0.9"]):
            assert values == {}  # never reached 0.9: no value
        else:
            assert values == {"results/first_step_0.9": row["first_step_0.9"]}

    # A later call replaces the experiment's definition: one file at the top.
    grid.run_grid(out, mnist_subset, configurations, fraction=0.01, verbose=False)
    assert len([f for f in os.listdir(out) if "tfevents" in f]) == 1
