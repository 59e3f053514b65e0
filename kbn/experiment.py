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
`kbn.training.MultiStepTrainer` (see `kbn.fitting`).
"""

import dataclasses
import os
import platform

import keras

from kbn import data as kbn_data
from kbn import fitting
from kbn import models
from kbn.fitting import ComparisonResult
from kbn.fitting import NetworkResult  # noqa: F401 - part of this module's API
from kbn.fitting import check as _check
from kbn.fitting import clear_event_files  # noqa: F401 - used by kbn.grid

WEIGHT_SCALES = {"good": models.GOOD_WEIGHT_SCALE, "bad": models.BAD_WEIGHT_SCALE}
NETWORKS = {"without_bn": False, "with_bn": True}


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
        _ = self.schedule  # validates batches, sampling, batch size, seed

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
    def schedule(self):
        return fitting.Schedule(
            batches=self.batches,
            batches_per_sample=self.batches_per_sample,
            batch_size=self.batch_size,
            seed=self.seed,
            batches_per_step=self.batches_per_step,
        )

    @property
    def sample_interval(self):
        return self.schedule.sample_interval

    @property
    def resolved_batches_per_step(self):
        return self.schedule.resolved_batches_per_step

    @property
    def run_dir(self):
        return os.path.join(self.log_dir, self.name)


@dataclasses.dataclass
class ExperimentResult(ComparisonResult):
    """Both networks' results, their configuration, and where they went."""

    config: ExperimentConfig = None


def train_network(
    config, dataset, kernels, batch_norm, name, log_dir=None, callbacks=(), verbose=True
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
        A `kbn.fitting.NetworkResult`.
    """
    return fitting.fit_and_test(
        models.build_mlp(kernels, config.activation, batch_norm),
        dataset,
        keras.optimizers.SGD(config.learning_rate),
        config.schedule,
        name,
        log_dir=log_dir,
        callbacks=callbacks,
        verbose=verbose,
    )


def build_trainer(config, dataset, kernels, batch_norm):
    """The network of `config` and its compiled `MultiStepTrainer`."""
    model = models.build_mlp(kernels, config.activation, batch_norm)
    optimizer = keras.optimizers.SGD(config.learning_rate)
    return model, fitting.make_trainer(model, dataset, optimizer, config.schedule)


def training_blocks(config, dataset):
    """The endless stream of index blocks that `fit_batches` trains on."""
    return fitting.training_blocks(config.schedule, dataset)


def fit_batches(trainer, config, blocks, batches, callbacks=()):
    """Trains for `batches` batches (see `kbn.fitting.fit_batches`)."""
    return fitting.fit_batches(trainer, config.schedule, blocks, batches, callbacks)


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
    result = ExperimentResult(
        results, dataset.source, title=describe(config), config=config
    )
    if write:
        result.paths = write_results(result)
    return result


def write_results(result):
    """Writes config, results, curves and plot of `result`; returns the paths."""
    metadata = run_metadata(result.config, result.data_source)
    return fitting.write_comparison(result, result.config.run_dir, metadata)


def describe(config):
    """One-line description of an experiment configuration."""
    return (
        f"{config.activation}, learning rate {config.learning_rate:g}, "
        f"{config.weights} weights (σ {config.weight_scale:g}), "
        f"{config.batches:,} batches of {config.batch_size}"
    )


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


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)
