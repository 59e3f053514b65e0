"""Batch norm under corruptions: source statistics, test-batch statistics,
AdaBN, mixed statistics and Tent, measured (issue 27).

A network trained on clean digits (the study's conv net, and its MLP) is
tested on corrupted copies of the test digits (`kbn_study.data.corruptions`,
in the spirit of MNIST-C), each corruption at each severity a target domain
of its own, by every method of `methods()`:

- `source`: the usual inference, with the source statistics: the
  population statistics of the clean training digits
  (`kbn.recompute_batch_norm_statistics` after training, so that short
  runs are not judged by moving averages that still lag);
- `batch<b>`: prediction-time batch norm (Nado et al., 2020), the
  statistics of each test batch of `b` (`kbn.use_test_batch_statistics`);
- `adabn`: AdaBN (Li et al., 2016), statistics recomputed on the whole
  corrupted test set, unlabeled, before predicting it
  (`kbn.adapt_batch_norm_statistics`);
- `mix<b>_N<N>`: Schneider et al. (2020), each test batch of `b`
  normalized with `N / (N + b)` of the source statistics and `b / (N + b)`
  of its own (`kbn.use_test_batch_statistics(model, source_samples=N)`);
- `tent<b>_lr<rate>`: Tent (Wang et al., 2021), one online pass over the
  test set in batches of `b`, each batch predicted and then used for one
  Adam step at `rate` on the batch norms' `gamma` and `beta` (`kbn.Tent`),
  reset to the source model before each target domain. The reference's
  rate, 1e-3, moves them by about `rate` per step, and a pass over 714
  digits in batches of 64 is 12 steps: 1e-2 is measured too.

Every method starts from the trained model and leaves it as it found it.
The test set keeps its order (the split is i.i.d. already), so a test
batch holds digits of every class. Error is `1 - accuracy` on the 714 test
digits (on the shipped subset).

It must not train (the command trains through
`kbn_study.training.runs.train`) nor read the command line.
"""

import dataclasses
import os
import time

import numpy as np
import pandas as pd

from kbn import checks
from kbn_study.data import corruptions as data_corruptions
from kbn_study.outputs import verdicts

MODELS = ("convnet", "mlp")
MODEL_LABELS = {"convnet": "Conv net", "mlp": "MLP"}
CLEAN = "clean"
KINDS = ("source", "batch", "adabn", "mix", "tent")
KIND_COLORS = {
    "source": "black",
    "batch": "tab:blue",
    "adabn": "tab:green",
    "mix": "tab:orange",
    "tent": "tab:red",
}


@dataclasses.dataclass(frozen=True)
class Method:
    """One way to predict a target domain."""

    # One of KINDS.
    kind: str
    # Test batch size (batch, mix, tent); None for source and AdaBN.
    batch_size: int | None = None
    # Schneider's N (mix only).
    source_samples: float | None = None
    # Adam's learning rate (tent only).
    learning_rate: float | None = None

    @property
    def name(self):
        if self.kind in ("source", "adabn"):
            return self.kind
        if self.kind == "mix":
            return f"mix{self.batch_size}_N{self.source_samples:g}"
        if self.kind == "tent":
            return f"tent{self.batch_size}_lr{self.learning_rate:g}"
        return f"{self.kind}{self.batch_size}"

    @property
    def label(self):
        if self.kind == "source":
            return "source statistics"
        if self.kind == "adabn":
            return "AdaBN (whole target set)"
        if self.kind == "batch":
            return f"test batches of {self.batch_size}"
        if self.kind == "mix":
            return f"N={self.source_samples:g} mix, batches of {self.batch_size}"
        return f"Tent, batches of {self.batch_size}, Adam {self.learning_rate:g}"


