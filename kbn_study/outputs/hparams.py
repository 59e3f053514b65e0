"""The study's runs in TensorBoard's HParams dashboard.

Every network that `compare.py` or `seed_grid.py` trains is one *trial* (a
"session" in TensorBoard's words), whose TensorBoard folder
(`<run>/<network>/`) `write_trial` completes once the network is trained:
its hyperparameters (`HPARAMS`), and the metrics that are not curves already
(`results/test_accuracy`, `results/first_step_0.9` when it was reached,
`results/diverged`); the final validation accuracy is the last point of the
`validation/accuracy` curve that the validation recorder wrote. The folder
above the trials (the grid's output folder, a comparison's run folder)
holds the experiment, from `write_experiment`: which hyperparameters and
metrics the dashboard shows, in which order. `tensorboard --logdir <that
folder>` then shows every trial in the HParams table, the parallel
coordinates and the scatter plots.

Another study defines its own hyperparameters and metrics in the same form
(`{name: (display name, description, type)}` and `{tag: (display name,
description)}`) and passes them to `trial_hparams` and `write_experiment`;
`write_trial_metrics` writes a trial of any metrics.

Written with `kbn.event_file.EventFileWriter` (no TensorFlow); TensorBoard's
HParams protos are built by its `summary_v2` module (its `api` module
would import TensorFlow's Keras callback), imported inside the functions.

It must not hold the event-file format (`kbn.event_file`) nor train.
"""

import glob
import os

from kbn.event_file import EventFileWriter

# name: (display name, description, type). The names are the grid's
# results.csv columns.
HPARAMS = {
    "network": ("network", "without_bn or with_bn", str),
    "activation": ("activation", "hidden activation of the MLP", str),
    "learning_rate": ("learning rate", "plain SGD learning rate", float),
    "weights": ("weights", "initial kernels: good N(0, 0.05), bad N(0, 5.0)", str),
    "batches": ("batches", "training batches", int),
    "seed": ("seed", "seed of the initial weights and of the batch order", int),
    "data": ("data", "the data's tag, as in the run's folder name", str),
}
VALIDATION_ACCURACY = "validation/accuracy"
TEST_ACCURACY = "results/test_accuracy"
FIRST_STEP_0_9 = "results/first_step_0.9"
DIVERGED = "results/diverged"
# tag: (display name, description).
METRICS = {
    VALIDATION_ACCURACY: (
        "final validation accuracy",
        "validation accuracy after the last batch (the last point of the curve)",
    ),
    TEST_ACCURACY: ("test accuracy", "in inference mode, after training"),
    FIRST_STEP_0_9: (
        "first step at 0.9",
        "first sampled batch with validation accuracy >= 0.9; empty if never",
    ),
    DIVERGED: ("diverged", "1 if the loss or a weight became NaN, else 0"),
}


def trial_hparams(values, hparams=None):
    """The hyperparameters of a trial, from a mapping that holds them all.

    Args:
        values: A mapping with every key of `hparams` (and maybe more): a
            grid run's `key_fields`, a `results.csv` row, or an
            `ExperimentConfig` as a dict with `network` and `data` added.
        hparams: The hyperparameters' definitions, `HPARAMS` by default.

    Returns:
        `{name: value}` in `hparams` order, each value a plain `str`,
        `float` or `int`.
    """
    hparams = HPARAMS if hparams is None else hparams
    return {name: kind(values[name]) for name, (_, _, kind) in hparams.items()}


