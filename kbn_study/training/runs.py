"""Train one network for N batches, record its learning curve, test it.

The one path every recipe, the grid and the sweeps' workers train through,
whatever the network (the study's MLP, a conv net, an LSTM):

- a `Schedule` says how many batches, of what size, how often the
  validation accuracy is sampled, and the seed of the initial weights and
  the batch order;
- a `NetworkRun` says what to train: the network's name, how to build it
  and its optimizer, the schedule, its TensorBoard folder, extra callbacks
  or another batch order; it pickles, so that it travels to a worker;
- `train(dataset, run)` is the path: it clears the event files of an
  earlier run in the folder, seeds, builds, trains, records and tests
  (`train_network`), and returns a `NetworkResult`;
- `train_network` wraps the model in `kbn.MultiStepTrainer`, runs
  `model.fit` with kbn's callbacks (validation recorder, TensorBoard
  scalars and batch-norm statistics, progress bar), tests the model in
  inference mode and returns a `NetworkResult`;
- `network_result` builds that result, divergence judged by `diverged`,
  for a loop that drives the callbacks itself (the multi-worker recipe);
- `run_name` names a run's folder after every setting that changes its
  results.

It must not hold how several networks are compared or written
(`kbn_study.training.comparison`), nor anything of one study.

One Keras "epoch" is one sampling interval, so the training loss Keras
reports at a sample (a running mean since the start of the epoch) is the
mean over the interval. Everything a run writes for TensorBoard goes into
one folder per network, against the global batch (see
`tensorboard_callbacks`).
"""

import dataclasses
import glob
import math
import os
import time
from collections.abc import Callable

import keras
import numpy as np

from kbn import callbacks as kbn_callbacks
from kbn import checks
from kbn import distributed
from kbn import seeding
from kbn.callbacks import GlobalStepCallback
from kbn.evaluation import Accuracy
from kbn.trainer import MultiStepTrainer
from kbn.trainer import index_batches
from kbn_study.training.sampling import study_sampling_interval

MAX_BATCHES_PER_STEP = 250