def methods(
    test_batch_sizes=(1, 8, 64, 512),
    mix_batch_sizes=(1, 8),
    source_samples=(8, 64),
    tent_batch_size=64,
    tent_learning_rates=(1e-3, 1e-2),
):
    """The methods of the study, in the order of its tables."""
    for name, sizes in (
        ("test_batch_sizes", test_batch_sizes),
        ("mix_batch_sizes", mix_batch_sizes),
    ):
        for size in sizes:
            checks.check_int(size, name)
    for n in source_samples:
        checks.check_float(n, "source_samples", positive=True)
    checks.check_int(tent_batch_size, "tent_batch_size")
    for rate in tent_learning_rates:
        checks.check_float(rate, "tent_learning_rates", positive=True)
    return [
        Method("source"),
        *(Method("batch", b) for b in test_batch_sizes),
        Method("adabn"),
        *(Method("mix", b, float(n)) for b in mix_batch_sizes for n in source_samples),
        *(
            Method("tent", tent_batch_size, learning_rate=float(rate))
            for rate in tent_learning_rates
        ),
    ]


@dataclasses.dataclass(frozen=True)
class TargetSet:
    """One target domain: a corruption at a severity (`clean`: severity 0)."""

    corruption: str
    severity: int
    images: np.ndarray
    labels: np.ndarray


def target_sets(images, labels, corruption_names, severities, seed=0):
    """The clean test set, then every corruption at every severity."""
    sets = [TargetSet(CLEAN, 0, images, labels)]
    for corruption in corruption_names:
        for severity in severities:
            corrupted = data_corruptions.corrupt(images, corruption, severity, seed)
            sets.append(TargetSet(corruption, severity, corrupted, labels))
    return sets


def source_statistics(model, train_images, seed, batch_size=60):
    """Sets the model's statistics to the population statistics of the clean
    training images (i.i.d. batches of 60 in a seeded order)."""
    from kbn.population import recompute_batch_norm_statistics

    order = np.random.default_rng(seed).permutation(len(train_images))
    usable = len(order) // batch_size * batch_size
    recompute_batch_norm_statistics(
        model, train_images[order[:usable]], batch_size=batch_size
    )


def evaluate(model, sets, method_list, reshape=None):
    """Every method on every target set; the model is left as it came.

    Args:
        model: A trained classifier with kbn batch norms, returning logits.
        sets: `TargetSet`s (images flattened or not).
        method_list: `Method`s.
        reshape: Optional function applied to a set's images for the model.

    Returns:
        A list of rows `{method, corruption, severity, error, seconds}`;
        `seconds` is the method's time on that set.
    """
    import kbn
    from kbn import adaptation
    from kbn.evaluation import Accuracy

    reshape = reshape or (lambda images: images)
    source = adaptation.batch_norm_statistics(model)
    rows = []

    def record(method, target, accuracy, start):
        rows.append(_row(method, target, accuracy, time.perf_counter() - start))

    for method in method_list:
        if method.kind == "source":
            for target in sets:
                start = time.perf_counter()
                accuracy = Accuracy(model, reshape(target.images), target.labels)()
                record(method, target, accuracy, start)
        elif method.kind in ("batch", "mix"):
            accuracies, seconds = _batched_accuracies(model, method, sets, reshape)
            for target, accuracy, spent in zip(sets, accuracies, seconds):
                rows.append(_row(method, target, accuracy, spent))
        elif method.kind == "adabn":
            try:
                for target in sets:
                    start = time.perf_counter()
                    images = reshape(target.images)
                    kbn.adapt_batch_norm_statistics(model, images)
                    accuracy = Accuracy(model, images, target.labels)()
                    adaptation.set_batch_norm_statistics(model, source)
                    record(method, target, accuracy, start)
            finally:
                adaptation.set_batch_norm_statistics(model, source)
        elif method.kind == "tent":
            import keras

            tent = kbn.Tent(model, keras.optimizers.Adam(method.learning_rate))
            try:
                for target in sets:
                    start = time.perf_counter()
                    tent.reset()
                    images = reshape(target.images)
                    size = method.batch_size
                    predicted = np.concatenate(
                        [
                            tent.adapt(images[i : i + size]).argmax(-1)
                            for i in range(0, len(images), size)
                        ]
                    )
                    accuracy = float(np.mean(predicted == target.labels))
                    record(method, target, accuracy, start)
            finally:
                tent.reset()
        else:
            checks.fail("method", method, f"a Method of a kind in {KINDS}")
    return rows


