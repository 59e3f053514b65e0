"""The study's experiment: one network with batch norm, one without.

`train_and_test(config)` builds both networks from the same initial weights,
trains each with plain SGD on the same sequence of batches for
`config.batches` batches, records the validation accuracy every
`config.batches_per_sample` batches, and tests both in inference mode
(batch norm with its population statistics). Everything it writes goes under
`<config.log_dir>/<run name>/`:

- `config.json`: the resolved configuration, data source and backend;
- `results.json`, `results.csv`: one row per network;
- `curves.csv`: validation accuracy and training loss at every sample;
- `accuracy.png`: the learning curves of both networks;
- `without_bn/`, `with_bn/`: TensorBoard logs (`tensorboard --logdir`).

Training goes through `model.fit` with kbn's callbacks, wrapped in
`kbn.training.MultiStepTrainer` (images on the device, several batches per
compiled call). One Keras "epoch" is one sampling interval, so Keras's
epoch-level logs line up with the samples.
"""

import dataclasses
import glob
import json
import math
import os
import platform
import time

import keras
import numpy as np
import pandas as pd

from kbn import callbacks as kbn_callbacks
from kbn import data as kbn_data
from kbn import models
from kbn.inference import Accuracy
from kbn.training import MultiStepTrainer

WEIGHT_SCALES = {"good": models.GOOD_WEIGHT_SCALE, "bad": models.BAD_WEIGHT_SCALE}
NETWORKS = {"without_bn": False, "with_bn": True}
MAX_BATCHES_PER_STEP = 250


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Every knob of one with/without-batch-norm comparison."""

    # Hidden activation of both networks ("relu" or "sigmoid" in the study).
    activation: str = "relu"
    # Plain SGD learning rate (the study: 0.01, 1 and 2).
    learning_rate: float = 0.01
    # Initial kernels: "good" is N(0, 0.05), "bad" is N(0, 5.0).
    weights: str = "good"
    # Training batches (the study: 50,000 or 2,000).
    batches: int = 2_000
    # Validation accuracy is sampled every this many batches (500 or 50).
    batches_per_sample: int = 50
    # Images per batch (the study: 60).
    batch_size: int = 60
    # Seed of the initial weights and of the batch order.
    seed: int = 0
    # Outputs go to <log_dir>/<run_name>/.
    log_dir: str = "logs"
    # Folder name of the run; None derives it from the configuration.
    run_name: str | None = None
    # MNIST files (mnist.npz or IDX folder); None: Keras cache, download,
    # then the offline 5,000-digit subset.
    data: str | None = None
    # "mnist" or "fashion_mnist".
    dataset: str = "mnist"
    # Batches per compiled call of the training step; None: the largest
    # divisor of the sampling interval up to 250, so that callbacks fire
    # exactly at the samples.
    batches_per_step: int | None = None

    def __post_init__(self):
        _check(
            isinstance(self.activation, str) and self.activation,
            "activation",
            self.activation,
            "the name of a Keras activation",
        )
        _check(
            _is_number(self.learning_rate) and self.learning_rate > 0,
            "learning_rate",
            self.learning_rate,
            "a positive float",
        )
        _check(
            self.weights in WEIGHT_SCALES,
            "weights",
            self.weights,
            f"one of {sorted(WEIGHT_SCALES)}",
        )
        for field in ("batches", "batches_per_sample", "batch_size"):
            value = getattr(self, field)
            _check(_is_int(value) and value > 0, field, value, "a positive int")
        _check(_is_int(self.seed), "seed", self.seed, "an int")
        if self.batches_per_step is not None:
            per_step = self.batches_per_step
            _check(
                _is_int(per_step)
                and per_step > 0
                and self.sample_interval % per_step == 0,
                "batches_per_step",
                per_step,
                f"a positive divisor of {self.sample_interval} (the greatest "
                "common divisor of batches and batches_per_sample)",
            )

    @property
    def weight_scale(self):
        return WEIGHT_SCALES[self.weights]

    @property
    def name(self):
        if self.run_name:
            return self.run_name
        return (
            f"{self.activation}_lr{self.learning_rate:g}_{self.weights}_"
            f"{self.batches}_seed{self.seed}"
        )

    @property
    def sample_interval(self):
        """Batches per Keras epoch: divides both the run and the sampling."""
        return math.gcd(self.batches, self.batches_per_sample)

    @property
    def resolved_batches_per_step(self):
        if self.batches_per_step is not None:
            return self.batches_per_step
        interval = self.sample_interval
        return max(d for d in range(1, MAX_BATCHES_PER_STEP + 1) if interval % d == 0)

    @property
    def run_dir(self):
        return os.path.join(self.log_dir, self.name)


@dataclasses.dataclass
class NetworkResult:
    """What one network's training and testing produced."""

    name: str
    steps: list
    accuracies: list
    losses: list
    final_validation_accuracy: float
    test_accuracy: float
    diverged: bool
    wall_time: float
    model: keras.Model = dataclasses.field(repr=False)

    @property
    def steps_per_second(self):
        return self.steps[-1] / self.wall_time if self.steps else 0.0

    def first_step_reaching(self, accuracy):
        """First recorded step with validation accuracy >= `accuracy`, or None."""
        for step, value in zip(self.steps, self.accuracies):
            if value >= accuracy:
                return step
        return None

    def summary(self):
        return {
            "network": self.name,
            "final_validation_accuracy": self.final_validation_accuracy,
            "test_accuracy": self.test_accuracy,
            "first_step_0.8": self.first_step_reaching(0.8),
            "first_step_0.9": self.first_step_reaching(0.9),
            "diverged": self.diverged,
            "wall_time_s": self.wall_time,
            "steps_per_second": self.steps_per_second,
        }