@dataclasses.dataclass(frozen=True)
class Schedule:
    """How long a run trains and how often it samples validation accuracy."""

    # Training batches.
    batches: int = 2_000
    # Validation accuracy is sampled every this many batches (and after the
    # last batch).
    batches_per_sample: int = 50
    # Examples per batch.
    batch_size: int = 60
    # Seed of the batch order (a non-negative int, as NumPy's generators want).
    seed: int = 0
    # Batches per compiled call; None: the largest divisor of the sampling
    # interval up to 250, so that callbacks fire exactly at the samples.
    batches_per_step: int | None = None

    def __post_init__(self):
        checks.check_int(self.batches, "batches")
        checks.check_int(self.batches_per_sample, "batches_per_sample")
        checks.check_int(self.batch_size, "batch_size")
        checks.check_int(self.seed, "seed", minimum=0)
        if self.batches_per_step is not None:
            per_step = self.batches_per_step
            if not (
                checks.is_int(per_step)
                and per_step > 0
                and self.sample_interval % per_step == 0
            ):
                checks.fail(
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


def run_name(stem, schedule, data_tag):
    """The folder name of a run: every setting that changes its results.

    `<stem>_<batches>x<batch size>[_sample<n>]_seed<seed>_<data tag>`, with
    `_sample<n>` only where the sampling interval is not the study's rule
    (`study_sampling_interval`). `stem` holds the
    recipe's own settings (for the study's MLP
    `<activation>_lr<rate>_<weights>`).
    """
    sampling = ""
    if schedule.batches_per_sample != study_sampling_interval(schedule.batches):
        sampling = f"_sample{schedule.batches_per_sample}"
    return (
        f"{stem}_{schedule.batches}x{schedule.batch_size}{sampling}"
        f"_seed{schedule.seed}_{data_tag}"
    )


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


def diverged(losses, model):
    """Whether a run diverged: a non-finite loss, or a non-finite weight."""
    if not all(math.isfinite(loss) for loss in losses):
        return True
    return not all(
        np.isfinite(keras.ops.convert_to_numpy(w)).all() for w in model.weights
    )


def network_result(name, recorder, model, dataset, wall_time):
    """A `NetworkResult` from a finished run's recorder; tests the model."""
    return NetworkResult(
        name=name,
        steps=list(recorder.steps),
        accuracies=list(recorder.accuracies),
        losses=list(recorder.losses),
        final_validation_accuracy=recorder.accuracies[-1],
        test_accuracy=Accuracy(model, dataset.test.images, dataset.test.labels)(),
        diverged=diverged(recorder.losses, model),
        wall_time=wall_time,
        model=model,
    )


def make_trainer(model, dataset, optimizer, schedule, loss=None, sharded_step=True):
    """A compiled `MultiStepTrainer` for `model` on `dataset.train.images`.

    With the batch split across devices (several JAX processes), each
    device runs its part (`sharded_step`, the default): one collective per
    batch norm and pass, one for the gradients; `sharded_step=False` leaves
    XLA to partition the step (the path before it, for comparisons).
    """
    trainer = MultiStepTrainer(
        model,
        dataset.train.images,
        schedule.resolved_batches_per_step,
        sharded_step=sharded_step,
    )
    trainer.compile(
        optimizer=optimizer,
        loss=loss or keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return trainer


def training_blocks(schedule, dataset):
    """The endless stream of index blocks that `fit_batches` trains on."""
    return index_batches(
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
        checks.fail("batches", batches, f"a multiple of {interval}")
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


def tensorboard_callbacks(log_dir, schedule, dataset, batch_norm_statistics=True):
    """kbn's TensorBoard callbacks of a run, besides the validation recorder.

    Every sample (`schedule.batches_per_sample`), into `log_dir`, against
    the global batch: `train/loss` (`kbn.callbacks.TrainingScalars`) and,
    with `batch_norm_statistics`, each batch norm's moving statistics, gamma
    and beta as histograms and its gaps between batch and moving statistics
    on the first training batch of the data (`kbn.callbacks.
    BatchNormStatistics`; nothing for a network without batch norm).
    """
    every = schedule.batches_per_sample
    callbacks = [kbn_callbacks.TrainingScalars(log_dir, every_n_batches=every)]
    if batch_norm_statistics:
        callbacks.append(
            kbn_callbacks.BatchNormStatistics(
                log_dir,
                every_n_batches=every,
                probe_images=dataset.train.images[: schedule.batch_size],
            )
        )
    return callbacks


def train_network(
    model,
    dataset,
    optimizer,
    schedule,
    name,
    log_dir=None,
    callbacks=(),
    verbose=True,
    batch_norm_statistics=True,
    blocks=None,
):
    """Trains `model`, recording validation accuracy, then tests it.

    Args:
        model: An uncompiled classifier returning logits.
        dataset: `kbn_study.data.mnist.Dataset` whose images the model takes.
        optimizer: A Keras optimizer.
        schedule: `Schedule`.
        name: Network name in results ("with_bn", ...).
        log_dir: TensorBoard folder for this network, or None. It holds
            one event file: `validation/accuracy`, `train/loss` and the
            batch-norm statistics, all against the global batch (see
            `tensorboard_callbacks`).
        callbacks: Extra callbacks for `fit`.
        verbose: Show a progress bar (on process 0 only, under several
            JAX processes).
        batch_norm_statistics: With `log_dir`, also log every batch norm's
            statistics (`kbn.callbacks.BatchNormStatistics`).
        blocks: Optional endless iterator of `(indices, labels)` blocks of
            `schedule.resolved_batches_per_step` batches of
            `schedule.batch_size` (as `training_blocks`, which is the
            default: i.i.d. batches in the seed's order), for another
            batch order, for example batches drawn from a few classes.

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
        all_callbacks += tensorboard_callbacks(
            log_dir, schedule, dataset, batch_norm_statistics
        )
    if verbose:
        all_callbacks.append(
            kbn_callbacks.TrainingProgress(schedule.batches, label=f"{name:>10}:")
        )
    if blocks is None:
        blocks = training_blocks(schedule, dataset)
    if distributed.process_count() > 1:
        # Several JAX processes (kbn.distributed): each generates the same
        # global blocks and feeds its shard; `fit` reassembles them.
        blocks = distributed.process_shards(blocks)
    wall_time = fit_batches(trainer, schedule, blocks, schedule.batches, all_callbacks)
    return network_result(name, recorder, model, dataset, wall_time)


@dataclasses.dataclass(frozen=True)
class NetworkRun:
    """One network to train through `train`: what, how long, where it writes.

    Every callable is called in the process that trains (a worker's, with
    `Workers` or `Ray`), so that a `NetworkRun` pickles when its callables
    do: module-level functions or `functools.partial`s of them.
    """

    # The network's name in results ("with_bn", "lstm", ...).
    name: str
    # Returns a new, uncompiled model returning logits.
    build: Callable
    # Returns a new Keras optimizer.
    optimizer: Callable
    schedule: Schedule
    # The network's TensorBoard folder; None writes no event file.
    log_dir: str | None = None
    # Optional `callbacks(log_dir) -> list`: extra callbacks for `fit`.
    callbacks: Callable | None = None
    # Optional `blocks() -> iterator` of index blocks, another batch order
    # than the seed's i.i.d. batches (`train_network`'s `blocks`).
    blocks: Callable | None = None
    # Log every batch norm's statistics (kbn.callbacks.BatchNormStatistics).
    batch_norm_statistics: bool = True
    # A progress bar.
    verbose: bool = True
    # Keep the trained model in the result; False returns it without (to
    # travel between processes) and clears Keras's session.
    keep_model: bool = True


def train(dataset, run, stop=None):
    """Trains, records and tests one network: the study's one training path.

    Clears the event files of an earlier run in `run.log_dir` (a run
    replaces an earlier one of the same name; on process 0 only, under
    several JAX processes), seeds Python, NumPy and Keras with the
    schedule's seed (`kbn.set_random_seed`), builds the network, then
    `train_network`.

    Args:
        dataset: `kbn_study.data.mnist.Dataset`.
        run: `NetworkRun`.
        stop: None, or a function asked after every compiled call: when it
            says True, training stops at once (the caller drops the result).

    Returns:
        A `NetworkResult` (without its model if `run.keep_model` is False).
        The signature is that of a sweep's task (`kbn_study.sweeps`).
    """
    if run.log_dir is not None and distributed.is_writer():
        clear_event_files(run.log_dir)
    seeding.set_random_seed(run.schedule.seed)
    model = run.build()
    callbacks = list(run.callbacks(run.log_dir)) if run.callbacks else []
    if stop is not None:
        callbacks.append(_StopWhenRequested(stop))
    result = train_network(
        model,
        dataset,
        run.optimizer(),
        run.schedule,
        run.name,
        log_dir=run.log_dir,
        callbacks=callbacks,
        verbose=run.verbose,
        batch_norm_statistics=run.batch_norm_statistics,
        blocks=None if run.blocks is None else run.blocks(),
    )
    if not run.keep_model:
        result = dataclasses.replace(result, model=None)
        keras.backend.clear_session()
    return result


def clear_event_files(log_dir):
    """Removes the TensorBoard event files of an earlier run in `log_dir`.

    A run replaces an earlier run of the same name; without this, TensorBoard
    would draw both runs' events as one jagged line. The files in `log_dir`
    and in every folder below it go (earlier versions wrote into `train/`
    and `validation/` subfolders).
    """
    pattern = os.path.join(glob.escape(log_dir), "**", "events.out.tfevents.*")
    for path in glob.glob(pattern, recursive=True):
        os.remove(path)


class _StopWhenRequested(GlobalStepCallback):
    """Stops `fit` after the compiled call at which `stop()` says True."""

    def __init__(self, stop):
        super().__init__()
        self.stop = stop

    def on_steps_end(self, logs=None):
        if self.stop():
            self._model.stop_training = True
