"""Run the study's whole table of configurations, with and without batch norm, over
several seeds.

The entry point of `recipes/seed_grid.py` (see its docstring), also
`python -m kbn_study.commands.seed_grid` and `kbn-grid`.

It parses, starts the process and calls the study; it must not hold training
logic.
"""

import argparse
import os

from kbn_study import cli
from kbn_study import startup


def parse_args(argv=None):
    parser = cli.ArgumentParser(__doc__)
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
        "--fraction",
        type=cli.fraction,
        default=1.0,
        help="train every configuration for this share of its study length, "
        "e.g. 0.1 for 5,000 and 200 batches: a quick look whose figures are "
        "not comparable with the study's",
    )
    parser.add_argument(
        "--out",
        default=os.path.join("logs", "seed_grid"),
        help="output folder: results.csv, curves.csv, summary, plot, TensorBoard",
    )
    cli.add_data_arguments(parser)
    cli.add_sweep_arguments(parser)
    parser.add_argument(
        "--time-workers",
        type=_worker_counts,
        default=None,
        metavar="A,B",
        help="instead of the grid, time its runs with A then B worker "
        "processes, each from scratch in <out>/time_workers/<count>, and print "
        "the speed-up and whether every run's accuracies are identical, e.g. "
        "1,2 (default: off)",
    )
    args = cli.parse(parser, argv, outputs=["--out"])
    cli.check_sweep_arguments(parser, args)
    from kbn_study.studies import published  # pandas only: no Keras yet

    try:
        args.configurations = published.select_configurations(args.configs)
    except ValueError as error:
        parser.error(f"argument --configs: {error}")
    return args


def _worker_counts(text):
    counts = text.split(",")
    try:
        values = [int(count) for count in counts]
    except ValueError:
        values = []
    if len(values) != 2 or min(values) < 1:
        raise argparse.ArgumentTypeError(
            f"expected two worker counts such as 1,2. Received: {text!r}"
        )
    return values


def main(argv=None):
    args = parse_args(argv)
    startup.start(default_backend="jax")
    import time

    import keras

    from kbn_study.grid import report as grid_report
    from kbn_study.grid import runner as grid
    from kbn_study.grid import summary as grid_summary

    dataset = cli.load_data(args)
    print(f"Backend: {keras.backend.backend()}; output: {args.out}")
    if args.time_workers:
        from kbn_study.grid import timing as sweep_timing

        try:
            return sweep_timing.time_workers(
                args.out,
                dataset,
                args.time_workers,
                args.configurations,
                seeds=args.seeds,
                fraction=args.fraction,
            )
        except KeyboardInterrupt:
            print("\nInterrupted: no timing.")
            raise SystemExit(130) from None
    start = time.perf_counter()
    try:
        with cli.bad_input_exits():  # e.g. a results.csv of an older version
            results = grid.run_grid(
                args.out,
                dataset,
                args.configurations,
                seeds=args.seeds,
                fraction=args.fraction,
                executor=cli.sweep_executor(args),
            )
    except KeyboardInterrupt:
        finished = grid.count_finished(args.out)
        print(
            f"\nInterrupted. {grid_report.plural(finished, 'finished run')} "
            f"saved in {args.out}/results.csv; run the same command again to "
            "resume."
        )
        raise SystemExit(130) from None
    elapsed = time.perf_counter() - start
    report = grid_report.write_report(
        args.out, results, dataset, args.seeds, args.fraction
    )
    print()
    print(grid_summary.summary_text(report.summary))
    print(
        f"\nAll columns (spreads, successes, step at 0.9, steps/s): "
        f"{report.paths['summary_md']}"
    )
    print(f"Grid time this call: {elapsed:,.0f} s")
    for name, path in report.paths.items():
        print(f"{name:>11}: {path}")
    lost = results.attrs.get("lost", 0)
    if lost:
        cli.error(
            f"{grid_report.plural(lost, 'run')} lost with its worker twice, "
            f"listed in {args.out}/failed.csv; run the same command again to "
            "run them again"
        )
    return report.summary


if __name__ == "__main__":
    main()
