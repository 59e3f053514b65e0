"""The whole study as one resumable grid of runs.

A run is one configuration x one seed x one network, on one dataset. `run_grid`
trains the runs one after the other and appends each run's row to
`<out>/results.csv` (and its learning curve to `<out>/curves.csv`) as soon as
it finishes (`kbn_study.grid_files`), so an interrupted grid loses at most
the run in progress. Called again with the same output folder it skips the
finished runs: a run is identified by every setting that changes its results,
the data included, so runs on other data are added beside the earlier ones.
A diverging run (NaN loss) is a row like any other, with `diverged=True`.
"""

import contextlib
import dataclasses
import datetime
import os
import signal
import sys
import threading

import keras
import pandas as pd

from kbn import checks
from kbn.callbacks import GlobalStepCallback
from kbn_study import comparison
from kbn_study import experiment
from kbn_study import grid_files
from kbn_study import hparams
from kbn_study import published
from kbn_study import runs


@dataclasses.dataclass(frozen=True)
class GridRun:
    """One run of the grid: a study configuration, a seed, a network."""

    configuration: published.StudyConfiguration
    config: experiment.ExperimentConfig
    network: str

    def key_fields(self, dataset):
        """The run's identity, as `grid_files.RUN_KEY` columns."""
        return {
            "activation": self.config.activation,
            "learning_rate": self.config.learning_rate,
            "weights": self.config.weights,
            "study_batches": self.configuration.batches,
            "batches": self.config.batches,
            "seed": self.config.seed,
            "network": self.network,
            "data": dataset.tag,
        }

    def log_dir(self, dataset):
        """The run's TensorBoard folder, `<out>/<run name>/<network>`."""
        return os.path.join(self.config.run_dir(dataset), self.network)


def experiment_config(configuration, seed, out_dir, fraction=1.0):
    """The `ExperimentConfig` of one grid run.

    With `fraction` below 1, the run trains `fraction` of the configuration's
    length (at least one batch), so the study's 50,000- and 2,000-batch
    configurations stay distinct, and samples its validation accuracy by the
    study's rule for that length.
    """
    checks.check_float(fraction, "fraction", positive=True, maximum=1.0)
    return experiment.ExperimentConfig(
        activation=configuration.activation,
        learning_rate=float(configuration.learning_rate),
        weights=configuration.weights,
        batches=max(1, round(configuration.batches * fraction)),
        seed=seed,
        log_dir=os.fspath(out_dir),
    )


def plan(configurations, seeds, out_dir, fraction=1.0, networks=None):
    """Every `GridRun` of the grid, in the study's order."""
    checks.check_int(seeds, "seeds")
    networks = experiment.NETWORKS if networks is None else networks
    return [
        GridRun(
            configuration,
            experiment_config(configuration, seed, out_dir, fraction),
            network,
        )
        for configuration in configurations
        for seed in range(seeds)
        for network in networks
    ]


def run_grid(
    out_dir,
    dataset,
    configurations=published.STUDY_CONFIGURATIONS,
    seeds=1,
    fraction=1.0,
    networks=None,
    verbose=True,
):
    """Runs (or resumes) the grid; returns the rows of this grid's runs.

    Args:
        out_dir: Output folder: `results.csv`, `curves.csv` and one
            TensorBoard folder per configuration and seed, each network a
            trial of the HParams dashboard (`kbn_study.hparams`).
        dataset: `kbn_study.mnist.Dataset`.
        configurations: `kbn_study.published.StudyConfiguration`s to run.
        seeds: Number of seeds; seeds are `0 .. seeds - 1`, so a later call
            with more seeds adds runs and keeps the earlier ones.
        fraction: Share of each configuration's length to train (1: the
            study's length).
        networks: Mapping from network name to `build_mlp`'s `batch_norm`;
            default without and with batch norm.
        verbose: Print a line per run and progress bars.

    Returns:
        A DataFrame with the finished runs of this grid (earlier calls
        included), in `results.csv`'s columns.
    """
    networks = experiment.NETWORKS if networks is None else networks
    grid = plan(configurations, seeds, out_dir, fraction, networks)
    os.makedirs(out_dir, exist_ok=True)
    results_path = os.path.join(out_dir, "results.csv")
    curves_path = os.path.join(out_dir, "curves.csv")
    done = grid_files.prepare(results_path, curves_path)
    todo = [
        run for run in grid if grid_files.key_of(run.key_fields(dataset)) not in done
    ]
    # The HParams dashboard's experiment: this grid's runs and every earlier
    # run in the folder.
    finished = grid_files.read_results(results_path).to_dict(orient="records")
    hparams.write_experiment(
        out_dir,
        [hparams.trial_hparams(run.key_fields(dataset)) for run in grid]
        + [hparams.trial_hparams(row) for row in finished],
    )
    if verbose:
        print(
            f"Grid: {len(grid)} runs, {len(grid) - len(todo)} already finished "
            f"in {results_path}, {len(todo)} to run."
        )
    with _interrupt_after_saving() as interrupt:
        for index, run in enumerate(todo, 1):
            if interrupt.requested:
                raise KeyboardInterrupt
            if verbose:
                print(f"[{index}/{len(todo)}] {run.config.name(dataset)} {run.network}")
            result = train_run(
                run,
                dataset,
                networks[run.network],
                callbacks=[_StopWhenRequested(interrupt)],
                verbose=verbose,
            )
            if interrupt.requested:
                raise KeyboardInterrupt  # the run was cut short: not a result
            # The trial first: the result row marks the run as finished.
            hparams.write_trial(
                run.log_dir(dataset),
                hparams.trial_hparams(run.key_fields(dataset)),
                result,
                trial_id=f"{run.config.name(dataset)}/{run.network}",
            )
            record(run, result, dataset, results_path, curves_path)
    return rows_of(grid, dataset, grid_files.read_results(results_path))