def _row(method, target, accuracy, seconds):
    return {
        "method": method.name,
        "corruption": target.corruption,
        "severity": target.severity,
        "error": 1.0 - accuracy,
        "seconds": seconds,
    }


def _batched_accuracies(model, method, sets, reshape):
    """Accuracies with the statistics of test batches of `method.batch_size`
    (mixed with the source's for `mix`), the sets' images taken in order.

    Every whole test batch of a set is predicted in a few calls (groups of
    the batch size, `use_test_batch_statistics(group_size=...)`), the last,
    smaller one on its own: the same predictions as one call per batch.
    """
    import kbn
    from kbn.evaluation import Accuracy

    size, samples = method.batch_size, method.source_samples or 0
    chunk = size * max(1, 1024 // size)
    correct = [0.0] * len(sets)
    seconds = [0.0] * len(sets)
    with kbn.use_test_batch_statistics(model, samples, group_size=size):
        for index, target in enumerate(sets):
            start = time.perf_counter()
            whole = len(target.images) // size * size
            if whole:
                images, labels = reshape(target.images[:whole]), target.labels[:whole]
                correct[index] = (
                    Accuracy(model, images, labels, batch_size=chunk)() * whole
                )
            seconds[index] += time.perf_counter() - start
    with kbn.use_test_batch_statistics(model, samples):
        for index, target in enumerate(sets):
            start = time.perf_counter()
            whole = len(target.images) // size * size
            if whole < len(target.images):
                images, labels = reshape(target.images[whole:]), target.labels[whole:]
                rest = len(labels)
                correct[index] += Accuracy(model, images, labels)() * rest
            seconds[index] += time.perf_counter() - start
    accuracies = [c / len(t.images) for c, t in zip(correct, sets)]
    return accuracies, seconds


# --- Tables ------------------------------------------------------------------


def per_seed(results):
    """Per model, method, corruption and seed: the error averaged over the
    severities; `mean` (over the corruptions, clean excluded) added as a
    corruption of its own."""
    grouped = results.groupby(
        ["model", "method", "corruption", "seed"], sort=False, as_index=False
    )["error"].mean()
    corrupted = grouped[grouped.corruption != CLEAN]
    mean = corrupted.groupby(["model", "method", "seed"], sort=False, as_index=False)[
        "error"
    ].mean()
    mean["corruption"] = "mean"
    return pd.concat([grouped, mean], ignore_index=True)


def summarize(results):
    """Per model, method and corruption (and `mean`): the error's mean and
    standard deviation over the seeds (each seed averaged over severities)."""
    table = per_seed(results)
    return (
        table.groupby(["model", "method", "corruption"], sort=False)
        .agg(
            error_mean=("error", "mean"),
            error_std=("error", "std"),
            seeds=("seed", "nunique"),
        )
        .reset_index()
    )


def markdown_table(summary, model, method_list, corruption_names):
    """Rows: methods; columns: the corruptions, their mean, clean. Error in
    percent, mean ± std over seeds (severities averaged first)."""
    columns = [*corruption_names, "mean", CLEAN]
    header = "| method | " + " | ".join(
        "**mean**" if c == "mean" else c.replace("_", " ") for c in columns
    )
    lines = [header + " |", "|---" * (len(columns) + 1) + "|"]
    cells = summary[summary.model == model].set_index(["method", "corruption"])
    for method in method_list:
        row = [method.label]
        for corruption in columns:
            cell = cells.loc[(method.name, corruption)]
            text = f"{100 * cell.error_mean:.1f} ± {100 * _std(cell.error_std):.1f}"
            row.append(f"**{text}**" if corruption == "mean" else text)
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _std(value):
    return 0.0 if pd.isna(value) else value


def claims(results, method_list):
    """The papers' claims, checked on the results: `(claim, verdict, numbers)`
    per model, in lines of Markdown."""
    table = per_seed(results)
    means = table[table.corruption == "mean"].pivot_table(
        index=["model", "seed"], columns="method", values="error"
    )
    clean = table[table.corruption == CLEAN].pivot_table(
        index=["model", "seed"], columns="method", values="error"
    )
    names = {m.name: m for m in method_list}
    lines = [verdicts.RULE, ""]
    for model in means.index.get_level_values("model").unique():
        errors = means.loc[model]
        lines.append(f"**{MODEL_LABELS.get(model, model)}** (mean corruption error):")
        lines.extend(
            f"- {line}" for line in _model_claims(errors, clean.loc[model], names)
        )
        lines.append("")
    return lines


def _verdict(better, baseline):
    return verdicts.verdict(better, baseline, lower_is_better=True)


def _pct(series):
    return f"{100 * series.mean():.1f}%"


def _model_claims(errors, clean, names):
    lines = []
    seeds = len(errors)
    source = errors["source"]

    def compare(claim, method, baseline, baseline_name):
        verdict, wins = _verdict(errors[method], baseline)
        reduction = 1 - errors[method].mean() / baseline.mean()
        relative = f"{abs(reduction):.0%} {'lower' if reduction >= 0 else 'higher'}"
        return (
            f"{claim}: **{verdict}**: {names[method].label} {_pct(errors[method])} "
            f"against {baseline_name} {_pct(baseline)} ({relative}; lower in "
            f"{wins} of {seeds} seeds)."
        )

    if "adabn" in errors:
        lines.append(
            compare(
                "Adapted statistics lower the corruption error (Schneider et al.: "
                "ResNet-50 on ImageNet-C, 76.7% to 62.2% mCE, 19% lower; Li et "
                "al.'s AdaBN)",
                "adabn",
                source,
                "source statistics",
            )
        )
    batches = sorted(
        (m for m in errors.columns if m in names and names[m].kind == "batch"),
        key=lambda m: names[m].batch_size,
    )
    if batches:
        largest, smallest = batches[-1], batches[0]
        lines.append(
            compare(
                "Prediction-time batch norm helps under covariate shift with "
                "large enough test batches (Nado et al.)",
                largest,
                source,
                "source statistics",
            )
        )
        verdict, wins = _verdict(source, errors[smallest])
        lines.append(
            f"Small test batches hurt it (Nado et al.): **{verdict}**: "
            f"{names[smallest].label} {_pct(errors[smallest])} against source "
            f"statistics {_pct(source)} (source lower in {wins} of {seeds} seeds)."
        )
    mixes = [m for m in errors.columns if m in names and names[m].kind == "mix"]
    for size in sorted({names[m].batch_size for m in mixes}):
        mine = [m for m in mixes if names[m].batch_size == size]
        best = min(mine, key=lambda m: errors[m].mean())
        lines.append(
            compare(
                f"With the source statistics as a prior, {size} target "
                f"sample{'s' if size > 1 else ''} already help (Schneider et al.; "
                "best N)",
                best,
                source,
                "source statistics",
            )
        )
        pure = f"batch{size}"
        if pure in errors:
            lines.append(
                compare(
                    f"The prior beats test-batch statistics alone at {size} "
                    "sample(s) (Schneider et al.)",
                    best,
                    errors[pure],
                    names[pure].label,
                )
            )
    tents = [m for m in errors.columns if m in names and names[m].kind == "tent"]
    for tent in tents:
        pure = f"batch{names[tent].batch_size}"
        if pure in errors:
            lines.append(
                compare(
                    "Tent lowers the error below test-batch statistics alone "
                    "(Wang et al.)",
                    tent,
                    errors[pure],
                    names[pure].label,
                )
            )
    if "adabn" in clean:
        lines.append(
            f"On clean digits: source statistics {_pct(clean['source'])}, AdaBN "
            f"{_pct(clean['adabn'])}"
            + (
                f", {names[batches[-1]].label} {_pct(clean[batches[-1]])}"
                if batches
                else ""
            )
            + "."
        )
    return lines


def per_corruption_lines(summary, model, corruption_names, method="adabn"):
    """Where `method` helps and where it does not, corruption by corruption."""
    cells = summary[summary.model == model].set_index(["method", "corruption"])
    if (method, "mean") not in cells.index:
        return []
    helps, hurts = [], []
    for corruption in corruption_names:
        source = cells.loc[("source", corruption), "error_mean"]
        adapted = cells.loc[(method, corruption), "error_mean"]
        name = corruption.replace("_", " ")
        text = f"{name} ({100 * source:.1f}% to {100 * adapted:.1f}%)"
        (helps if adapted < source else hurts).append(text)
    return [
        f"{method} against source statistics, {MODEL_LABELS.get(model, model)}: "
        f"lower on {', '.join(helps) or 'none'}; not lower on "
        f"{', '.join(hurts) or 'none'}."
    ]


# --- Figure --------------------------------------------------------------------


def plot(summary, method_list, corruption_names, models, title=""):
    """Per model: a heat map of the error (methods x corruptions), and the
    mean corruption error against the test batch size."""
    import matplotlib.pyplot as plt

    columns = [*corruption_names, "mean", CLEAN]
    figure, axes = plt.subplots(
        len(models), 2, figsize=(15, 4.2 * len(models) + 0.6),
        gridspec_kw={"width_ratios": (2.2, 1)}, squeeze=False,
    )  # fmt: skip
    for row, model in enumerate(models):
        cells = summary[summary.model == model].set_index(["method", "corruption"])
        grid = np.array(
            [
                [100 * cells.loc[(m.name, c), "error_mean"] for c in columns]
                for m in method_list
            ]
        )
        heat = axes[row, 0]
        image = heat.imshow(grid, cmap="magma_r", vmin=0, vmax=100, aspect="auto")
        for (i, j), value in np.ndenumerate(grid):
            heat.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=7,
                      color="white" if value > 55 else "black")  # fmt: skip
        heat.set_xticks(range(len(columns)), [c.replace("_", "\n") for c in columns],
                        fontsize=8)  # fmt: skip
        heat.set_yticks(range(len(method_list)), [m.label for m in method_list],
                        fontsize=8)  # fmt: skip
        heat.set_title(f"{MODEL_LABELS.get(model, model)}: test error (%)", fontsize=10)
        figure.colorbar(image, ax=heat, fraction=0.03)
        lines = axes[row, 1]
        mean = {
            m.name: 100 * cells.loc[(m.name, "mean"), "error_mean"] for m in method_list
        }
        sizes = sorted({m.batch_size for m in method_list if m.kind == "batch"})
        if sizes:
            lines.plot(sizes, [mean[f"batch{b}"] for b in sizes], "o-",
                       color=KIND_COLORS["batch"],
                       label="test-batch statistics")  # fmt: skip
        samples = sorted({m.source_samples for m in method_list if m.kind == "mix"})
        shades = plt.get_cmap("Oranges")(np.linspace(0.45, 0.9, max(len(samples), 1)))
        for n, shade in zip(samples, shades):
            mixed = sorted(
                (m.batch_size, mean[m.name])
                for m in method_list
                if m.kind == "mix" and m.source_samples == n
            )
            lines.plot(*zip(*mixed), "s--", color=shade,
                       label=f"mixed with the source, N={n:g}")  # fmt: skip
        tents = [m for m in method_list if m.kind == "tent"]
        for m, marker in zip(tents, "*P^v"):
            lines.plot([m.batch_size], [mean[m.name]], marker, markersize=11,
                       color=KIND_COLORS["tent"], label=m.label,
                       alpha=0.8)  # fmt: skip
        for m in method_list:
            if m.kind in ("source", "adabn"):
                lines.axhline(mean[m.name], color=KIND_COLORS[m.kind], ls=":",
                              label=m.label)  # fmt: skip
        lines.set_xscale("log", base=2)
        ticks = sorted({m.batch_size for m in method_list if m.batch_size})
        lines.set_xticks(ticks, [str(t) for t in ticks], fontsize=8)
        lines.set_xlabel("test batch size", fontsize=8)
        lines.set_ylabel("mean corruption error (%)", fontsize=8)
        lines.grid(alpha=0.3)
        lines.legend(fontsize=7)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure


