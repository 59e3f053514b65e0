"""Fine-tuning a pretrained network with frozen batch norms, measured (issue 27).

The most-discussed batch-norm problem in Keras's tracker: a pretrained
network, its layers frozen, fine-tuned on new classes, trains well and
predicts badly (keras-team/keras#7085, #9214, #9965, #11590). The study's
conv net is pretrained on digits 0-4, then a new 5-way head is trained on
digits 5-9 on top of its frozen layers, in the regimes users ran into:

- `frozen_inference`: frozen layers, batch norms in inference mode (their
  moving statistics, those of digits 0-4, in training and inference): the
  rule of tf.keras since TensorFlow 2.0 and of Keras 3, and of kbn's
  `BatchNorm` (`trainable=False`);
- `frozen_batch_statistics`: frozen layers whose batch norms still
  normalize with the statistics of each training batch (of digits 5-9)
  but keep the moving statistics of digits 0-4, which inference uses: what
  keras-team/keras#9965 (2018, Keras 2.1.x-2.2.x) reported;
- `frozen_batch_statistics_updating`: the same, and the frozen batch norms
  also update their moving statistics with the new batches (momentum
  0.99), as frozen layers did before Keras 2.1.3 (keras-team/keras#7085);
- `adabn_frozen`: AdaBN first (the moving statistics recomputed on the
  unlabeled training digits 5-9, `kbn.adapt_batch_norm_statistics`), then
  as `frozen_inference`;
- `full`: every layer trainable, batch norms in training mode: plain
  fine-tuning.

In every frozen regime only the new head learns (the frozen batch norms'
`gamma` and `beta` are fixed too). Keras 3 offers no switch to the two
batch-statistics regimes (a frozen batch norm runs in inference mode
whatever `training` says); here they are kbn batch norms left trainable
with fixed `gamma` and `beta`, and, for `frozen_batch_statistics`,
`momentum=1` (moving statistics that never move).

Measured per run: validation accuracy (inference mode) against the
fine-tuning batches, the final test accuracy on digits 5-9 in inference
mode, the same test digits predicted with the statistics of batches of 60
(what the head saw in training: the accuracy that "trains well"), and the
gap between them.

It must not train (the command trains through
`kbn_study.training.runs.train`) nor read the command line.
"""

import os

import numpy as np
import pandas as pd

from kbn import checks
from kbn_study.outputs import verdicts

REGIMES = (
    "frozen_inference",
    "frozen_batch_statistics",
    "frozen_batch_statistics_updating",
    "adabn_frozen",
    "full",
)
REGIME_LABELS = {
    "frozen_inference": "frozen, BN in inference mode (Keras 3)",
    "frozen_batch_statistics": "frozen, BN on batch statistics (#9965)",
    "frozen_batch_statistics_updating": (
        "frozen, BN on batch statistics, updating (#7085)"
    ),
    "adabn_frozen": "AdaBN on the new digits, then frozen",
    "full": "full fine-tuning",
}
SHORT_LABELS = {
    "frozen_inference": "frozen,\ninference\nmode",
    "frozen_batch_statistics": "frozen,\nbatch\nstatistics",
    "frozen_batch_statistics_updating": "frozen,\nbatch stat.,\nupdating",
    "adabn_frozen": "AdaBN,\nthen\nfrozen",
    "full": "full\nfine-tuning",
}
REGIME_COLORS = {
    "frozen_inference": "tab:blue",
    "frozen_batch_statistics": "tab:red",
    "frozen_batch_statistics_updating": "tab:orange",
    "adabn_frozen": "tab:green",
    "full": "black",
}
OLD_CLASSES = (0, 1, 2, 3, 4)
NEW_CLASSES = (5, 6, 7, 8, 9)
HEAD = "new_logits"
# The layer of the conv net whose output the new head reads.
FEATURES = "relu_dense"


def build_pretraining(depth, seed, num_classes=5):
    """The study's conv net (`build_convnet`, stride-2 convolutions of 8,
    16, 24... filters) with kbn batch norms, for the old classes."""
    from kbn_study.models import networks

    return networks.build_convnet(
        depth=depth, batch_norm=True, width=8, stride_every=1,
        num_classes=num_classes, seed=seed,
    )  # fmt: skip


