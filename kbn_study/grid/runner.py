"""The whole study as one resumable grid of runs.

A run is one configuration x one seed x one network, on one dataset. `run_grid`
trains the runs, one after the other or several at once in worker processes or
on Ray (`kbn_study.sweeps.executors`), and appends each run's row to `<out>/results.csv`
(and its learning curve to `<out>/curves.csv`) as soon as it finishes
(`kbn_study.grid.files`), so an interrupted grid loses at most the runs in
progress. This process alone writes those files. Called again with the same
output folder it skips the finished runs: a run is identified by every setting
that changes its results, the data included, so runs on other data are added
beside the earlier ones. A diverging run (NaN loss) is a row like any other,
with `diverged=True`.

It must not hold how one network trains (`kbn_study.training.runs`) nor the
files' format (`kbn_study.grid.files`).
"""

import contextlib
import dataclasses
import datetime
import functools
import os
import signal
import sys
import threading

import keras
import pandas as pd

from kbn import checks
from kbn_study.grid import files as grid_files
from kbn_study.outputs import hparams
from kbn_study.studies import experiment
from kbn_study.studies import published
from kbn_study.sweeps import executors as sweep
from kbn_study.sweeps import progress as sweep_progress
from kbn_study.training import runs


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
    executor=None,
):
    """Runs (or resumes) the grid; returns the rows of this grid's runs.

    Args:
        out_dir: Output folder: `results.csv`, `curves.csv` and one
            TensorBoard folder per configuration and seed, each network a
            trial of the HParams dashboard (`kbn_study.outputs.hparams`).
        dataset: `kbn_study.data.mnist.Dataset`.
        configurations: `kbn_study.studies.published.StudyConfiguration`s to run.
        seeds: Number of seeds; seeds are `0 .. seeds - 1`, so a later call
            with more seeds adds runs and keeps the earlier ones.
        fraction: Share of each configuration's length to train (1: the
            study's length).
        networks: Mapping from network name to `build_mlp`'s `batch_norm`
            (picklable, e.g. a bool or a class, for executors other than
            `InProcess`); default without and with batch norm.
        verbose: Print a line per finished run and the sweep's progress.
        executor: Where the runs execute (`kbn_study.sweeps.executors`): `InProcess()`
            (the default), `Workers(count)` or `Ray(address)`. This process
            alone writes the files, whatever the executor.

    Returns:
        A DataFrame with the finished runs of this grid (earlier calls
        included), in `results.csv`'s columns, in the grid's order. Its
        `attrs["lost"]` counts the runs of this call that were lost with
        their worker twice (listed in `<out>/failed.csv`; a later call runs
        them again).
    """
    networks = experiment.NETWORKS if networks is None else networks
    executor = sweep.InProcess() if executor is None else executor
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
            f"in {results_path}, {len(todo)} to run"
            + (f" on {executor.description}." if todo else ".")
        )
    lost = 0
    if todo:
        lost = _run_all(todo, dataset, networks, executor, out_dir, verbose)
    rows = rows_of(grid, dataset, grid_files.read_results(results_path))
    rows.attrs["lost"] = lost
    return rows


