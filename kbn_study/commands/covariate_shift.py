"""Internal covariate shift made visible: the sigmoid MLP with and without batch
norm, and the 15/50/85th percentiles of one last-layer sigmoid's input over
training (Ioffe & Szegedy 2015, Figure 1).

The entry point of `recipes/covariate_shift.py` (see its docstring), also
`python -m kbn_study.commands.covariate_shift` and `kbn-covariate-shift`.

It parses, starts the process and calls the study; it must not hold training
logic.
"""

from kbn_study import cli


def parse_args(argv=None):
    parser = cli.ArgumentParser(__doc__)
    cli.add_mlp_arguments(parser)
    # The study's sigmoid configuration at the paper's length (row 3 of its
    # table): learning rate 0.01, good weights, 50,000 batches.
    parser.set_defaults(activation="sigmoid", learning_rate=0.01)
    parser.add_argument(
        "--batches",
        type=cli.positive_int,
        default=50_000,
        help="training batches of 60 images (the paper: 50,000)",
    )
    parser.add_argument(
        "--batches-per-sample",
        type=cli.positive_int,
        default=None,
        help="sampling interval of accuracy and percentiles (default: the "
        "study's rule, every 50 batches, or 500 from 10,000 batches on)",
    )
    parser.add_argument(
        "--unit",
        type=cli.non_negative_int,
        default=0,
        help="the unit of the last hidden layer drawn (0 to 99); the drift "
        "is measured over every unit",
    )
    parser.add_argument(
        "--probe-size",
        type=cli.positive_int,
        default=1_000,
        help="validation images the percentiles are taken over (at most the "
        "validation set)",
    )
    cli.add_run_arguments(parser)
    args = cli.parse(parser, argv)
    if args.unit >= 100:
        parser.error(
            "argument --unit: expected a unit of the last hidden layer, 0 to 99. "
            f"Received: {args.unit}"
        )
    return args


def main(argv=None):
    args = parse_args(argv)
    config, dataset = cli.start_comparison(args)
    import os

    import keras

    from kbn_study.studies import covariate_shift
    from kbn_study.studies import experiment
    from kbn_study.training import comparison

    schedule = config.schedule
    run_dir = os.path.join(args.log_dir, f"covariate_shift_{config.name(dataset)}")
    probe_size = min(args.probe_size, len(dataset.validation))
    print(
        f"Backend: {keras.backend.backend()}; run: {run_dir}; percentiles of the "
        f"input of {covariate_shift.last_hidden_activation(config)} on "
        f"{probe_size:,} validation images every {schedule.batches_per_sample:,} "
        "batches"
    )
    make_callbacks, callbacks = covariate_shift.percentile_callbacks(
        config, dataset, probe_size, schedule
    )
    title = f"Internal covariate shift: {config.describe()}"
    result = comparison.compare_networks(
        experiment.network_builders(config),
        dataset,
        lambda: keras.optimizers.SGD(config.learning_rate),
        schedule,
        run_dir=run_dir,
        title=title,
        metadata={"args": vars(args), "probe_size": probe_size},
        make_callbacks=make_callbacks,
    )
    table = covariate_shift.percentile_table(callbacks)
    drifts = {
        name: covariate_shift.drift(table, name) for name in ("without_bn", "with_bn")
    }
    result.paths.update(
        covariate_shift.write(result, table, drifts, run_dir, args.unit, title)
    )
    print()
    print(comparison.summary_text(result))
    print("\nDrift of the last hidden layer's pre-activations (mean over units):")
    for d in drifts.values():
        print(
            f"  {d['network']:>10}: median moved {d['median_drift']:.4f} between "
            f"steps {d['from_step']:,} and {d['to_step']:,}, "
            f"{d['drift_in_bands']:.3f} of the 15-85 band ({d['band_width']:.3f})"
        )
    print(f"\nData source: {dataset.source}")
    return result, drifts


if __name__ == "__main__":
    main()
