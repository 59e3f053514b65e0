"""Plots of learning curves. Plotting never trains."""

import matplotlib

matplotlib.use("Agg", force=False)

import matplotlib.pyplot as plt  # noqa: E402

NETWORK_LABELS = {"without_bn": "Without batch norm", "with_bn": "With batch norm"}
NETWORK_COLORS = {"without_bn": "tab:blue", "with_bn": "tab:orange"}


def plot_training_accuracies(result_or_curves, title=None, ax=None):
    """Validation accuracy against training steps, one line per network.

    Args:
        result_or_curves: A `kbn.experiment.ExperimentResult`, or a DataFrame
            with columns `network`, `step` and `validation_accuracy` (as
            `ExperimentResult.curves()` and `curves.csv`).
        title: Plot title; an `ExperimentResult` names its configuration.
        ax: Optional matplotlib Axes to draw into.

    Returns:
        The matplotlib `Figure`.
    """
    curves = result_or_curves
    note = None
    if hasattr(result_or_curves, "curves"):
        curves = result_or_curves.curves()
        note = f"Data: {result_or_curves.data_source}"
        if title is None:
            title = describe(result_or_curves.config)
    missing = {"network", "step", "validation_accuracy"} - set(curves.columns)
    if missing:
        raise ValueError(
            "Expected curves with columns network, step and validation_accuracy. "
            f"Received: columns={list(curves.columns)}"
        )
    if ax is None:
        figure, ax = plt.subplots(figsize=(8, 5))
    else:
        figure = ax.figure
    for network, group in curves.groupby("network", sort=False):
        ax.plot(
            group["step"],
            group["validation_accuracy"],
            label=NETWORK_LABELS.get(network, network),
            color=NETWORK_COLORS.get(network),
        )
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("Training steps (batches)")
    ax.set_ylabel("Validation accuracy")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    if title:
        ax.set_title(title)
    if note:
        ax.annotate(
            note,
            xy=(0.0, 0.0),
            xycoords="figure fraction",
            xytext=(6, 4),
            textcoords="offset points",
            fontsize=8,
            color="0.4",
        )
    return figure


def describe(config):
    """One-line description of an experiment configuration."""
    return (
        f"{config.activation}, learning rate {config.learning_rate:g}, "
        f"{config.weights} weights (σ {config.weight_scale:g}), "
        f"{config.batches:,} batches of {config.batch_size}"
    )
