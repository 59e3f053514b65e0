"""Networks trained side by side on the same batches, and their results files.

`compare_networks` trains several networks through the one training path
(`kbn_study.training.runs.train`), with the same schedule and batch order,
one after the other in this process or at once on a sweep's executor
(`kbn_study.sweeps`), and `finish` writes everything a run leaves under its
folder:

- `config.json`: the resolved configuration and the circumstances (data,
  backend, Keras version, machine);
- `results.json`, `results.csv`: one row per network;
- `curves.csv`: validation accuracy and training loss at every sample;
- `accuracy.png`: the learning curves;
- `<network>/`: TensorBoard logs.

It must not hold how one network trains (`kbn_study.training.runs`) nor a
study's own tables or plots.
"""

import contextlib
import dataclasses
import json
import os
import platform
from functools import partial

import keras
import numpy as np
import pandas as pd

from kbn_study.outputs import plots
from kbn_study.training import runs


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


def compare_networks(
    builders,
    dataset,
    make_optimizer,
    schedule,
    run_dir=None,
    title="",
    metadata=None,
    verbose=True,
    make_callbacks=None,
    executor=None,
    batch_norm_statistics=True,
):
    """Trains several networks on the same batches and writes the comparison.

    Args:
        builders: Mapping from network name to a function returning a new,
            uncompiled model.
        dataset: `kbn_study.data.mnist.Dataset`.
        make_optimizer: Function returning a new optimizer per network.
        schedule: `kbn_study.training.runs.Schedule`; every network sees
            the same batch order, from the same seed.
        run_dir: Where to write results and TensorBoard logs (one folder per
            network); None writes nothing. Results of an earlier run in the
            same folder are replaced, and a line says so.
        title: Plot title.
        metadata: JSON-serializable dict for `config.json`.
        verbose: Show progress bars (in this process; with an executor, one
            line per finished network).
        make_callbacks: Optional function `(name, log_dir) -> callbacks`,
            extra callbacks for each network's `fit` (`log_dir` is None
            when `run_dir` is).
        executor: None: the networks train one after the other in this
            process, and the results keep their models. Else a
            `kbn_study.sweeps` executor (`Workers(count)`, `Ray(address)`):
            the networks train at once, each in a process of one thread;
            `builders`, `make_optimizer` and `make_callbacks` must pickle,
            and the results carry no model (`NetworkResult.model` is None).
        batch_norm_statistics: With `run_dir`, log every kbn batch norm's
            statistics (`kbn.callbacks.BatchNormStatistics`); False for a
            network of many batch norms, whose histograms would outweigh
            its training.

    Returns:
        A `ComparisonResult`.
    """
    announce_replacing(run_dir)
    network_runs = [
        runs.NetworkRun(
            name=name,
            build=build,
            optimizer=make_optimizer,
            schedule=schedule,
            log_dir=None if run_dir is None else os.path.join(run_dir, name),
            callbacks=None if make_callbacks is None else partial(make_callbacks, name),
            verbose=verbose and executor is None,
            keep_model=executor is None,
            batch_norm_statistics=batch_norm_statistics,
        )
        for name, build in builders.items()
    ]
    if executor is None:
        networks = {run.name: runs.train(dataset, run) for run in network_runs}
    else:
        networks = _train_on(executor, dataset, network_runs)
    return finish(networks, dataset, run_dir, title, metadata)


def compare_with_adam(builders, dataset, learning_rate, schedule, run_dir, **kwargs):
    """`compare_networks` with a new `keras.optimizers.Adam(learning_rate)`
    per network (the conv net's and the recurrent networks' optimizer);
    `kwargs` are `compare_networks`'."""
    optimizer = partial(keras.optimizers.Adam, learning_rate)
    return compare_networks(
        builders, dataset, optimizer, schedule, run_dir=run_dir, **kwargs
    )


