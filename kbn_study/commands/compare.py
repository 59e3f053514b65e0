"""Train the study's MLP with and without batch norm from the same weights, side by
side.

The entry point of `recipes/compare.py` (see its docstring for what it
reproduces and the figures to expect), also `python -m
kbn_study.commands.compare` and `kbn-compare`.
"""

from kbn_study import cli


def parse_args(argv=None):
    parser = cli.ArgumentParser(__doc__)
    parser.add_argument(
        "--activation",
        choices=["relu", "sigmoid"],
        default="relu",
        help="hidden activation of both networks",
    )
    parser.add_argument(
        "--learning-rate",
        type=cli.positive_float,
        default=0.01,
        help="plain SGD learning rate (the study: 0.01, 1 or 2)",
    )
    parser.add_argument(
        "--weights",
        choices=["good", "bad"],
        default="good",
        help="initial kernels: good N(0, 0.05), bad N(0, 5.0)",
    )
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
    cli.add_seed_argument(parser)
    cli.add_log_dir_argument(parser)
    cli.add_data_arguments(parser)
    args = parser.parse_args(argv)
    if args.full:
        args.batches = 50_000
    cli.check_paths(
        parser, outputs={"--log-dir": args.log_dir}, inputs={"--data": args.data}
    )
    return args


def main(argv=None):
    args = parse_args(argv)
    cli.start(default_backend="jax")
    import keras

    from kbn_study import comparison
    from kbn_study import experiment
    from kbn_study import mnist
    from kbn_study import published

    config = experiment.ExperimentConfig(
        activation=args.activation,
        learning_rate=args.learning_rate,
        weights=args.weights,
        batches=args.batches,
        batches_per_sample=args.batches_per_sample,
        seed=args.seed,
        log_dir=args.log_dir,
        data=args.data,
        dataset=args.dataset,
    )
    with cli.bad_input_exits():
        dataset = mnist.load_mnist(config.data, name=config.dataset)
    print(f"Data: {dataset.describe()}")
    print(f"Backend: {keras.backend.backend()}; run: {config.name(dataset)}")
    result = experiment.train_and_test(config, dataset=dataset)
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
