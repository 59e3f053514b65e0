"""The whole study as one resumable grid of runs.

A run is one configuration x one seed x one network. `run_grid` trains the
runs one after the other and appends each run's row to `<out>/results.csv`
(and its learning curve to `<out>/curves.csv`) as soon as it finishes, so an
interrupted grid loses at most the run in progress. Called again with the
same output folder it skips the finished runs. A diverging run (NaN loss) is
a row like any other, with `diverged=True`.

`summarize` turns the rows into one line per configuration and network: the
mean and spread of the final accuracies over the seeds, the success rate
(final validation accuracy above 0.5), and the study's published figures
beside them.
"""

import contextlib
import csv
import datetime
import io
import math
import os
import signal
import sys
import threading

import keras
import numpy as np
import pandas as pd

from kbn import experiment
from kbn import models
from kbn import study
from kbn.callbacks import GlobalStepCallback

RESULT_COLUMNS = [
    "activation",
    "learning_rate",
    "weights",
    "study_batches",
    "batches",
    "batches_per_sample",
    "seed",
    "network",
    "final_validation_accuracy",
    "test_accuracy",
    "first_step_0.8",
    "first_step_0.9",
    "diverged",
    "wall_time_s",
    "steps_per_second",
    "data_source",
    "backend",
    "finished_at",
]
CURVE_COLUMNS = [
    "activation",
    "learning_rate",
    "weights",
    "study_batches",
    "batches",
    "seed",
    "network",
    "step",
    "validation_accuracy",
    "training_loss",
]
RUN_KEY = [
    "activation",
    "learning_rate",
    "weights",
    "study_batches",
    "batches",
    "seed",
    "network",
]
SUCCESS_ACCURACY = 0.5