def rows_of(grid, dataset, results):
    """The rows of `results` that belong to `grid` on `dataset`."""
    keys = {grid_files.key_of(run.key_fields(dataset)) for run in grid}
    if results.empty:
        return results
    mine = results[grid_files.key_column(results).isin(keys)]
    return mine.reset_index(drop=True)


def train_run(run, dataset, batch_norm, callbacks=(), verbose=True):
    """Trains and tests one grid run; returns its `kbn_study.runs.NetworkResult`."""
    config = run.config
    log_dir = run.log_dir(dataset)
    comparison.clear_event_files(log_dir)
    keras.utils.set_random_seed(config.seed)
    build = experiment.network_builders(config, {run.network: batch_norm})[run.network]
    result = runs.train_network(
        build(),
        dataset,
        keras.optimizers.SGD(config.learning_rate),
        config.schedule,
        run.network,
        log_dir=log_dir,
        callbacks=callbacks,
        verbose=verbose,
    )
    keras.backend.clear_session()
    return result


def record(run, result, dataset, results_path, curves_path):
    """Appends a finished run's curve, then its result row (which marks it done)."""
    key = run.key_fields(dataset)
    curve = pd.DataFrame(
        {
            **key,
            "step": result.steps,
            "validation_accuracy": result.accuracies,
            "training_loss": result.losses,
        }
    )
    grid_files.append_rows(
        curves_path, grid_files.CURVE_COLUMNS, curve.to_dict(orient="records")
    )
    row = {
        **key,
        **result.summary(),
        "batches_per_sample": run.config.schedule.batches_per_sample,
        "data_source": dataset.source,
        "backend": keras.backend.backend(),
        "finished_at": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    grid_files.append_rows(results_path, grid_files.RESULT_COLUMNS, [row])


class _Interrupt:
    requested = False


@contextlib.contextmanager
def _interrupt_after_saving():
    """Turns Ctrl-C into a request that the training loop honours.

    A KeyboardInterrupt raised at an arbitrary point can be swallowed (for
    instance inside a garbage-collection callback) or land between two file
    writes. Instead, the first Ctrl-C sets a flag: the run in progress stops
    at its next batch, is not recorded, and `run_grid` raises
    KeyboardInterrupt with every finished run saved. A second Ctrl-C aborts
    at once.
    """
    interrupt = _Interrupt()
    if threading.current_thread() is not threading.main_thread():
        yield interrupt
        return

    def handler(signum, frame):
        if interrupt.requested:
            raise KeyboardInterrupt
        interrupt.requested = True
        print(
            "\nStopping: the run in progress is dropped, finished runs are "
            "kept (Ctrl-C again to abort at once).",
            file=sys.stderr,
        )

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield interrupt
    finally:
        signal.signal(signal.SIGINT, previous)


class _StopWhenRequested(GlobalStepCallback):
    def __init__(self, interrupt):
        super().__init__()
        self.interrupt = interrupt

    def on_steps_end(self, logs=None):
        if self.interrupt.requested:
            self._model.stop_training = True


def count_finished(out_dir):
    """How many finished runs `<out_dir>/results.csv` holds."""
    return len(grid_files.read_results(os.path.join(out_dir, "results.csv")))
