"""Train a classifier for N batches, record its curve, test it, write results.

The machinery every recipe shares, whatever the network (the study's MLP,
a conv net, an LSTM): a `Schedule` (how many batches, how often to sample
the validation accuracy), `fit_and_test` (`MultiStepTrainer` + `model.fit`
with kbn's callbacks, then the test accuracy in inference mode) and
`write_comparison` (CSV, JSON and PNG for a set of networks trained side by
side). One Keras "epoch" is one sampling interval, so Keras's epoch-level
logs line up with the samples.
"""

import dataclasses
import json
import math
import os
import time

import keras
import numpy as np
import pandas as pd

from kbn import callbacks as kbn_callbacks
from kbn import data as kbn_data
from kbn.inference import Accuracy
from kbn.training import MultiStepTrainer

MAX_BATCHES_PER_STEP = 250


@dataclasses.dataclass(frozen=True)
class Schedule:
    """How long a run trains and how often it samples validation accuracy."""

    # Training batches.
    batches: int = 2_000
    # Validation accuracy is sampled every this many batches.
    batches_per_sample: int = 50
    # Examples per batch.
    batch_size: int = 60
    # Seed of the batch order.
    seed: int = 0
    # Batches per compiled call; None: the largest divisor of the sampling
    # interval up to 250, so that callbacks fire exactly at the samples.
    batches_per_step: int | None = None

    def __post_init__(self):
        for field in ("batches", "batches_per_sample", "batch_size"):
            value = getattr(self, field)
            check(_is_int(value) and value > 0, field, value, "a positive int")
        check(_is_int(self.seed), "seed", self.seed, "an int")
        if self.batches_per_step is not None:
            per_step = self.batches_per_step
            check(
                _is_int(per_step)
                and per_step > 0
                and self.sample_interval % per_step == 0,
                "batches_per_step",
                per_step,
                f"a positive divisor of {self.sample_interval} (the greatest "
                "common divisor of batches and batches_per_sample)",
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
class ComparisonResult:
    """Networks trained side by side, and where their results were written."""

    networks: dict
    data_source: str
    title: str = ""
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


def make_trainer(model, dataset, optimizer, schedule, loss=None):
    """A compiled `MultiStepTrainer` for `model` on `dataset.train.images`."""
    trainer = MultiStepTrainer(
        model, dataset.train.images, schedule.resolved_batches_per_step
    )
    trainer.compile(
        optimizer=optimizer,
        loss=loss or keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return trainer


def training_blocks(schedule, dataset):
    """The endless stream of index blocks that `fit_batches` trains on."""
    return kbn_data.index_batches(
        dataset.train.labels,
        batch_size=schedule.batch_size,
        batches_per_step=schedule.resolved_batches_per_step,
        seed=schedule.seed,
    )


def fit_batches(trainer, schedule, blocks, batches, callbacks=()):
    """Trains for `batches` batches, one Keras epoch per sampling interval.

    Args:
        trainer: From `make_trainer`.
        schedule: `Schedule`.
        blocks: From `training_blocks`; consumed, so calls continue the
            batch order.
        batches: A multiple of `schedule.sample_interval`.
        callbacks: Callbacks for `fit`.

    Returns:
        Wall time of the `fit` call in seconds.
    """
    interval = schedule.sample_interval
    if batches % interval:
        raise ValueError(
            f"Invalid value for argument batches. Expected a multiple of "
            f"{interval}. Received: batches={batches}"
        )
    start = time.perf_counter()
    trainer.fit(
        blocks,
        epochs=batches // interval,
        steps_per_epoch=interval // schedule.resolved_batches_per_step,
        callbacks=list(callbacks),
        shuffle=False,  # the batches are shuffled by index_batches
        verbose=0,
    )
    return time.perf_counter() - start


def fit_and_test(
    model,
    dataset,
    optimizer,
    schedule,
    name,
    log_dir=None,
    callbacks=(),
    verbose=True,
):
    """Trains `model`, recording validation accuracy, then tests it.

    Args:
        model: An uncompiled classifier returning logits.
        dataset: `kbn.data.Dataset` whose images the model takes.
        optimizer: A Keras optimizer.
        schedule: `Schedule`.
        name: Network name in results ("with_bn", ...).
        log_dir: TensorBoard folder for this network, or None.
        callbacks: Extra callbacks for `fit`.
        verbose: Show a progress bar.

    Returns:
        A `NetworkResult`; a run whose loss became NaN is recorded with
        `diverged=True`, not raised.
    """
    trainer = make_trainer(model, dataset, optimizer, schedule)
    recorder = kbn_callbacks.ValidationAccuracyRecorder(
        (dataset.validation.images, dataset.validation.labels),
        every_n_batches=schedule.batches_per_sample,
        log_dir=log_dir,
    )
    all_callbacks = [recorder, *callbacks]
    if log_dir is not None:
        all_callbacks.append(keras.callbacks.TensorBoard(log_dir, write_graph=False))
    if verbose:
        all_callbacks.append(
            kbn_callbacks.TrainingProgress(schedule.batches, label=f"{name:>10}:")
        )
    blocks = training_blocks(schedule, dataset)
    wall_time = fit_batches(trainer, schedule, blocks, schedule.batches, all_callbacks)
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


def write_comparison(result, run_dir, metadata):
    """Writes config, results, curves and plot of `result`; returns the paths."""
    import matplotlib.pyplot as plt

    from kbn.plotting import plot_training_accuracies

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
        json.dump(metadata, f, indent=2)
    summary = result.summary()
    with open(paths["results_json"], "w") as f:
        json.dump(summary.to_dict(orient="records"), f, indent=2, default=_json_default)
    summary.to_csv(paths["results_csv"], index=False)
    result.curves().to_csv(paths["curves"], index=False)
    figure = plot_training_accuracies(result)
    figure.savefig(paths["plot"], dpi=120)
    plt.close(figure)
    return paths


def clear_event_files(log_dir):
    """Removes the TensorBoard event files of an earlier run in `log_dir`.

    A run replaces an earlier run of the same name; without this, TensorBoard
    would draw both runs' events as one jagged line.
    """
    import glob

    for path in glob.glob(os.path.join(log_dir, "*", "events.out.tfevents.*")):
        os.remove(path)


def check(ok, name, value, expected):
    """Raises `ValueError` naming the argument and the received value."""
    if not ok:
        raise ValueError(
            f"Invalid value for argument {name}. Expected {expected}. "
            f"Received: {name}={value!r}"
        )


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _json_default(value):
    if value is pd.NA:
        return None
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"Cannot write {type(value).__name__} to JSON")


def compare_networks(
    builders,
    dataset,
    make_optimizer,
    schedule,
    run_dir=None,
    title="",
    metadata=None,
    verbose=True,
):
    """Trains several networks on the same batches, one after the other.

    Args:
        builders: Mapping from network name to a function returning a new,
            uncompiled model.
        dataset: `kbn.data.Dataset`.
        make_optimizer: Function returning a new optimizer per network.
        schedule: `Schedule`; every network sees the same batch order.
        run_dir: Where to write results and TensorBoard logs (one folder per
            network); None writes nothing.
        title: Plot title.
        metadata: JSON-serializable dict for `config.json`.
        verbose: Show progress bars.

    Returns:
        A `ComparisonResult`.
    """
    networks = {}
    for name, build in builders.items():
        log_dir = None if run_dir is None else os.path.join(run_dir, name)
        if log_dir is not None:
            clear_event_files(log_dir)
        keras.utils.set_random_seed(schedule.seed)
        networks[name] = fit_and_test(
            build(),
            dataset,
            make_optimizer(),
            schedule,
            name,
            log_dir=log_dir,
            verbose=verbose,
        )
    result = ComparisonResult(networks, dataset.source, title=title)
    if run_dir is not None:
        metadata = {
            **(metadata or {}),
            "data_source": dataset.source,
            "backend": keras.backend.backend(),
        }
        result.paths = write_comparison(result, run_dir, metadata)
    return result


def summary_text(result):
    """The per-network table a recipe prints, then the paths it wrote."""
    columns = ["network", "final_validation_accuracy", "test_accuracy", "wall_time_s"]
    lines = [
        result.summary()[columns].to_string(index=False, float_format="{:.4f}".format)
    ]
    lines += [f"{name:>13}: {path}" for name, path in result.paths.items()]
    return "\n".join(lines)