@dataclasses.dataclass
class ExperimentResult:
    """Both networks' results, and where they were written."""

    config: ExperimentConfig
    networks: dict
    data_source: str
    paths: dict = dataclasses.field(default_factory=dict)

    def curves(self):
        """Long DataFrame: network, step, validation_accuracy, training_loss."""
        frames = [
            pd.DataFrame(
                {
                    "network": r.name,
                    "step": r.steps,
                    "validation_accuracy": r.accuracies,
                    "training_loss": r.losses,
                }
            )
            for r in self.networks.values()
        ]
        return pd.concat(frames, ignore_index=True)

    def summary(self):
        """One row per network."""
        frame = pd.DataFrame([r.summary() for r in self.networks.values()])
        for column in ("first_step_0.8", "first_step_0.9"):
            frame[column] = frame[column].astype("Int64")
        return frame


def train_network(
    config,
    dataset,
    kernels,
    batch_norm,
    name,
    log_dir=None,
    callbacks=(),
    verbose=True,
):
    """Trains and tests one network of the experiment.

    Args:
        config: `ExperimentConfig`.
        dataset: `kbn.data.Dataset`.
        kernels: Initial kernels (`kbn.models.initial_weights`).
        batch_norm: As `kbn.models.build_mlp`'s argument.
        name: Network name in results ("with_bn", ...).
        log_dir: TensorBoard folder for this network, or None.
        callbacks: Extra callbacks for `fit`.
        verbose: Show a progress bar.

    Returns:
        A `NetworkResult`.
    """
    model, trainer = build_trainer(config, dataset, kernels, batch_norm)
    recorder = kbn_callbacks.ValidationAccuracyRecorder(
        (dataset.validation.images, dataset.validation.labels),
        every_n_batches=config.batches_per_sample,
        log_dir=log_dir,
    )
    all_callbacks = [recorder, *callbacks]
    if log_dir is not None:
        all_callbacks.append(keras.callbacks.TensorBoard(log_dir, write_graph=False))
    if verbose:
        all_callbacks.append(
            kbn_callbacks.TrainingProgress(config.batches, label=f"{name:>10}:")
        )
    blocks = training_blocks(config, dataset)
    wall_time = fit_batches(trainer, config, blocks, config.batches, all_callbacks)
    test_accuracy = Accuracy(model, dataset.test.images, dataset.test.labels)()
    diverged = not all(math.isfinite(x) for x in recorder.losses) or not all(
        np.isfinite(keras.ops.convert_to_numpy(w)).all() for w in model.weights
    )
    return NetworkResult(
        name=name,
        steps=list(recorder.steps),
        accuracies=list(recorder.accuracies),
        losses=list(recorder.losses),
        final_validation_accuracy=recorder.accuracies[-1],
        test_accuracy=test_accuracy,
        diverged=diverged,
        wall_time=wall_time,
        model=model,
    )


