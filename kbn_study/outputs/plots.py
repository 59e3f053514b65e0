"""Plots of learning curves. Plotting never trains."""

import matplotlib

matplotlib.use("Agg", force=False)

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

# Steps on an x axis read as the titles do: 50,000, not 50000.
THOUSANDS = FuncFormatter(lambda value, _: f"{value:,.0f}")

NETWORK_LABELS = {
    "without_bn": "Without batch norm",
    "with_bn": "With batch norm",
    "lstm": "LSTM",
    "bn_lstm": "BN-LSTM",
}
NETWORK_COLORS = {
    "without_bn": "tab:blue",
    "with_bn": "tab:orange",
    "lstm": "tab:blue",
    "bn_lstm": "tab:orange",
}


def plot_training_accuracies(result_or_curves, title=None, ax=None):
    """Validation accuracy against training steps, one line per network.

    Args:
        result_or_curves: A `kbn_study.training.comparison.ComparisonResult`, or a
            DataFrame with columns `network`, `step` and
            `validation_accuracy` (as `ComparisonResult.curves()` and
            `curves.csv`).
        title: Plot title; defaults to the result's title.
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
            title = result_or_curves.title
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
    ax.xaxis.set_major_formatter(THOUSANDS)
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


def plot_grid_overview(curves, columns=3, title=None):
    """One small plot per configuration, both networks' curves in each.

    Args:
        curves: DataFrame as the grid's `curves.csv`: `activation,
            learning_rate, weights, study_batches, seed, network, step,
            validation_accuracy`. Every seed is drawn as its own line.
        columns: Plots per row, at most (fewer when there are fewer
            configurations).
        title: Figure title.

    Returns:
        The matplotlib `Figure`.
    """
    keys = ["activation", "learning_rate", "weights", "study_batches"]
    missing = set(keys + ["seed", "network", "step", "validation_accuracy"]) - set(
        curves.columns
    )
    if missing:
        raise ValueError(
            "Expected the grid's curves. Missing columns: "
            f"{sorted(missing)}. Received: columns={list(curves.columns)}"
        )
    groups = list(curves.groupby(keys, sort=False))
    columns = max(1, min(columns, len(groups)))
    rows = max(1, -(-len(groups) // columns))
    figure, axes = plt.subplots(
        rows, columns, figsize=(4.2 * columns, 2.9 * rows), squeeze=False
    )
    for ax, ((activation, rate, weights, batches), group) in zip(axes.flat, groups):
        for (network, _seed), run in group.groupby(["network", "seed"], sort=False):
            ax.plot(
                run["step"],
                run["validation_accuracy"],
                color=NETWORK_COLORS.get(network),
                alpha=0.8 if group["seed"].nunique() == 1 else 0.45,
                linewidth=1.2,
            )
        trained = int(group["step"].max())
        length = (
            f"{trained:,}"
            if trained == int(batches)
            else (f"{trained:,} of {int(batches):,}")
        )
        ax.set_title(
            f"{activation}, lr {rate:g}, {weights} weights, {length} batches",
            fontsize=9,
        )
        ax.set_ylim(0.0, 1.0)
        ax.xaxis.set_major_formatter(THOUSANDS)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(groups) :]:
        ax.axis("off")
    handles = [
        plt.Line2D([], [], color=NETWORK_COLORS[n], label=NETWORK_LABELS[n])
        for n in ("without_bn", "with_bn")
    ]
    figure.supxlabel("Training steps (batches)", fontsize=9)
    figure.supylabel("Validation accuracy", fontsize=9)
    if title:
        figure.suptitle(title, fontsize=11)
    # The legend goes in a band of its own under the title, so it never
    # covers a plot whatever the number of columns.
    top = 1.0 - (0.9 if title else 0.45) / figure.get_figheight()
    figure.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, top),
        ncols=len(handles),
        fontsize=9,
        frameon=False,
    )
    figure.tight_layout(rect=(0, 0, 1, top - 0.3 / figure.get_figheight()))
    return figure


def close(figure):
    """Frees a figure's memory (pyplot keeps every figure until closed)."""
    plt.close(figure)
