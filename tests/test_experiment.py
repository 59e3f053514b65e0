"""kbn_study.studies.experiment end to end on real MNIST digits; outputs read back."""

import json
import os

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from kbn.evaluation import Accuracy
from kbn_study.studies import experiment
from kbn_study.studies.experiment import ExperimentConfig
from kbn_study.studies.experiment import train_and_test
from tests.helpers import read_scalars


def test_train_and_test_writes_everything(mnist_subset, tmp_path):
    config = ExperimentConfig(batches=60, batches_per_sample=20, log_dir=str(tmp_path))
    result = train_and_test(config, dataset=mnist_subset, verbose=False)

    assert set(result.networks) == {"without_bn", "with_bn"}
    for network in result.networks.values():
        assert network.steps == [20, 40, 60]
        assert network.final_validation_accuracy == network.accuracies[-1]
        # The test accuracy is the trained model's, in inference mode.
        test = mnist_subset.test
        assert (
            network.test_accuracy == Accuracy(network.model, test.images, test.labels)()
        )
        assert not network.diverged
    # In 60 batches batch norm climbs well above chance (0.48 measured), the
    # plain network at learning rate 0.01 barely moves (0.16).
    with_bn, without_bn = result.networks["with_bn"], result.networks["without_bn"]
    assert with_bn.accuracies[0] < with_bn.accuracies[-1]
    assert (
        with_bn.final_validation_accuracy > without_bn.final_validation_accuracy + 0.2
    )

    run_dir = tmp_path / "relu_lr0.01_good_60x60_sample20_seed0_mnist-subset"
    assert result.paths["plot"] == str(run_dir / "accuracy.png")
    curves = pd.read_csv(run_dir / "curves.csv")
    assert list(curves.columns) == [
        "network",
        "step",
        "validation_accuracy",
        "training_loss",
    ]
    assert curves.groupby("network")["step"].apply(list).to_dict() == {
        "with_bn": [20, 40, 60],
        "without_bn": [20, 40, 60],
    }
    summary = pd.read_csv(run_dir / "results.csv")
    assert summary["test_accuracy"].tolist() == pytest.approx(
        [result.networks[n].test_accuracy for n in summary["network"]]
    )
    with open(run_dir / "results.json") as f:
        assert [row["network"] for row in json.load(f)] == ["without_bn", "with_bn"]
    with open(run_dir / "config.json") as f:
        meta = json.load(f)
    assert meta["config"]["batches"] == 60 and meta["weight_scale"] == 0.05
    assert meta["data_source"] == mnist_subset.source
    assert meta["data_tag"] == "mnist-subset" and meta["run"] == run_dir.name
    image = matplotlib.image.imread(run_dir / "accuracy.png")
    assert image.shape[0] > 300 and image.shape[1] > 500
    for network in ("without_bn", "with_bn"):
        scalars = read_scalars(str(run_dir / network))
        assert [s for s, _ in scalars["validation/accuracy"]] == [20, 40, 60]
        assert [s for s, _ in scalars["train/loss"]] == [20, 40, 60]


def test_both_networks_see_the_same_weights_and_batches(mnist_subset):
    """With batch norm replaced by nothing, both runs must be identical."""
    config = ExperimentConfig(batches=30, batches_per_sample=10)
    result = train_and_test(
        config,
        dataset=mnist_subset,
        networks={"a": False, "b": False},
        write=False,
        verbose=False,
    )
    a, b = result.networks["a"], result.networks["b"]
    assert a.accuracies == b.accuracies and a.losses == b.losses
    for wa, wb in zip(a.model.weights, b.model.weights):
        np.testing.assert_array_equal(np.asarray(wa), np.asarray(wb))


def test_a_rerun_replaces_the_earlier_event_files(mnist_subset, tmp_path, capsys):
    config = ExperimentConfig(batches=20, batches_per_sample=10, log_dir=str(tmp_path))
    train_and_test(config, dataset=mnist_subset, verbose=False)
    assert "Replacing" not in capsys.readouterr().out
    train_and_test(config, dataset=mnist_subset, verbose=False)
    run_dir = tmp_path / config.name(mnist_subset)
    assert (
        f"Replacing the results of an earlier run of this configuration in {run_dir}"
        in capsys.readouterr().out
    )
    folder = run_dir / "with_bn"
    # One file of curves, one of the HParams trial.
    assert len([f for f in os.listdir(folder) if "tfevents" in f]) == 2
    assert [s for s, _ in read_scalars(str(folder))["validation/accuracy"]] == [10, 20]


def test_a_diverging_network_is_recorded_not_raised(mnist_subset):
    config = ExperimentConfig(
        learning_rate=1e4, weights="bad", batches=20, batches_per_sample=10
    )
    result = train_and_test(
        config,
        dataset=mnist_subset,
        networks={"without_bn": False},
        write=False,
        verbose=False,
    )
    network = result.networks["without_bn"]
    assert network.diverged
    assert np.isnan(network.losses[-1])
    assert network.final_validation_accuracy < 0.3  # chance level


@pytest.mark.parametrize(
    "kwargs,error,received",
    [
        ({"learning_rate": 0}, ValueError, "learning_rate=0"),
        ({"weights": "ok"}, ValueError, "weights='ok'"),
        ({"batches": 0}, ValueError, "batches=0"),
        ({"batches_per_sample": 2.5}, TypeError, "batches_per_sample=2.5"),
        ({"seed": -1}, ValueError, "seed=-1"),
        ({"dataset": "cifar"}, ValueError, "dataset='cifar'"),
        (
            {"batches": 100, "batches_per_sample": 50, "batches_per_step": 30},
            ValueError,
            "batches_per_step=30",
        ),
    ],
)
def test_bad_config_names_the_value(kwargs, error, received):
    with pytest.raises(error, match=f"Received: {received}"):
        ExperimentConfig(**kwargs)


def test_the_run_name_holds_every_setting_that_changes_results(mnist_subset):
    import dataclasses

    base = ExperimentConfig()
    names = {
        ExperimentConfig(**changes).name(mnist_subset)
        for changes in (
            {},
            {"activation": "sigmoid"},
            {"learning_rate": 1.0},
            {"weights": "bad"},
            {"batches": 50_000},
            {"batches_per_sample": 10},
            {"batch_size": 30},
            {"seed": 1},
        )
    }
    assert len(names) == 8
    other_data = dataclasses.replace(mnist_subset, tag="fashion_mnist")
    assert base.name(other_data) != base.name(mnist_subset)
    # Settings that do not change results do not change the name.
    assert ExperimentConfig(batches_per_step=25).name(mnist_subset) == base.name(
        mnist_subset
    )
    assert base.name(mnist_subset) == "relu_lr0.01_good_2000x60_seed0_mnist-subset"


def test_batches_per_step_divides_the_sampling_interval():
    def per_step(batches, every):
        config = ExperimentConfig(batches=batches, batches_per_sample=every)
        return config.schedule.resolved_batches_per_step

    assert per_step(50_000, 500) == 250
    assert per_step(2_000, 50) == 50
    assert per_step(60, 20) == 20
    assert per_step(1_000, 300) == 100  # gcd(1000, 300) = 100
    assert per_step(1_001, 500) == 1
    assert experiment.WEIGHT_SCALES == {"good": 0.05, "bad": 5.0}