def build_trainer(config, dataset, kernels, batch_norm):
    """The network of `config` and its compiled `MultiStepTrainer`.

    Returns:
        A tuple `(model, trainer)`; `trainer` trains `model` in place.
    """
    model = models.build_mlp(kernels, config.activation, batch_norm)
    trainer = MultiStepTrainer(
        model, dataset.train.images, config.resolved_batches_per_step
    )
    trainer.compile(
        optimizer=keras.optimizers.SGD(config.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model, trainer


def training_blocks(config, dataset):
    """The endless stream of index blocks that `fit_batches` trains on."""
    return kbn_data.index_batches(
        dataset.train.labels,
        batch_size=config.batch_size,
        batches_per_step=config.resolved_batches_per_step,
        seed=config.seed,
    )


def fit_batches(trainer, config, blocks, batches, callbacks=()):
    """Trains for `batches` batches, one Keras epoch per sampling interval.

    Args:
        trainer: From `build_trainer`.
        config: `ExperimentConfig`.
        blocks: From `training_blocks`; consumed, so calls continue the
            batch order.
        batches: A multiple of `config.sample_interval`.
        callbacks: Callbacks for `fit`.

    Returns:
        Wall time of the `fit` call in seconds.
    """
    interval = config.sample_interval
    if batches % interval:
        raise ValueError(
            f"Invalid value for argument batches. Expected a multiple of "
            f"{interval}. Received: batches={batches}"
        )
    start = time.perf_counter()
    trainer.fit(
        blocks,
        epochs=batches // interval,
        steps_per_epoch=interval // config.resolved_batches_per_step,
        callbacks=list(callbacks),
        shuffle=False,  # the batches are shuffled by index_batches
        verbose=0,
    )
    return time.perf_counter() - start


def train_and_test(config, dataset=None, networks=None, write=True, verbose=True):
    """Runs the with/without batch-norm comparison of `config`.

    Args:
        config: `ExperimentConfig`.
        dataset: Optional `kbn.data.Dataset`; loaded from `config` when None.
        networks: Optional mapping from network name to `build_mlp`'s
            `batch_norm` argument; default `{"without_bn": False, "with_bn":
            True}`.
        write: Write results, plot and TensorBoard logs under
            `config.run_dir`.
        verbose: Show progress bars.

    Returns:
        An `ExperimentResult`.
    """
    if dataset is None:
        dataset = kbn_data.load_mnist(config.data, name=config.dataset)
    networks = NETWORKS if networks is None else networks
    kernels = models.initial_weights(scale=config.weight_scale, seed=config.seed)
    results = {}
    for name, batch_norm in networks.items():
        log_dir = os.path.join(config.run_dir, name) if write else None
        if log_dir is not None:
            clear_event_files(log_dir)
        keras.utils.set_random_seed(config.seed)
        results[name] = train_network(
            config,
            dataset,
            kernels,
            batch_norm,
            name,
            log_dir=log_dir,
            verbose=verbose,
        )
    result = ExperimentResult(config, results, dataset.source)
    if write:
        result.paths = write_results(result)
    return result


def write_results(result):
    """Writes config, results, curves and plot of `result`; returns the paths."""
    from kbn.plotting import plot_training_accuracies

    run_dir = result.config.run_dir
    os.makedirs(run_dir, exist_ok=True)
    paths = {
        "config": os.path.join(run_dir, "config.json"),
        "results_json": os.path.join(run_dir, "results.json"),
        "results_csv": os.path.join(run_dir, "results.csv"),
        "curves": os.path.join(run_dir, "curves.csv"),
        "plot": os.path.join(run_dir, "accuracy.png"),
        "tensorboard": run_dir,
    }
    with open(paths["config"], "w") as f:
        json.dump(run_metadata(result.config, result.data_source), f, indent=2)
    summary = result.summary()
    with open(paths["results_json"], "w") as f:
        json.dump(summary.to_dict(orient="records"), f, indent=2)
    summary.to_csv(paths["results_csv"], index=False)
    result.curves().to_csv(paths["curves"], index=False)
    figure = plot_training_accuracies(result)
    figure.savefig(paths["plot"], dpi=120)
    import matplotlib.pyplot as plt

    plt.close(figure)
    return paths


def run_metadata(config, data_source):
    """The resolved configuration and the circumstances of a run."""
    return {
        "config": dataclasses.asdict(config),
        "weight_scale": config.weight_scale,
        "batches_per_step": config.resolved_batches_per_step,
        "data_source": data_source,
        "backend": keras.backend.backend(),
        "keras_version": keras.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
    }


def clear_event_files(log_dir):
    """Removes the TensorBoard event files of an earlier run in `log_dir`.

    A run replaces an earlier run of the same name; without this, TensorBoard
    would draw both runs' events as one jagged line.
    """
    for path in glob.glob(os.path.join(log_dir, "*", "events.out.tfevents.*")):
        os.remove(path)


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check(ok, name, value, expected):
    if not ok:
        raise ValueError(
            f"Invalid value for argument {name}. Expected {expected}. "
            f"Received: {name}={value!r}"
        )
