"""Batch norm with small or non-i.i.d. batches, and batch renormalization
(Ioffe, 2017).

One cell of the table is a normalization (`bn`: kbn's `BatchNorm`;
`renorm`: `BatchNorm(renorm=True)` with the paper's schedule of `rmax` and
`dmax`; `none`) trained under a batch regime:

- `iid`: i.i.d. batches of 60, normalized over the 60;
- `micro<k>`: the same batches, each normalized in ghost batches of `k`
  examples (`virtual_batch_size=k`): the statistics of `k` examples;
- `noniid`: batches of 60 drawn from `classes_per_batch` classes, an equal
  share from each, normalized over the 60.

Each run goes through `kbn_study.training.runs.train_network` (the one training
path); afterwards every batch norm gets the paper's population statistics
(`kbn.population.recompute_batch_norm_statistics`, on i.i.d. batches of 60
of the training images, the ghost batches of its own `virtual_batch_size`),
and the test accuracy is measured in inference mode. Without normalization a
regime that only changes the batch-norm statistics (`micro<k>`) trains
exactly as `iid`: that cell repeats the `iid` runs (marked `same_as`).

It must not train itself: each cell goes through
`kbn_study.training.runs.train`.
"""

import dataclasses
import os

import numpy as np
import pandas as pd

from kbn import checks

NORMALIZATIONS = ("bn", "renorm", "none")
NORMALIZATION_LABELS = {
    "bn": "Batch norm",
    "renorm": "Batch renorm",
    "none": "No normalization",
}
NORMALIZATION_COLORS = {"bn": "tab:orange", "renorm": "tab:green", "none": "tab:blue"}
# The paper's schedule, read on a 50,000-step axis (the study's length):
# rmax 1 -> 3 and dmax 0 -> 5, from 5,000 steps to 40,000 and 25,000.
PAPER_SCHEDULE = {"warmup": 0.1, "rmax": 0.8, "dmax": 0.5}


def regimes(micro_batches):
    """`["iid", "micro<k>"..., "noniid"]`."""
    return ["iid", *(f"micro{k}" for k in micro_batches), "noniid"]


def regime_label(regime, classes_per_batch, batch_size):
    if regime == "iid":
        return f"i.i.d. batches of {batch_size}"
    if regime == "noniid":
        return f"non-i.i.d. ({classes_per_batch} classes per batch)"
    return f"micro-batches of {int(regime[5:])}"


def virtual_batch_size(regime):
    return int(regime[5:]) if regime.startswith("micro") else None


def renorm_schedule(batches):
    """The paper's schedule of the clip limits, scaled to `batches`: `rmax`
    and `dmax` as `kbn.callbacks.RenormClippingSchedule` sets them, and
    `rmin = 1 / rmax` (the paper clips r to `[1 / rmax, rmax]`; the library's
    schedule leaves `rmin` as the layer has it)."""
    from kbn.callbacks import RenormClippingSchedule

    class PaperSchedule(RenormClippingSchedule):
        def _apply(self):
            before = self._current
            super()._apply()
            if self._current != before:
                for layer in self._layers:
                    layer.renorm_rmin.assign(1.0 / self._current[0])

    warmup = round(PAPER_SCHEDULE["warmup"] * batches)
    return PaperSchedule(
        warmup_batches=warmup,
        rmax_batches=max(warmup + 1, round(PAPER_SCHEDULE["rmax"] * batches)),
        dmax_batches=max(warmup + 1, round(PAPER_SCHEDULE["dmax"] * batches)),
    )


def normalization_factory(normalization, regime):
    """`build_mlp`/`build_convnet`'s `batch_norm` argument for a cell."""
    from kbn.layers import BatchNorm

    if normalization == "none":
        return False
    size = virtual_batch_size(regime)
    if normalization == "bn":
        return lambda name: BatchNorm(virtual_batch_size=size, name=name)
    # Starts as batch norm (rmax 1, dmax 0); the schedule relaxes the limits.
    return lambda name: BatchNorm(
        virtual_batch_size=size,
        renorm=True,
        renorm_clipping={"rmax": 1.0, "rmin": 1.0, "dmax": 0.0},
        name=name,
    )