def experiment_config(configuration, seed, out_dir, max_batches=None):
    """The `ExperimentConfig` of one grid run.

    With `max_batches` shorter than the configuration, the run is cut to
    `max_batches` and the sampling interval shrinks in proportion, so the
    curve keeps the study's number of samples.
    """
    batches = configuration.batches
    interval = configuration.batches_per_sample
    run_name = (
        f"{configuration.activation}_lr{configuration.learning_rate:g}_"
        f"{configuration.weights}_{batches}_seed{seed}"
    )
    if max_batches is not None and max_batches < batches:
        interval = max(1, interval * max_batches // batches)
        batches = max_batches
        run_name += f"_cap{batches}"
    return experiment.ExperimentConfig(
        activation=configuration.activation,
        learning_rate=float(configuration.learning_rate),
        weights=configuration.weights,
        batches=batches,
        batches_per_sample=interval,
        seed=seed,
        log_dir=os.fspath(out_dir),
        run_name=run_name,
    )


def run_grid(
    out_dir,
    dataset,
    configurations=study.STUDY_CONFIGURATIONS,
    seeds=1,
    max_batches=None,
    networks=None,
    verbose=True,
):
    """Runs (or resumes) the grid; returns all rows of `results.csv`.

    Args:
        out_dir: Output folder: `results.csv`, `curves.csv` and one
            TensorBoard folder per configuration and seed.
        dataset: `kbn.data.Dataset`.
        configurations: `kbn.study.StudyConfiguration`s to run.
        seeds: Number of seeds; seeds are `0 .. seeds - 1`, so a later call
            with more seeds adds runs and keeps the earlier ones.
        max_batches: Optional cap on every run's length.
        networks: Mapping from network name to `build_mlp`'s `batch_norm`;
            default without and with batch norm.
        verbose: Print a line per run and progress bars.

    Returns:
        A DataFrame with every finished run, earlier ones included.
    """
    if not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1:
        raise ValueError(
            f"Invalid value for argument seeds. Expected a positive int. "
            f"Received: seeds={seeds!r}"
        )
    networks = experiment.NETWORKS if networks is None else networks
    os.makedirs(out_dir, exist_ok=True)
    results_path = os.path.join(out_dir, "results.csv")
    curves_path = os.path.join(out_dir, "curves.csv")
    _repair(results_path, RESULT_COLUMNS)
    _repair(curves_path, CURVE_COLUMNS)
    finished = read_results(results_path)
    _check_same_circumstances(finished, dataset, results_path)
    done = set(map(tuple, finished[RUN_KEY].astype(str).values.tolist()))
    _drop_unfinished_curves(curves_path, done)
    backend = keras.backend.backend()

    runs = [
        (configuration, seed, name, batch_norm)
        for configuration in configurations
        for seed in range(seeds)
        for name, batch_norm in networks.items()
    ]
    todo = []
    for configuration, seed, name, batch_norm in runs:
        config = experiment_config(configuration, seed, out_dir, max_batches)
        key = _key(configuration, config, name)
        if key not in done:
            todo.append((configuration, config, name, batch_norm))
    if verbose:
        print(
            f"Grid: {len(runs)} runs, {len(runs) - len(todo)} already finished "
            f"in {results_path}, {len(todo)} to run."
        )
    with _interrupt_after_saving() as interrupt:
        for index, (configuration, config, name, batch_norm) in enumerate(todo, 1):
            if interrupt.requested:
                raise KeyboardInterrupt
            if verbose:
                print(f"[{index}/{len(todo)}] {config.name} {name}")
            _run_one(
                configuration,
                config,
                name,
                batch_norm,
                dataset,
                results_path,
                curves_path,
                backend,
                interrupt,
                verbose,
            )
    return read_results(results_path)


def _run_one(
    configuration,
    config,
    name,
    batch_norm,
    dataset,
    results_path,
    curves_path,
    backend,
    interrupt,
    verbose,
):
    """Trains one run and appends its rows; raises if interrupted."""
    kernels = models.initial_weights(scale=config.weight_scale, seed=config.seed)
    log_dir = os.path.join(config.run_dir, name)
    experiment.clear_event_files(log_dir)
    keras.utils.set_random_seed(config.seed)
    result = experiment.train_network(
        config,
        dataset,
        kernels,
        batch_norm,
        name,
        log_dir=log_dir,
        callbacks=[_StopWhenRequested(interrupt)],
        verbose=verbose,
    )
    if interrupt.requested:
        # The run was cut short: it is not a result.
        raise KeyboardInterrupt
    base = {
        "activation": config.activation,
        "learning_rate": config.learning_rate,
        "weights": config.weights,
        "study_batches": configuration.batches,
        "batches": config.batches,
        "seed": config.seed,
        "network": name,
    }
    curve = pd.DataFrame(
        {
            **base,
            "step": result.steps,
            "validation_accuracy": result.accuracies,
            "training_loss": result.losses,
        }
    )
    _append_rows(curves_path, CURVE_COLUMNS, curve.to_dict(orient="records"))
    row = {
        **base,
        **result.summary(),
        "batches_per_sample": config.batches_per_sample,
        "data_source": dataset.source,
        "backend": backend,
        "finished_at": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    # The results row is written last: it marks the run as finished.
    _append_rows(results_path, RESULT_COLUMNS, [row])
    keras.backend.clear_session()


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


def read_results(path):
    """The finished runs recorded in a `results.csv` (empty if none)."""
    return _read_complete_rows(path, RESULT_COLUMNS)


def read_curves(path):
    """The learning curves recorded in a `curves.csv` (empty if none)."""
    return _read_complete_rows(path, CURVE_COLUMNS)


def _read_complete_rows(path, columns):
    """Rows with every field; a row cut short by a hard kill is dropped."""
    lines = _complete_lines(path, columns)
    if len(lines) <= 1:
        return pd.DataFrame(columns=columns)
    return pd.read_csv(io.StringIO("".join(lines)))


def _complete_lines(path, columns):
    """The header and every complete row of a CSV written by this module."""
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        lines = f.read().splitlines(keepends=True)
    if not lines:
        return []
    # `finished_at`, the last field of a results row, is never empty.
    needs_last = columns[-1] == "finished_at"
    kept = [lines[0]]
    for line in lines[1:]:
        fields = next(csv.reader([line]), [])
        complete = line.endswith("\n") and len(fields) == len(columns)
        if complete and (fields[-1] or not needs_last):
            kept.append(line)
    return kept


def _repair(path, columns):
    """Rewrites a CSV without the rows an interruption cut short."""
    if not os.path.exists(path):
        return
    lines = _complete_lines(path, columns)
    with open(path, newline="") as f:
        original = f.read()
    if "".join(lines) != original:
        with open(path, "w", newline="") as f:
            f.write("".join(lines))


def summarize(results):
    """One row per configuration and network, with the study's figures.

    Columns: the configuration, `network`, `runs`, the mean, standard
    deviation, minimum and maximum of the final validation accuracy, the
    mean test accuracy, `success_rate` (share of runs above 0.5 final
    validation accuracy), `diverged` (count), the median first step at 0.9,
    the median steps per second, and the study's published final validation
    and test accuracies (several values where the study ran a configuration
    more than once).
    """
    keys = ["activation", "learning_rate", "weights", "study_batches", "batches"]
    rows = []
    order = {c.key: i for i, c in enumerate(study.STUDY_CONFIGURATIONS)}
    for (_, network), group in results.groupby(
        [results[keys].astype(str).agg(":".join, axis=1), "network"], sort=False
    ):
        first = group.iloc[0]
        final = group["final_validation_accuracy"].astype(float)
        published = study.published_runs(
            first["activation"],
            first["learning_rate"],
            first["weights"],
            first["study_batches"],
        )
        published = published[published["network"] == network]
        rows.append(
            {
                "activation": first["activation"],
                "learning_rate": float(first["learning_rate"]),
                "weights": first["weights"],
                "study_batches": int(first["study_batches"]),
                "batches": int(first["batches"]),
                "network": network,
                "runs": len(group),
                "final_val_mean": final.mean(),
                "final_val_std": final.std(ddof=0),
                "final_val_min": final.min(),
                "final_val_max": final.max(),
                "test_mean": group["test_accuracy"].astype(float).mean(),
                "success_rate": float((final > SUCCESS_ACCURACY).mean()),
                "diverged": int(group["diverged"].astype(bool).sum()),
                "median_first_step_0.9": _median_or_none(group["first_step_0.9"]),
                "steps_per_second": group["steps_per_second"].astype(float).median(),
                "published_final_val": _join(published["final_validation_accuracy"]),
                "published_test": _join(published["test_accuracy"]),
                "_order": (
                    order.get(
                        f"{first['activation']}:{float(first['learning_rate']):g}:"
                        f"{first['weights']}:{int(first['study_batches'])}",
                        len(order),
                    ),
                    network != "without_bn",
                ),
            }
        )
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame(rows).sort_values("_order", kind="stable")
    return frame.drop(columns="_order").reset_index(drop=True)


def summary_markdown(summary, title=None, notes=()):
    """The summary as a Markdown table a person can read."""
    table = pd.DataFrame(
        {
            "activation": summary["activation"],
            "lr": summary["learning_rate"].map("{:g}".format),
            "weights": summary["weights"],
            "batches": [
                f"{b:,}" if b == s else f"{b:,} of {s:,}"
                for b, s in zip(summary["batches"], summary["study_batches"])
            ],
            "network": summary["network"].map(
                {"without_bn": "without BN", "with_bn": "with BN"}
            ),
            "runs": summary["runs"],
            "final val. acc. (mean ± sd)": [
                f"{m:.4f} ± {s:.4f}"
                for m, s in zip(summary["final_val_mean"], summary["final_val_std"])
            ],
            "min – max": [
                f"{a:.4f} – {b:.4f}"
                for a, b in zip(summary["final_val_min"], summary["final_val_max"])
            ],
            "test acc.": summary["test_mean"].map("{:.4f}".format),
            "success": summary["success_rate"].map("{:.0%}".format),
            "diverged": summary["diverged"],
            "step to 0.9": summary["median_first_step_0.9"].map(
                lambda v: "never" if v is None or _isnan(v) else f"{int(v):,}"
            ),
            "steps/s": summary["steps_per_second"].map("{:,.0f}".format),
            "study val. acc.": summary["published_final_val"],
            "study test acc.": summary["published_test"],
        }
    )
    parts = []
    if title:
        parts.append(f"# {title}\n")
    parts.extend(f"{note}\n" for note in notes)
    parts.append(table.to_markdown(index=False, disable_numparse=True))
    return "\n".join(parts) + "\n"


def _key(configuration, config, network):
    """A run's identity, as the strings `results.csv` holds."""
    return tuple(
        str(v)
        for v in (
            config.activation,
            config.learning_rate,
            config.weights,
            configuration.batches,
            config.batches,
            config.seed,
            network,
        )
    )


def _append_rows(path, columns, rows):
    new = not os.path.exists(path) or os.path.getsize(path) == 0
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        if new:
            writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(row.get(k)) for k in columns})
        f.flush()
        os.fsync(f.fileno())


def _cell(value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return value


def _drop_unfinished_curves(path, done):
    """Removes curves of runs that were interrupted before their result row."""
    curves = read_curves(path)
    if curves.empty:
        return
    keys = curves[RUN_KEY].astype(str).apply(tuple, axis=1)
    keep = keys.isin(done)
    if not keep.all():
        curves[keep].to_csv(path, index=False)


def _check_same_circumstances(finished, dataset, path):
    if finished.empty:
        return
    sources = set(finished["data_source"].astype(str))
    if sources != {dataset.source}:
        raise ValueError(
            f"The finished runs in {path} were trained on other data: "
            f"{sorted(sources)}. Use another output folder, or the same data. "
            f"Received: data source {dataset.source!r}"
        )


def _median_or_none(values):
    values = pd.to_numeric(values, errors="coerce").dropna()
    return float(np.median(values)) if len(values) else None


def _join(values):
    return ", ".join(f"{v:.4f}" for v in values)


def _isnan(value):
    return isinstance(value, float) and math.isnan(value)
