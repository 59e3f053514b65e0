"""Train the study's MLP with and without batch norm from the same weights, side by
side.

The entry point of `recipes/compare.py` (see its docstring for what it
reproduces and the figures to expect), also `python -m
kbn_study.commands.compare` and `kbn-compare`.

It parses, starts the process and calls the study; it must not hold training
logic.
"""

from kbn_study import cli


def parse_args(argv=None):
    parser = cli.ArgumentParser(__doc__)
    cli.add_mlp_arguments(parser)
    length = parser.add_mutually_exclusive_group()
    length.add_argument(
        "--batches",
        type=cli.positive_int,
        default=2_000,
        help="training batches of 60 images",
    )
    length.add_argument(
        "--full", action="store_true", help="the study's 50,000 batches"
    )
    parser.add_argument(
        "--batches-per-sample",
        type=cli.positive_int,
        default=None,
        help="validation sampling interval (default: the study's rule, every "
        "50 batches, or 500 from 10,000 batches on)",
    )
    cli.add_run_arguments(parser)
    cli.add_sweep_arguments(parser, ray=False)
    args = cli.parse(parser, argv)
    if args.full:
        args.batches = 50_000
    return args


def main(argv=None):
    args = parse_args(argv)
    config, dataset = cli.start_comparison(args)
    import keras

    from kbn_study.studies import experiment
    from kbn_study.studies import published
    from kbn_study.training import comparison

    print(f"Backend: {keras.backend.backend()}; run: {config.name(dataset)}")
    result = experiment.train_and_test(
        config, dataset=dataset, executor=cli.sweep_executor(args)
    )
    print()
    print(comparison.summary_text(result))
    runs = published.published_runs(
        config.activation, config.learning_rate, config.weights, config.batches
    )
    if len(runs) and config.dataset == "mnist":
        print("\nThe study (full MNIST, TensorFlow 1, one run per row):")
        columns = ["row", "network", "final_validation_accuracy", "test_accuracy"]
        print(runs[columns].to_string(index=False))
    print(f"\nData source: {dataset.source}")
    return result


if __name__ == "__main__":
    main()