def build_fine_tuning(pretrained, regime, depth, seed, new_images, num_classes=5):
    """The pretrained conv net with a new head, set up for `regime`.

    Args:
        pretrained: The pretrained model's weights (`model.get_weights()`).
        regime: One of `REGIMES`.
        depth: The conv net's depth.
        seed: Seed of the new head's initial weights (through Keras's).
        new_images: The new classes' training images (unlabeled use: AdaBN).
        num_classes: Outputs of the new head.

    Returns:
        An uncompiled functional model: every layer of the pretrained net
        up to `relu_dense`, then `new_logits`.
    """
    import keras

    import kbn
    from kbn.layers import BatchNorm

    checks.check_choice(regime, "regime", REGIMES)
    base = build_pretraining(depth, seed)
    base.set_weights(pretrained)
    head = keras.layers.Dense(num_classes, name=HEAD)
    model = keras.Model(base.input, head(base.get_layer(FEATURES).output))
    if regime == "adabn_frozen":
        kbn.adapt_batch_norm_statistics(model, new_images)
    if regime == "full":
        return model
    for layer in model.layers:
        if layer.name != HEAD:
            layer.trainable = False
    if regime.startswith("frozen_batch_statistics"):
        for layer in model.layers:
            if isinstance(layer, BatchNorm):
                # Training mode again, with gamma and beta held fixed.
                layer.trainable = True
                layer.gamma.trainable = False
                layer.beta.trainable = False
                if regime == "frozen_batch_statistics":
                    layer.momentum = 1.0  # moving statistics that never move
    return model


def accuracies(model, split, batch_size=60):
    """`(inference, batch_statistics)`: the accuracy on `split` in inference
    mode, and with each batch of `batch_size` normalized by its own
    statistics as a training step would (no state changes)."""
    from kbn.evaluation import Accuracy

    inference = Accuracy(model, split.images, split.labels)()
    batch = Accuracy(
        model, split.images, split.labels, training=True, batch_size=batch_size
    )()
    return inference, batch


def summarize(results):
    """Per regime: mean and std over seeds of the test accuracies and gap."""
    fine = results[results.regime != "pretrain"]
    grouped = fine.groupby("regime", sort=False)
    summary = grouped.agg(
        test_accuracy_mean=("test_accuracy", "mean"),
        test_accuracy_std=("test_accuracy", "std"),
        batch_statistics_accuracy_mean=("test_accuracy_batch_statistics", "mean"),
        batch_statistics_accuracy_std=("test_accuracy_batch_statistics", "std"),
        gap_mean=("gap", "mean"),
        gap_std=("gap", "std"),
        final_validation_accuracy_mean=("final_validation_accuracy", "mean"),
        seeds=("seed", "nunique"),
    ).reset_index()
    return summary


def _cell(mean, std):
    std = 0.0 if pd.isna(std) else std
    return f"{mean:.4f} ± {std:.4f}"