# --- Files ---------------------------------------------------------------------


def write(results, training, run_dir, method_list, corruption_names, models, title):
    """results.csv, training.csv, summary.csv, summary.md, corruptions.png."""
    from kbn_study.outputs import plots

    summary = summarize(results)
    paths = {
        name: os.path.join(run_dir, name)
        for name in ("results.csv", "training.csv", "summary.csv", "summary.md",
                     "corruptions.png")
    }  # fmt: skip
    results.to_csv(paths["results.csv"], index=False)
    training.to_csv(paths["training.csv"], index=False)
    summary.to_csv(paths["summary.csv"], index=False)
    seeds = int(summary["seeds"].min())
    text = [f"# {title}", ""]
    for model in models:
        text += [
            f"## {MODEL_LABELS.get(model, model)}",
            "",
            f"Test error (%), mean ± std over {seeds} seeds, each seed averaged "
            "over the severities; **mean**: over the corruptions (clean "
            "excluded).",
            "",
            markdown_table(summary, model, method_list, corruption_names),
            "",
            *per_corruption_lines(summary, model, corruption_names),
            "",
        ]
    text += ["## The papers' claims", "", *claims(results, method_list)]
    with open(paths["summary.md"], "w") as f:
        f.write("\n".join(text))
    figure = plot(summary, method_list, corruption_names, models, title)
    figure.savefig(paths["corruptions.png"], dpi=100)
    plots.close(figure)
    return summary, paths