def _train_on(executor, dataset, network_runs):
    """`{name: NetworkResult}` of every run, trained on `executor`."""
    trained = {}
    with executor.start(dataset) as session:
        for outcome in session.run(runs.train, network_runs):
            name = network_runs[outcome.index].name
            if outcome.lost:
                raise RuntimeError(f"The network {name} was lost: {outcome.lost}")
            trained[name] = outcome.value
            print(f"{name}: trained in {outcome.value.wall_time:.1f} s")
    return {run.name: trained[run.name] for run in network_runs}


def announce_replacing(run_dir):
    """Says so when `run_dir` holds the results of an earlier run."""
    if run_dir is not None and os.path.exists(os.path.join(run_dir, "results.csv")):
        print(
            "Replacing the results of an earlier run of this configuration in "
            f"{run_dir}"
        )


def finish(networks, dataset, run_dir=None, title="", metadata=None):
    """The `ComparisonResult` of trained networks, written under `run_dir`.

    Args:
        networks: `{name: kbn_study.training.runs.NetworkResult}`, in the order of
            the results files.
        dataset, run_dir, title, metadata: As for `compare_networks`.
    """
    result = ComparisonResult(networks, dataset.source, title=title)
    if run_dir is not None:
        metadata = {**(metadata or {}), **circumstances(dataset)}
        result.paths = write_files(result, run_dir, metadata)
    return result


def circumstances(dataset):
    """What a results file records besides the configuration."""
    return {
        "data_source": dataset.source,
        "data_tag": dataset.tag,
        "backend": keras.backend.backend(),
        "keras_version": keras.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
    }


def write_files(result, run_dir, metadata):
    """Writes config, results, curves and plot of `result`; returns the paths.

    Each file is written under a temporary name and then renamed, so that a
    process ended while writing (a failed distributed run) leaves either
    the earlier file or the new one, never half of one.
    """
    os.makedirs(run_dir, exist_ok=True)
    paths = {
        "config": os.path.join(run_dir, "config.json"),
        "results_json": os.path.join(run_dir, "results.json"),
        "results_csv": os.path.join(run_dir, "results.csv"),
        "curves": os.path.join(run_dir, "curves.csv"),
        "plot": os.path.join(run_dir, "accuracy.png"),
        "tensorboard": run_dir,
    }
    with _replacing(paths["config"]) as path, open(path, "w") as f:
        json.dump(metadata, f, indent=2)
    summary = result.summary()
    with _replacing(paths["results_json"]) as path, open(path, "w") as f:
        json.dump(summary.to_dict(orient="records"), f, indent=2, default=_json_default)
    with _replacing(paths["results_csv"]) as path:
        summary.to_csv(path, index=False)
    with _replacing(paths["curves"]) as path:
        result.curves().to_csv(path, index=False)
    figure = plots.plot_training_accuracies(result)
    with _replacing(paths["plot"]) as path:
        figure.savefig(path, dpi=120, format="png")
    plots.close(figure)
    return paths


@contextlib.contextmanager
def _replacing(path):
    """Yields a temporary name beside `path`, renamed to `path` at the end."""
    temporary = f"{path}.partial"
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def summary_text(result, columns=None):
    """The per-network table a recipe prints, then the files it wrote."""
    columns = columns or [
        "network",
        "final_validation_accuracy",
        "test_accuracy",
        "first_step_0.9",
        "diverged",
        "steps_per_second",
    ]
    table = result.summary()[columns].copy()
    if "steps_per_second" in table:
        table["steps_per_second"] = table["steps_per_second"].map("{:,.0f}".format)
    if "wall_time_s" in table:
        table["wall_time_s"] = table["wall_time_s"].map("{:.1f}".format)
    lines = [table.to_string(index=False, float_format="{:.4f}".format)]
    if result.paths:
        lines.append("")
        lines += [f"{name:>13}: {path}" for name, path in result.paths.items()]
    return "\n".join(lines)


def _json_default(value):
    if value is pd.NA:
        return None
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"Cannot write {type(value).__name__} to JSON")
