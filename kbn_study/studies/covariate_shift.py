"""Internal covariate shift made visible: Ioffe & Szegedy (2015), Figure 1.

The paper trains the 784-100-100-100-10 sigmoid network with and without
batch norm and plots, over training, the 15th, 50th and 85th percentiles of
the input to one sigmoid of the last hidden layer. `run` trains both
networks of the study from the same weights on the same batches (through
`kbn_study.training.comparison.compare_networks`, the one training path), with a
`kbn.callbacks.ActivationPercentiles` on the input of the last sigmoid,
every unit; `drift` measures how far each unit's median moves, and
`plot_covariate_shift` draws the paper's figure.

It must not train itself: the runs go through
`kbn_study.training.comparison`.
"""

import os

import numpy as np
import pandas as pd

from kbn_study.outputs import plots

PERCENTILES = (15, 50, 85)
# The paper compares its percentiles at 5,000 and at 50,000 steps: from a
# tenth of the training to its end.
DRIFT_FROM = 0.1


def last_hidden_activation(config, hidden_layers=3):
    """The name of the last hidden activation layer of the study's MLP."""
    return f"{config.activation}_{hidden_layers}"


def percentile_callbacks(config, dataset, probe_size, schedule):
    """`make_callbacks` for `compare_networks`: one `ActivationPercentiles`
    per network, on the input of the last hidden activation, every unit,
    each network's callback kept in the returned dict."""
    from kbn import callbacks as kbn_callbacks

    probe = dataset.validation.images[:probe_size]
    made = {}

    def make(name, log_dir):
        made[name] = kbn_callbacks.ActivationPercentiles(
            last_hidden_activation(config),
            probe,
            percentiles=PERCENTILES,
            every_n_batches=schedule.batches_per_sample,
            tensor="input",
            training=True,
            log_dir=log_dir,
        )
        return [made[name]]

    return make, made


def percentile_table(callbacks):
    """Long DataFrame: network, step, layer, unit, percentile, value."""
    frames = []
    for name, callback in callbacks.items():
        frame = pd.DataFrame(callback.records())
        frame.insert(0, "network", name)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def drift(table, network, start_fraction=DRIFT_FROM):
    """How far the network's units' medians move, from a fraction of the
    training to its end.

    Returns:
        A dict: `from_step`, `to_step`, `median_drift` (the mean over units
        of |median at the end - median at `from_step`|), `band_width` (the
        mean over units of p85 - p15 at the end) and `drift_in_bands`
        (`median_drift / band_width`, scale-free: batch norm's gamma and a
        plain layer's weights scale the pre-activations differently).
    """
    mine = table[table["network"] == network]
    steps = np.sort(mine["step"].unique())
    end = steps[-1]
    start = steps[np.argmin(np.abs(steps - start_fraction * end))]
    wide = mine.pivot_table(
        index=["step", "unit"], columns="percentile", values="value"
    )
    low, median, high = (wide[float(q)] for q in PERCENTILES)
    moved = (median.loc[end] - median.loc[start]).abs().mean()
    width = (high.loc[end] - low.loc[end]).mean()
    return {
        "network": network,
        "from_step": int(start),
        "to_step": int(end),
        "median_drift": float(moved),
        "band_width": float(width),
        "drift_in_bands": float(moved / width) if width > 0 else float("nan"),
    }


def plot_covariate_shift(curves, table, unit, drifts, title=""):
    """The paper's Figure 1: accuracy, then one unit's percentile band
    without and with batch norm.

    Args:
        curves: `ComparisonResult.curves()` (network, step,
            validation_accuracy).
        table: `percentile_table`.
        unit: The unit drawn.
        drifts: `{network: drift(...)}`, quoted in the panels' titles.
        title: Figure title.
    """
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    plots.plot_training_accuracies(curves, ax=axes[0])
    axes[0].set_title("(a) Validation accuracy")
    for ax, network, letter in zip(axes[1:], ("without_bn", "with_bn"), "bc"):
        mine = table[(table["network"] == network) & (table["unit"] == unit)]
        for q, style in zip(PERCENTILES, (":", "-", "--")):
            line = mine[mine["percentile"] == q].sort_values("step")
            ax.plot(
                line["step"],
                line["value"],
                style,
                color=plots.NETWORK_COLORS[network],
                label=f"{q}th percentile",
            )
        d = drifts[network]
        ax.set_title(
            f"({letter}) {plots.NETWORK_LABELS[network]}: unit {unit}\n"
            f"median drift {d['median_drift']:.3f} "
            f"({d['drift_in_bands']:.2f} band widths, all units)",
            fontsize=10,
        )
        ax.xaxis.set_major_formatter(plots.THOUSANDS)
        ax.set_xlabel("Training steps (batches)")
        ax.set_ylabel("Input of the sigmoid")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    if title:
        figure.suptitle(title, fontsize=11)
    figure.tight_layout()
    return figure


def write(result, table, drifts, run_dir, unit, title):
    """percentiles.csv, drift.csv and covariate_shift.png; returns the paths."""
    paths = {
        "percentiles": os.path.join(run_dir, "percentiles.csv"),
        "drift": os.path.join(run_dir, "drift.csv"),
        "figure": os.path.join(run_dir, "covariate_shift.png"),
    }
    table.to_csv(paths["percentiles"], index=False)
    pd.DataFrame(list(drifts.values())).to_csv(paths["drift"], index=False)
    figure = plot_covariate_shift(result.curves(), table, unit, drifts, title)
    figure.savefig(paths["figure"], dpi=110)
    plots.close(figure)
    return paths