def _run_all(todo, dataset, networks, executor, out_dir, verbose):
    """Runs `todo` on `executor`, recording each run as it finishes.

    Returns the number of runs lost; raises KeyboardInterrupt after a Ctrl-C,
    with every finished run recorded.
    """
    results_path = os.path.join(out_dir, "results.csv")
    curves_path = os.path.join(out_dir, "curves.csv")
    progress = None
    if verbose:
        progress = sweep_progress.SweepProgress(
            len(todo),
            sum(run.config.batches for run in todo),
            lengths=[run.config.batches for run in todo],
            parallel=getattr(executor, "parallel", 1),
        )
    tasks = [(run, networks[run.network]) for run in todo]
    lost = 0
    with _interrupt_after_saving() as interrupt, executor.start(dataset) as session:

        def stop():
            if progress is not None:
                progress.tick()
            return interrupt.requested

        try:
            for outcome in session.run(execute, tasks, stop=stop):
                run = todo[outcome.index]
                label = f"{run.config.name(dataset)} {run.network}"
                if outcome.lost:
                    lost += 1
                    grid_files.record_failure(
                        os.path.join(out_dir, "failed.csv"),
                        run.key_fields(dataset),
                        outcome.lost,
                    )
                    if progress is not None:
                        progress.run_failed(label, run.config.batches, outcome.lost)
                    continue
                record(run, outcome.value, dataset, results_path, curves_path)
                if progress is not None:
                    progress.run_finished(
                        label,
                        run.config.batches,
                        _describe(outcome.value),
                        seconds=outcome.value.wall_time,
                    )
        finally:
            if progress is not None:
                progress.close()
        if interrupt.requested:
            raise KeyboardInterrupt
    return lost


def execute(dataset, task, stop=None):
    """Trains one grid run and writes its HParams trial; the worker's task.

    Args:
        dataset: `kbn_study.data.mnist.Dataset`.
        task: `(GridRun, batch_norm)`.
        stop: None, or a function: when it says True the run stops at its
            next batch and None is returned (a run cut short is no result).

    Returns:
        The run's `kbn_study.training.runs.NetworkResult` without its model (so that
        it travels between processes), or None if stopped.
    """
    run, batch_norm = task
    result = runs.train(dataset, network_run(run, dataset, batch_norm), stop)
    if stop is not None and stop():
        return None
    # The trial first: the result row, written by the caller, marks the run
    # as finished.
    hparams.write_trial(
        run.log_dir(dataset),
        hparams.trial_hparams(run.key_fields(dataset)),
        result,
        trial_id=f"{run.config.name(dataset)}/{run.network}",
    )
    return result


def _describe(result):
    text = (
        f"val. {result.final_validation_accuracy:.4f}, "
        f"test {result.test_accuracy:.4f}, {result.wall_time:.1f} s"
    )
    return text + (", diverged" if result.diverged else "")


def rows_of(grid, dataset, results):
    """The rows of `results` that belong to `grid` on `dataset`, in its order."""
    position = {
        grid_files.key_of(run.key_fields(dataset)): i for i, run in enumerate(grid)
    }
    if results.empty:
        return results
    keys = grid_files.key_column(results)
    mine = results[keys.isin(position)]
    order = keys[keys.isin(position)].map(position)
    mine = mine.iloc[order.argsort(kind="stable").to_numpy()]
    return mine.reset_index(drop=True)


def network_run(run, dataset, batch_norm):
    """The `kbn_study.training.runs.NetworkRun` of one grid run (no model kept:
    the result travels from a worker)."""
    config = run.config
    build = experiment.network_builders(config, {run.network: batch_norm})
    return runs.NetworkRun(
        name=run.network,
        build=build[run.network],
        optimizer=functools.partial(keras.optimizers.SGD, config.learning_rate),
        schedule=config.schedule,
        log_dir=run.log_dir(dataset),
        verbose=False,
        keep_model=False,
    )


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
    """Turns Ctrl-C into a request that the sweep honours.

    A KeyboardInterrupt raised at an arbitrary point can be swallowed (for
    instance inside a garbage-collection callback) or land between two file
    writes. Instead, the first Ctrl-C sets a flag: a run in progress in this
    process stops at its next batch, worker processes are ended, the runs in
    progress are not recorded, and `run_grid` raises KeyboardInterrupt with
    every finished run saved. A second Ctrl-C aborts at once (the workers
    are ended all the same).
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
            "\nStopping: runs in progress are dropped, finished runs are "
            "kept (Ctrl-C again to abort at once).",
            file=sys.stderr,
        )

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield interrupt
    finally:
        signal.signal(signal.SIGINT, previous)


def count_finished(out_dir):
    """How many finished runs `<out_dir>/results.csv` holds."""
    return len(grid_files.read_results(os.path.join(out_dir, "results.csv")))