def class_batches(labels, batch_size, classes_per_batch, batches_per_step, seed):
    """Endless blocks of non-i.i.d. index batches, as `kbn.trainer.index_batches`.

    Each batch draws `classes_per_batch` distinct classes at random and
    `batch_size / classes_per_batch` examples of each, in turn from a
    shuffled cycle of each class's examples (so every example is used).

    Yields:
        `(indices, labels)`, int32 indices of shape `(batches_per_step,
        batch_size)`, and their labels.
    """
    labels = np.asarray(labels)
    classes = np.unique(labels)
    checks.check_int(classes_per_batch, "classes_per_batch", 1, len(classes))
    if batch_size % classes_per_batch:
        checks.fail(
            "classes_per_batch",
            classes_per_batch,
            f"a divisor of the batch size {batch_size}",
        )
    share = batch_size // classes_per_batch
    rng = np.random.default_rng(seed)
    members = {c: np.flatnonzero(labels == c) for c in classes}
    if min(len(m) for m in members.values()) < share:
        checks.fail(
            "classes_per_batch",
            classes_per_batch,
            f"so few that every class has {share} examples for its share",
        )
    orders = {c: rng.permutation(m) for c, m in members.items()}
    positions = dict.fromkeys(classes, 0)

    def take(c):
        if positions[c] + share > len(orders[c]):
            orders[c] = rng.permutation(members[c])
            positions[c] = 0
        chosen = orders[c][positions[c] : positions[c] + share]
        positions[c] += share
        return chosen

    while True:
        block = np.stack(
            [
                rng.permutation(
                    np.concatenate(
                        [take(c) for c in rng.choice(classes, classes_per_batch, False)]
                    )
                )
                for _ in range(batches_per_step)
            ]
        )
        yield block.astype("int32"), labels[block]


@dataclasses.dataclass(frozen=True)
class Cell:
    """One run of the table."""

    normalization: str
    regime: str
    seed: int

    @property
    def name(self):
        return f"{self.regime}/{self.normalization}_seed{self.seed}"


def population_test_accuracy(model, dataset, seed, batch_size=60):
    """Test accuracy after the paper's population statistics (i.i.d. batches
    of the training images, in a seeded order); the plain test accuracy for
    a network without batch norm."""
    from kbn.evaluation import Accuracy
    from kbn.layers import batch_norm_layers
    from kbn.population import recompute_batch_norm_statistics

    if batch_norm_layers(model):
        order = np.random.default_rng(seed).permutation(len(dataset.train))
        usable = len(order) // batch_size * batch_size
        recompute_batch_norm_statistics(
            model, dataset.train.images[order[:usable]], batch_size=batch_size
        )
    return Accuracy(model, dataset.test.images, dataset.test.labels)()


def summarize(results):
    """One row per cell: mean, std and count of the test accuracies."""
    grouped = results.groupby(["normalization", "regime"], sort=False)
    summary = grouped.agg(
        test_accuracy_mean=("test_accuracy_population", "mean"),
        test_accuracy_std=("test_accuracy_population", "std"),
        moving_average_mean=("test_accuracy_moving", "mean"),
        moving_average_std=("test_accuracy_moving", "std"),
        seeds=("seed", "nunique"),
        diverged=("diverged", "sum"),
    ).reset_index()
    return summary


def markdown_table(summary, regime_names, labels, statistics="population"):
    """Rows: normalizations; columns: regimes; `mean ± std` per cell.

    `statistics`: `"population"` (the paper's population statistics) or
    `"moving"` (the moving averages kept in training)."""
    mean, std = {
        "population": ("test_accuracy_mean", "test_accuracy_std"),
        "moving": ("moving_average_mean", "moving_average_std"),
    }[statistics]
    header = "| | " + " | ".join(labels[r] for r in regime_names) + " |"
    lines = [header, "|---" * (len(regime_names) + 1) + "|"]
    cells = summary.set_index(["normalization", "regime"])
    for normalization in NORMALIZATIONS:
        row = [NORMALIZATION_LABELS[normalization]]
        for regime in regime_names:
            if (normalization, regime) not in cells.index:
                row.append("")
                continue
            cell = cells.loc[(normalization, regime)]
            text = f"{cell[mean]:.4f} ± {cell[std]:.4f}"
            if cell.diverged:
                text += f" ({int(cell.diverged)} diverged)"
            row.append(text)
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def claims(summary, regime_names, statistics="population"):
    """The paper's claims, checked on the table: lines of text."""
    column = {"population": "test_accuracy_mean", "moving": "moving_average_mean"}
    cells = summary.set_index(["normalization", "regime"])[column[statistics]]
    iid = cells[("bn", "iid")]
    lines = []
    for regime in regime_names:
        if regime == "iid":
            continue
        bn, renorm = cells[("bn", regime)], cells[("renorm", regime)]
        loss = iid - bn
        verdict = "loses" if loss > 0 else "does not lose"
        line = (
            f"{regime}: batch norm {verdict} accuracy against i.i.d. batches "
            f"({bn:.4f} vs {iid:.4f}, {-loss:+.4f}); batch renorm {renorm:.4f} "
            f"({renorm - bn:+.4f} against batch norm"
        )
        if loss > 0:
            line += f", recovers {(renorm - bn) / loss:.0%} of the loss"
        lines.append(line + ")")
    return lines