def markdown_table(summary, checkpoints):
    """Rows: regimes. Columns: validation accuracy at `checkpoints`
    (`{step: {regime: (mean, std)}}`), test accuracy in inference mode and
    with batch statistics, and the gap."""
    steps = sorted(checkpoints)
    header = (
        "| regime | "
        + " | ".join(f"validation after {s:,} batches" for s in steps)
        + " | test accuracy (inference) | test accuracy (batch statistics) "
        "| gap (batch − inference) |"
    )
    lines = [header, "|---" * (len(steps) + 4) + "|"]
    for row in summary.itertuples():
        cells = [REGIME_LABELS[row.regime]]
        cells += [_cell(*checkpoints[s][row.regime]) for s in steps]
        cells += [
            _cell(row.test_accuracy_mean, row.test_accuracy_std),
            _cell(
                row.batch_statistics_accuracy_mean, row.batch_statistics_accuracy_std
            ),
            f"{row.gap_mean:+.4f} ± {0.0 if pd.isna(row.gap_std) else row.gap_std:.4f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def checkpoints(curves, count=3):
    """`{step: {regime: (mean, std)}}` of the validation accuracy at `count`
    steps spread over the run (the last included)."""
    steps = sorted(curves["step"].unique())
    chosen = sorted(
        {steps[round(i * (len(steps) - 1) / (count - 1))] for i in range(count)}
    )
    table = {}
    for step in chosen:
        at = curves[curves.step == step].groupby("regime", sort=False)
        table[step] = {
            regime: (
                group["validation_accuracy"].mean(),
                group["validation_accuracy"].std(),
            )
            for regime, group in at
        }
    return table


def claims(results):
    """The issues' claims, checked: lines of Markdown."""
    fine = results[results.regime != "pretrain"].set_index(["regime", "seed"])
    present = set(fine.index.get_level_values("regime"))
    lines = [verdicts.RULE]

    def get(regime, column):
        return fine.loc[regime, column]

    if "frozen_batch_statistics" in present:
        inference = get("frozen_batch_statistics", "test_accuracy")
        batch = get("frozen_batch_statistics", "test_accuracy_batch_statistics")
        verdict, wins = verdicts.verdict(batch, inference, lower_is_better=False)
        lines.append(
            "Frozen batch norms that normalize with batch statistics in training "
            "train well and predict badly (keras-team/keras#9965, #9214, "
            f"#11590): **{verdict}**: test accuracy {batch.mean():.4f} with the "
            f"statistics of batches of 60 (what training saw), {inference.mean():.4f} "
            f"in inference mode (gap {(batch - inference).mean():+.4f}; batch "
            f"statistics higher in {wins} of {len(batch)} seeds)."
        )
    if {"frozen_inference", "frozen_batch_statistics"} <= present:
        rule = get("frozen_inference", "test_accuracy")
        old = get("frozen_batch_statistics", "test_accuracy")
        gap = (get("frozen_inference", "test_accuracy_batch_statistics") - rule).abs()
        verdict, wins = verdicts.verdict(rule, old, lower_is_better=False)
        if gap.max() > 0:
            verdict = "not reproduced (a gap remains)"
        lines.append(
            "Running frozen batch norms in inference mode (Keras 3's rule) removes "
            f"the gap and predicts better: **{verdict}**: {rule.mean():.4f} against "
            f"{old.mean():.4f} (higher in {wins} of {len(rule)} seeds; largest gap "
            f"{gap.max():.4f})."
        )
    if {"frozen_batch_statistics_updating", "frozen_batch_statistics"} <= present:
        updating = get("frozen_batch_statistics_updating", "test_accuracy")
        fixed = get("frozen_batch_statistics", "test_accuracy")
        lines.append(
            "Frozen batch norms that also update their moving statistics (before "
            f"Keras 2.1.3) predict {updating.mean():.4f} in inference mode, against "
            f"{fixed.mean():.4f} when the moving statistics stay those of digits "
            "0-4: the moving statistics follow the new digits, so inference sees "
            "what training saw."
        )
    if {"adabn_frozen", "frozen_inference"} <= present:
        adabn = get("adabn_frozen", "test_accuracy")
        rule = get("frozen_inference", "test_accuracy")
        verdict, wins = verdicts.verdict(adabn, rule, lower_is_better=False)
        lines.append(
            "AdaBN on the new digits before fine-tuning helps the frozen network "
            f"(Li et al.'s claim, in a transfer setting): **{verdict}**: "
            f"{adabn.mean():.4f} against {rule.mean():.4f} (higher in {wins} of "
            f"{len(adabn)} seeds)."
        )
    if "full" in present:
        full = get("full", "test_accuracy")
        best = max(
            (r for r in present if r != "full"),
            key=lambda r: get(r, "test_accuracy").mean(),
            default=None,
        )
        if best is not None:
            lines.append(
                f"Full fine-tuning: {full.mean():.4f}; the best frozen regime, "
                f"{REGIME_LABELS[best]}: {get(best, 'test_accuracy').mean():.4f}."
            )
    return lines


def plot(curves, summary, title=""):
    """Validation accuracy against fine-tuning batches (mean over seeds, the
    band their range), and the final test accuracies in both modes."""
    import matplotlib.pyplot as plt

    from kbn_study.outputs import plots

    figure, (left, right) = plt.subplots(
        1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": (1.4, 1)}
    )
    for regime, group in curves.groupby("regime", sort=False):
        stats = group.groupby("step")["validation_accuracy"].agg(["mean", "min", "max"])
        color = REGIME_COLORS[regime]
        left.plot(stats.index, stats["mean"], color=color, label=REGIME_LABELS[regime])
        left.fill_between(
            stats.index, stats["min"], stats["max"], color=color, alpha=0.15
        )
    left.set_xlabel("fine-tuning batches of 60", fontsize=9)
    left.set_ylabel("validation accuracy, digits 5-9 (inference mode)", fontsize=9)
    left.xaxis.set_major_formatter(plots.THOUSANDS)
    left.set_ylim(0, 1)
    left.grid(alpha=0.3)
    left.legend(fontsize=7, loc="lower right")
    positions = np.arange(len(summary))
    width = 0.38
    right.bar(positions - width / 2, summary["test_accuracy_mean"], width,
              yerr=summary["test_accuracy_std"].fillna(0), capsize=3,
              color=[REGIME_COLORS[r] for r in summary["regime"]],
              label="inference mode")  # fmt: skip
    right.bar(positions + width / 2, summary["batch_statistics_accuracy_mean"], width,
              yerr=summary["batch_statistics_accuracy_std"].fillna(0), capsize=3,
              color=[REGIME_COLORS[r] for r in summary["regime"]], alpha=0.4,
              hatch="//", label="batch statistics (batches of 60)")  # fmt: skip
    right.set_xticks(positions, [SHORT_LABELS[r] for r in summary["regime"]],
                     fontsize=7)  # fmt: skip
    right.set_ylabel("test accuracy, digits 5-9", fontsize=9)
    low = min(summary["test_accuracy_mean"].min(),
              summary["batch_statistics_accuracy_mean"].min())  # fmt: skip
    right.set_ylim(max(0.0, low - 0.15), 1)
    right.grid(axis="y", alpha=0.3)
    right.legend(fontsize=7, loc="lower left")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure


def write(results, curves, run_dir, title):
    """results.csv, curves.csv, summary.csv, summary.md, fine_tuning.png."""
    from kbn_study.outputs import plots

    summary = summarize(results)
    table = checkpoints(curves)
    paths = {
        name: os.path.join(run_dir, name)
        for name in ("results.csv", "curves.csv", "summary.csv", "summary.md",
                     "fine_tuning.png")
    }  # fmt: skip
    results.to_csv(paths["results.csv"], index=False)
    curves.to_csv(paths["curves.csv"], index=False)
    summary.to_csv(paths["summary.csv"], index=False)
    pretrain = results[results.regime == "pretrain"]["test_accuracy"]
    text = [
        f"# {title}",
        "",
        f"Pretrained on digits 0-4: test accuracy {pretrain.mean():.4f} ± "
        f"{0.0 if len(pretrain) < 2 else pretrain.std():.4f} on digits 0-4. "
        "Fine-tuned on digits 5-9; accuracies on digits 5-9, mean ± std over "
        f"{int(summary['seeds'].min())} seeds.",
        "",
        markdown_table(summary, table),
        "",
        *(f"- {line}" for line in claims(results)),
        "",
    ]
    with open(paths["summary.md"], "w") as f:
        f.write("\n".join(text))
    figure = plot(curves, summary, title)
    figure.savefig(paths["fine_tuning.png"], dpi=100)
    plots.close(figure)
    return summary, paths


# --- TensorBoard -----------------------------------------------------------------

# name: (display name, description, type).
HPARAMS = {
    "regime": ("regime", "pretrain, or how the frozen batch norms behave", str),
    "seed": ("seed", "seed of the weights and of the batch order", int),
    "pretrain_batches": ("pretraining batches", "batches of 60, digits 0-4", int),
    "fine_tune_batches": ("fine-tuning batches", "batches of 60, digits 5-9", int),
    "data": ("data", "the data's tag", str),
}
METRICS = {
    "validation/accuracy": ("final validation accuracy", "inference mode"),
    "results/test_accuracy": ("test accuracy", "inference mode"),
    "results/test_accuracy_batch_statistics": (
        "test accuracy, batch statistics",
        "each batch of 60 normalized by its own statistics",
    ),
    "results/gap": ("gap", "batch statistics minus inference mode"),
}


def write_trials(run_dir, results, data_tag):
    """The HParams experiment in `run_dir`; each run's TensorBoard folder
    (`<regime>/seed<k>`, holding its validation curve) becomes a trial."""
    from kbn_study.outputs import hparams

    trials = []
    for row in results.itertuples():
        values = hparams.trial_hparams(
            {
                "regime": row.regime,
                "seed": row.seed,
                "pretrain_batches": row.pretrain_batches,
                "fine_tune_batches": row.fine_tune_batches,
                "data": data_tag,
            },
            HPARAMS,
        )
        metrics = {
            "results/test_accuracy": row.test_accuracy,
            "results/test_accuracy_batch_statistics": (
                row.test_accuracy_batch_statistics
            ),
            "results/gap": row.gap,
        }
        trials.append((row.folder, values, metrics, row.batches))
    hparams.write_experiment(run_dir, [t[1] for t in trials], HPARAMS, METRICS)
    for folder, values, metrics, step in trials:
        hparams.write_trial_metrics(
            os.path.join(run_dir, folder), values, metrics, folder, step
        )