# --- TensorBoard ---------------------------------------------------------------

# name: (display name, description, type).
HPARAMS = {
    "model": ("model", "convnet or mlp", str),
    "method": ("method", "how the target domain is predicted", str),
    "kind": ("kind", "source, batch, adabn, mix or tent", str),
    "test_batch_size": ("test batch size", "0: not by batches", int),
    "source_samples": ("N", "Schneider's pseudo sample size; 0: none", float),
    "corruption": ("corruption", "the target domain (clean: none)", str),
    "seed": ("seed", "seed of the network's training", int),
    "data": ("data", "the data's tag", str),
}
ERROR = "results/error"


def metric_definitions(severities):
    return {
        ERROR: ("error", "test error averaged over the severities"),
        **{
            f"results/error_severity_{s}": (f"error, severity {s}", "test error")
            for s in severities
        },
    }


def trial_rows(results, method_list, data_tag):
    """One trial per model, seed, method and corruption:
    `(folder, hparams, metrics)`."""
    from kbn_study.outputs import hparams

    names = {m.name: m for m in method_list}
    trials = []
    grouped = results.groupby(["model", "seed", "method", "corruption"], sort=False)
    for (model, seed, method, corruption), group in grouped:
        spec = names[method]
        values = {
            "model": model,
            "method": method,
            "kind": spec.kind,
            "test_batch_size": spec.batch_size or 0,
            "source_samples": spec.source_samples or 0.0,
            "corruption": corruption,
            "seed": int(seed),
            "data": data_tag,
        }
        metrics = {ERROR: float(group["error"].mean())}
        for severity, error in zip(group["severity"], group["error"]):
            if severity:
                metrics[f"results/error_severity_{severity}"] = float(error)
        folder = os.path.join(f"{model}_seed{seed}", method, corruption)
        trials.append((folder, hparams.trial_hparams(values, HPARAMS), metrics))
    return trials


def write_trials(run_dir, results, method_list, data_tag, severities):
    """The HParams experiment in `run_dir/trials/`, one trial per model,
    seed, method and corruption."""
    from kbn_study.outputs import hparams

    trials_dir = os.path.join(run_dir, "trials")
    trials = trial_rows(results, method_list, data_tag)
    hparams.write_experiment(
        trials_dir, [h for _, h, _ in trials], HPARAMS, metric_definitions(severities)
    )
    for folder, values, metrics in trials:
        path = os.path.join(trials_dir, folder)
        os.makedirs(path, exist_ok=True)
        for old in os.listdir(path):
            if old.startswith("events.out.tfevents."):
                os.remove(os.path.join(path, old))
        hparams.write_trial_metrics(path, values, metrics, folder)
    return trials_dir