def plot(summary, curves, regime_names, labels, title=""):
    """Bars of the table (one group per regime, error bars: std over seeds)
    above the mean validation curves of each regime (moving statistics)."""
    import matplotlib.pyplot as plt

    from kbn_study.outputs import plots

    count = len(regime_names)
    figure = plt.figure(figsize=(3.6 * count, 7.6))
    grid = figure.add_gridspec(2, count, height_ratios=(1.1, 1))
    bars = figure.add_subplot(grid[0, :])
    width = 0.8 / len(NORMALIZATIONS)
    cells = summary.set_index(["normalization", "regime"])
    for index, normalization in enumerate(NORMALIZATIONS):
        means = [
            cells.loc[(normalization, r), "test_accuracy_mean"] for r in regime_names
        ]
        stds = [
            cells.loc[(normalization, r), "test_accuracy_std"] for r in regime_names
        ]
        positions = np.arange(count) + (index - 1) * width
        bars.bar(
            positions, means, width, yerr=stds, capsize=3,
            color=NORMALIZATION_COLORS[normalization],
            label=NORMALIZATION_LABELS[normalization],
        )  # fmt: skip
        for x, m in zip(positions, means):
            bars.annotate(f"{m:.3f}", (x, m), ha="center", va="bottom", fontsize=7,
                          xytext=(0, 3), textcoords="offset points")  # fmt: skip
    low = np.nanmin(summary["test_accuracy_mean"])
    bars.set_ylim(max(0.0, low - 0.1), 1.0)
    bars.set_xticks(np.arange(count), [labels[r] for r in regime_names])
    bars.set_ylabel("Test accuracy (population statistics)")
    bars.grid(axis="y", alpha=0.3)
    bars.legend(loc="lower left", fontsize=8)
    bars.set_title(title, fontsize=10)
    mean_curves = curves.groupby(["regime", "normalization", "step"], sort=False)[
        "validation_accuracy"
    ].mean()
    for column, regime in enumerate(regime_names):
        ax = figure.add_subplot(grid[1, column])
        for normalization in NORMALIZATIONS:
            line = mean_curves.loc[(regime, normalization)]
            ax.plot(line.index, line.values, color=NORMALIZATION_COLORS[normalization])
        ax.set_title(labels[regime], fontsize=9)
        ax.set_ylim(0.0, 1.0)
        ax.xaxis.set_major_formatter(plots.THOUSANDS)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if column == 0:
            ax.set_ylabel("Validation accuracy\n(moving statistics)", fontsize=8)
        ax.set_xlabel("Training steps (batches)", fontsize=8)
    figure.tight_layout()
    return figure


def write(results, curves, run_dir, regime_names, labels, title):
    """results.csv, curves.csv, summary.csv, summary.md, small_batches.png."""
    from kbn_study.outputs import plots

    summary = summarize(results)
    paths = {
        name: os.path.join(run_dir, name)
        for name in ("results.csv", "curves.csv", "summary.csv", "summary.md",
                     "small_batches.png")
    }  # fmt: skip
    results.to_csv(paths["results.csv"], index=False)
    curves.to_csv(paths["curves.csv"], index=False)
    summary.to_csv(paths["summary.csv"], index=False)
    seeds = int(summary["seeds"].min())
    text = [
        f"# {title}",
        "",
        f"Test accuracy with population statistics, mean ± std over {seeds} seeds.",
        "",
        markdown_table(summary, regime_names, labels),
        "",
        *(f"- {line}" for line in claims(summary, regime_names)),
        "",
        "The same networks tested with the moving averages kept in training "
        "(the paper's inference for batch renorm):",
        "",
        markdown_table(summary, regime_names, labels, "moving"),
        "",
        *(f"- {line}" for line in claims(summary, regime_names, "moving")),
        "",
    ]
    with open(paths["summary.md"], "w") as f:
        f.write("\n".join(text))
    figure = plot(summary, curves, regime_names, labels, title)
    figure.savefig(paths["small_batches.png"], dpi=110)
    plots.close(figure)
    return summary, paths


def frame(rows):
    return pd.DataFrame(rows)