def write_experiment(log_dir, trials, hparams=None, metrics=None):
    """Writes the experiment into `log_dir`, replacing one written there before.

    Args:
        log_dir: The folder above the trials' folders.
        trials: The hyperparameters (`trial_hparams`) of every trial the
            folder holds or will hold. Each hyperparameter's domain is the
            set of its values. Those with more than one value are marked as
            varying: the dashboard sorts them first and shows the first five
            at once (the others are a click away).
        hparams: The hyperparameters' definitions, `HPARAMS` by default.
        metrics: The metrics' definitions, `METRICS` by default.
    """
    from tensorboard.plugins.hparams import plugin_data_pb2
    from tensorboard.plugins.hparams import summary_v2 as hp

    hparams = HPARAMS if hparams is None else hparams
    metrics = METRICS if metrics is None else metrics
    log_dir = os.fspath(log_dir)
    trials = list(trials)
    values = {name: sorted({t[name] for t in trials}) for name in hparams}
    definitions = [
        hp.HParam(
            name,
            hp.Discrete(values[name], dtype=kind) if values[name] else None,
            display_name=display,
            description=description,
        )
        for name, (display, description, kind) in hparams.items()
    ]
    metric_definitions = [
        hp.Metric(tag, display_name=display, description=description)
        for tag, (display, description) in metrics.items()
    ]
    summary = hp.hparams_config_pb(hparams=definitions, metrics=metric_definitions)
    # `hparams_config` leaves every `differs` False, so the dashboard would
    # show the first five hyperparameters by name, constant ones included.
    plugin_data = summary.value[0].metadata.plugin_data
    content = plugin_data_pb2.HParamsPluginData.FromString(plugin_data.content)
    for info in content.experiment.hparam_infos:
        info.differs = len(values[info.name]) > 1
    plugin_data.content = content.SerializeToString()

    os.makedirs(log_dir, exist_ok=True)
    for path in glob.glob(os.path.join(log_dir, "events.out.tfevents.*")):
        os.remove(path)
    with EventFileWriter(log_dir) as writer:
        writer.write(summary, step=0)


def write_trial(log_dir, hparams, result, trial_id):
    """Writes a trained network's hyperparameters and metrics into its folder.

    Args:
        log_dir: The network's TensorBoard folder (`<run>/<network>`).
        hparams: Its `trial_hparams`.
        result: Its `kbn_study.training.runs.NetworkResult`.
        trial_id: The trial's name in the dashboard, `<run>/<network>`.
    """
    step = result.steps[-1] if result.steps else 0
    metrics = {TEST_ACCURACY: result.test_accuracy}
    first = result.first_step_reaching(0.9)
    if first is not None:
        metrics[FIRST_STEP_0_9] = first
    metrics[DIVERGED] = float(result.diverged)
    write_trial_metrics(log_dir, hparams, metrics, trial_id, step)


def write_trial_metrics(log_dir, hparams, metrics, trial_id, step=0):
    """Writes a trial: its hyperparameters and `{tag: number}` metrics.

    Args:
        log_dir: The trial's folder (one TensorBoard run); a new event file
            is added to it.
        hparams: `{name: value}` (`trial_hparams`).
        metrics: `{tag: number}`, written as scalars at `step`.
        trial_id: The trial's name in the dashboard.
        step: The step of the metrics.
    """
    from tensorboard.plugins.hparams import summary_v2 as hp

    with EventFileWriter(log_dir) as writer:
        writer.write(hp.hparams_pb(hparams, trial_id=trial_id), step=0)
        writer.values(metrics, step=step)


def write_comparison_trials(run_dir, config, data_tag, result):
    """The experiment and trials of a with/without-batch-norm comparison.

    Args:
        run_dir: The comparison's folder, `<log dir>/<run>`.
        config: Its `kbn_study.studies.experiment.ExperimentConfig`.
        data_tag: The data's tag.
        result: Its `kbn_study.training.comparison.ComparisonResult`.
    """
    fields = {
        "activation": config.activation,
        "learning_rate": config.learning_rate,
        "weights": config.weights,
        "batches": config.batches,
        "seed": config.seed,
        "data": data_tag,
    }
    trials = {
        name: trial_hparams({**fields, "network": name}) for name in result.networks
    }
    write_experiment(run_dir, trials.values())
    run = os.path.basename(os.path.normpath(run_dir))
    for name, network in result.networks.items():
        write_trial(os.path.join(run_dir, name), trials[name], network, f"{run}/{name}")
