"""The whole study: every configuration of its table, with several seeds.

Runs the study's 15 configurations (ReLU/sigmoid x learning rate 0.01/1/2 x
good/bad initial weights, 50,000 or 2,000 batches of 60), each with and
without batch norm, `--seeds` times with different initial weights. Every
finished run is appended to `<out>/results.csv` at once; run the same command
again to resume an interrupted grid. At the end it writes:

- `<out>/summary.md`, `<out>/summary.csv`: per configuration and network,
  mean and spread of the final accuracies over the seeds, success rate
  (final validation accuracy above 0.5), and the study's published figures;
- `<out>/overview.png`: one small plot per configuration;
- `<out>/<run>/{without_bn,with_bn}/`: TensorBoard logs of every run.

    python recipes/seed_grid.py                       # the full study
    python recipes/seed_grid.py --seeds 5             # randomness as a number
    python recipes/seed_grid.py --configs relu:1:bad,relu:2:bad --seeds 5
    python recipes/seed_grid.py --max-batches 2000    # a quick look

The full grid (one seed, 1.2 million training steps) took 4 min 23 s on the
2-core development machine (JAX backend, offline MNIST subset).
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse
import sys
import time

import keras

import kbn
from kbn import cli
from kbn import grid
from kbn import study
from kbn.plotting import plot_grid_overview


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--seeds",
        type=cli.positive_int,
        default=1,
        help="repeat every configuration with seeds 0..K-1",
    )
    parser.add_argument(
        "--configs",
        default=None,
        help="comma-separated filter activation:lr:weights[:batches], '*' as a "
        "wildcard, e.g. relu:1:bad or sigmoid:*:good:2000 (default: all 15)",
    )
    parser.add_argument(
        "--max-batches",
        type=cli.positive_int,
        default=None,
        help="cap every configuration's length (quick runs)",
    )
    parser.add_argument("--out", default=os.path.join("logs", "seed_grid"))
    parser.add_argument("--data", default=None, help="mnist.npz or IDX folder")
    cli.add_dataset_argument(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    with cli.bad_input_exits():
        configurations = study.select_configurations(args.configs)
        dataset = kbn.load_mnist(args.data, name=args.dataset)
    print(f"Data: {dataset.describe()}")
    print(f"Backend: {keras.backend.backend()}; output: {args.out}")
    start = time.perf_counter()
    try:
        with cli.bad_input_exits():  # e.g. resuming with other data
            results = grid.run_grid(
                args.out,
                dataset,
                configurations,
                seeds=args.seeds,
                max_batches=args.max_batches,
            )
    except KeyboardInterrupt:
        finished = len(grid.read_results(os.path.join(args.out, "results.csv")))
        print(
            f"\nInterrupted. {finished} finished runs are saved in "
            f"{args.out}/results.csv; run the same command again to resume."
        )
        sys.exit(130)
    elapsed = time.perf_counter() - start

    keys = {c.key for c in configurations}
    mine = results[
        results.apply(
            lambda r: (
                f"{r.activation}:{float(r.learning_rate):g}:{r.weights}:"
                f"{int(r.study_batches)}" in keys
            ),
            axis=1,
        )
        & (results["seed"] < args.seeds)
    ]
    if args.max_batches is not None:
        mine = mine[mine["batches"] <= args.max_batches]
    summary = grid.summarize(mine)
    length = (
        "full length"
        if args.max_batches is None
        else f"capped at {args.max_batches:,} batches"
    )
    notes = [
        f"Data: {dataset.describe()}. Backend: {keras.backend.backend()}. "
        f"Runs {length}, {args.seeds} seed(s). Success: final validation "
        "accuracy above 0.5. Study: the published run(s), full MNIST.",
    ]
    markdown = grid.summary_markdown(summary, title="kbn seed grid", notes=notes)
    paths = {
        "summary_md": os.path.join(args.out, "summary.md"),
        "summary_csv": os.path.join(args.out, "summary.csv"),
        "overview": os.path.join(args.out, "overview.png"),
        "results": os.path.join(args.out, "results.csv"),
        "curves": os.path.join(args.out, "curves.csv"),
    }
    with open(paths["summary_md"], "w") as f:
        f.write(markdown)
    summary.to_csv(paths["summary_csv"], index=False)
    curves = grid.read_curves(paths["curves"])
    curves = curves.merge(mine[grid.RUN_KEY], on=grid.RUN_KEY)
    figure = plot_grid_overview(
        curves, title=f"Validation accuracy, {length}, {args.seeds} seed(s)"
    )
    figure.savefig(paths["overview"], dpi=110)

    print()
    print(markdown)
    print(f"Grid time this call: {elapsed:,.0f} s")
    for name, path in paths.items():
        print(f"{name:>11}: {path}")
    return summary


if __name__ == "__main__":
    main()
