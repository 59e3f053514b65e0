"""The study's experiment: one network with batch norm, one without.

`train_and_test(config)` builds both 784-100-100-100-10 networks from the
same initial weights, trains each with plain SGD on the same sequence of
batches for `config.batches` batches, records the validation accuracy every
`config.batches_per_sample` batches, and tests both in inference mode (batch
norm with its population statistics), through
`kbn_study.training.comparison.compare_networks`. Everything it writes goes under
`<config.log_dir>/<run name>/` (see `kbn_study.training.comparison`).

It must not train itself: the networks go through
`kbn_study.training.comparison`.
"""

import dataclasses
import functools
import os

import keras

from kbn import checks
from kbn_study.data import mnist
from kbn_study.models import networks
from kbn_study.outputs import hparams
from kbn_study.studies.published import STUDY_BATCH_SIZE
from kbn_study.studies.published import study_sampling_interval
from kbn_study.training import comparison
from kbn_study.training import runs

WEIGHT_SCALES = {"good": networks.GOOD_WEIGHT_SCALE, "bad": networks.BAD_WEIGHT_SCALE}
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
    # Validation accuracy is sampled every this many batches; None: the
    # study's rule (500 from 10,000 batches on, else 50).
    batches_per_sample: int | None = None
    # Images per batch (the study: 60).
    batch_size: int = STUDY_BATCH_SIZE
    # Seed of the initial weights and of the batch order.
    seed: int = 0
    # Outputs go to <log_dir>/<run name>/.
    log_dir: str = "logs"
    # Folder name of the run; None derives it from every setting that
    # changes the results, the data included (see `run_name`).
    run_name: str | None = None
    # MNIST files (mnist.npz or IDX folder); None: Keras cache, download,
    # then the offline 5,000-digit subset.
    data: str | None = None
    # "mnist" or "fashion_mnist".
    dataset: str = "mnist"
    # Batches per compiled call of the training step; None: the largest
    # divisor of the sampling interval up to 250, so that callbacks fire
    # exactly at the samples. Does not change the results.
    batches_per_step: int | None = None

    @classmethod
    def from_args(cls, args):
        """The configuration that a command's parsed arguments ask for
        (`cli.add_run_arguments` and the study's configuration flags)."""
        return cls(
            activation=args.activation,
            learning_rate=args.learning_rate,
            weights=args.weights,
            batches=args.batches,
            batches_per_sample=args.batches_per_sample,
            seed=args.seed,
            log_dir=args.log_dir,
            data=args.data,
            dataset=args.dataset,
        )

    def __post_init__(self):
        if not (isinstance(self.activation, str) and self.activation):
            checks.fail("activation", self.activation, "the name of a Keras activation")
        checks.check_float(self.learning_rate, "learning_rate", positive=True)
        checks.check_choice(self.weights, "weights", WEIGHT_SCALES)
        checks.check_choice(self.dataset, "dataset", ("mnist", "fashion_mnist"))
        _ = self.schedule  # validates batches, sampling, batch size, seed

    @property
    def weight_scale(self):
        return WEIGHT_SCALES[self.weights]

    @property
    def schedule(self):
        return runs.Schedule(
            batches=self.batches,
            batches_per_sample=self.batches_per_sample
            or study_sampling_interval(self.batches),
            batch_size=self.batch_size,
            seed=self.seed,
            batches_per_step=self.batches_per_step,
        )

    @property
    def stem(self):
        """The settings of the study's MLP in a run name: `relu_lr0.01_good`."""
        return f"{self.activation}_lr{self.learning_rate:g}_{self.weights}"

    def name(self, dataset):
        """The run's folder name: `run_name`, or every result-changing setting."""
        if self.run_name:
            return self.run_name
        return runs.run_name(self.stem, self.schedule, dataset.tag)

    def run_dir(self, dataset):
        return os.path.join(self.log_dir, self.name(dataset))

    def describe(self):
        """One line: the configuration as the study states it."""
        return (
            f"{self.activation}, learning rate {self.learning_rate:g}, "
            f"{self.weights} weights (σ {self.weight_scale:g}), "
            f"{self.batches:,} batches of {self.batch_size}"
        )


def network_builders(config, variants=None):
    """`{name: build}` for `compare_networks`, every network from one set of
    initial kernels (`kbn_study.models.networks.initial_weights` with the
    seed); each `build` pickles (a worker process builds its network).

    Args:
        config: `ExperimentConfig`.
        variants: Mapping from network name to `build_mlp`'s `batch_norm`
            argument; default `NETWORKS` (without and with batch norm).
    """
    kernels = networks.initial_weights(scale=config.weight_scale, seed=config.seed)
    return {
        name: functools.partial(
            networks.build_mlp, kernels, config.activation, batch_norm
        )
        for name, batch_norm in (variants or NETWORKS).items()
    }


def train_and_test(
    config, dataset=None, networks=None, write=True, verbose=True, executor=None
):
    """Runs the with/without batch-norm comparison of `config`.

    Args:
        config: `ExperimentConfig`.
        dataset: Optional `kbn_study.data.mnist.Dataset`; loaded from `config`
            when None.
        networks: Optional mapping from network name to `build_mlp`'s
            `batch_norm` argument; default `{"without_bn": False, "with_bn":
            True}`.
        write: Write results, plot and TensorBoard logs (each network a
            trial of TensorBoard's HParams dashboard, see
            `kbn_study.outputs.hparams`) under `config.run_dir(dataset)`.
        verbose: Show progress bars (in this process only; with an
            executor, one line per finished network).
        executor: None: the networks train one after the other in this
            process. Else a `kbn_study.sweeps` executor (`Workers(count)`,
            `Ray(address)`): the networks train at once, each in a process
            of one thread; their results carry no model
            (`NetworkResult.model` is None).

    Returns:
        A `kbn_study.training.comparison.ComparisonResult`.
    """
    if dataset is None:
        dataset = mnist.load_mnist(config.data, name=config.dataset)
    metadata = {
        "config": dataclasses.asdict(config),
        "run": config.name(dataset),
        "weight_scale": config.weight_scale,
        "batches_per_sample": config.schedule.batches_per_sample,
        "batches_per_step": config.schedule.resolved_batches_per_step,
    }
    result = comparison.compare_networks(
        network_builders(config, networks),
        dataset,
        functools.partial(keras.optimizers.SGD, config.learning_rate),
        config.schedule,
        run_dir=config.run_dir(dataset) if write else None,
        title=config.describe(),
        metadata=metadata,
        verbose=verbose,
        executor=executor,
    )
    if write:
        hparams.write_comparison_trials(
            config.run_dir(dataset), config, dataset.tag, result
        )
    return result
