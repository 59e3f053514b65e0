"""Read MNIST images as sequences and train an LSTM and a batch-normalized LSTM side by
side.

The entry point of `recipes/sequential_mnist.py` (see its docstring), also
`python -m kbn_study.commands.sequential_mnist` and `kbn-sequential-mnist`.

It parses, starts the process and calls the study; it must not hold training
logic.
"""

from kbn_study import cli
from kbn_study import startup

ROW_BATCHES = 1_000
# About 15 minutes of training of both networks on 2 CPU cores (JAX).
PIXEL_BATCHES = 800
# Cooijmans et al. (2016), Table 1: test accuracy on the full MNIST.
PAPER = {
    "pixels": {"lstm": 0.989, "bn_lstm": 0.990},
    "permuted_pixels": {"lstm": 0.902, "bn_lstm": 0.954},
}


def parse_args(argv=None):
    parser = cli.ArgumentParser(__doc__)
    parser.add_argument("--units", type=cli.positive_int, default=64, help="LSTM units")
    cli.add_schedule_arguments(
        parser, batches=None, batch_size=64, batches_per_sample=50
    )
    parser.set_defaults(batches=None)
    for action in parser._actions:
        if action.dest == "batches":
            action.help = (
                f"training batches (default: {ROW_BATCHES:,} for rows, "
                f"{PIXEL_BATCHES} with --pixels, about 15 minutes on 2 cores)"
            )
    parser.add_argument(
        "--learning-rate",
        type=cli.positive_float,
        default=0.001,
        help="Adam's learning rate",
    )
    parser.add_argument(
        "--momentum",
        type=cli.momentum,
        default=0.6,
        help="momentum of the BN-LSTM's moving statistics (default: 0.6, "
        "BNLSTM's own; Keras's BatchNormalization uses 0.99)",
    )
    parser.add_argument(
        "--pixels",
        action="store_true",
        help="read each image pixel by pixel (784 steps of 1) instead of row "
        "by row (28 steps of 28)",
    )
    parser.add_argument(
        "--permute",
        "--permuted",
        dest="permute",
        action="store_true",
        help="a fixed random permutation of the pixels (with --pixels: the "
        "paper's permuted pixel-by-pixel MNIST)",
    )
    parser.add_argument(
        "--population-batches",
        type=cli.positive_int,
        default=50,
        help="training batches to recompute the BN-LSTM's statistics on",
    )
    cli.add_run_arguments(parser)
    args = cli.parse(parser, argv)
    if args.batches is None:
        args.batches = PIXEL_BATCHES if args.pixels else ROW_BATCHES
    return args


def main(argv=None):
    args = parse_args(argv)
    startup.start(default_backend="jax")
    import json
    import os

    import keras
    import numpy as np

    import kbn
    from kbn.evaluation import Accuracy
    from kbn_study.training import comparison
    from kbn_study.training import runs

    schedule = cli.schedule(args)
    dataset = cli.load_data(args)
    steps, features = (784, 1) if args.pixels else (28, 28)
    order = np.arange(784)
    if args.permute:
        order = np.random.default_rng(12345).permutation(784)
    dataset = dataset.with_images(lambda x: x[:, order].reshape(-1, steps, features))
    name = ("permuted_" if args.permute else "") + ("pixels" if args.pixels else "rows")
    print(f"Sequences: {name}, {steps} steps of {features}")
    print(f"Backend: {keras.backend.backend()}")

    def build(batch_norm):
        def model():
            inputs = keras.Input((steps, features))
            if batch_norm:
                rnn = kbn.layers.BNLSTM(
                    args.units, steps, momentum=args.momentum, seed=args.seed
                )
            else:
                rnn = keras.layers.LSTM(
                    args.units,
                    kernel_initializer=keras.initializers.GlorotUniform(args.seed * 10),
                    recurrent_initializer=keras.initializers.Orthogonal(
                        seed=args.seed * 10 + 1
                    ),
                )
            return keras.Model(inputs, keras.layers.Dense(10)(rnn(inputs)))

        return model

    stem = f"sequential_{name}_units{args.units}_adam{args.learning_rate:g}"
    run_dir = os.path.join(args.log_dir, runs.run_name(stem, schedule, dataset.tag))
    result = comparison.compare_with_adam(
        {"lstm": build(False), "bn_lstm": build(True)},
        dataset,
        args.learning_rate,
        schedule,
        run_dir,
        title=(
            f"Sequential MNIST ({name}), {args.units} units, Adam "
            f"{args.learning_rate:g}, {args.batches:,} batches of {args.batch_size}"
        ),
        metadata={"args": vars(args)},
    )
    print()
    print(comparison.summary_text(result))

    # The moving averages lag behind statistics that drift while training;
    # the paper's Algorithm 2 recomputes them with the final weights.
    model = result.networks["bn_lstm"].model
    used = kbn.recompute_batch_norm_statistics(
        model,
        dataset.train.images,
        num_batches=args.population_batches,
        batch_size=args.batch_size,
    )
    population = {
        "batches": used,
        "validation_accuracy": Accuracy(
            model, dataset.validation.images, dataset.validation.labels
        )(),
        "test_accuracy": Accuracy(model, dataset.test.images, dataset.test.labels)(),
    }
    print(
        f"\nbn_lstm with population statistics recomputed on {used} training "
        f"batches: validation {population['validation_accuracy']:.4f}, test "
        f"{population['test_accuracy']:.4f}"
    )
    population["moving_validation_accuracy"] = result.networks[
        "bn_lstm"
    ].final_validation_accuracy
    population["gap_points"] = 100 * (
        population["validation_accuracy"] - population["moving_validation_accuracy"]
    )
    print(
        "Population minus moving statistics (validation): "
        f"{population['gap_points']:+.2f} points"
    )
    paper = PAPER.get(name, {})
    rows = []
    for network, run in result.networks.items():
        per_batch = run.wall_time / max(run.steps[-1], 1)
        rows.append(
            {
                "network": network,
                "test_accuracy": run.test_accuracy,
                "paper_test_accuracy": paper.get(network),
                "seconds_per_batch": per_batch,
                "batches_per_15_min": int(900 / per_batch),
            }
        )
    population["networks"] = rows
    print(
        f"\n{'network':>8} {'test':>7} {'paper':>7} {'s/batch':>8} {'per 15 min':>11}"
    )
    for row in rows:
        reported = row["paper_test_accuracy"]
        print(
            f"{row['network']:>8} {row['test_accuracy']:7.4f} "
            f"{'-' if reported is None else f'{reported:.3f}':>7} "
            f"{row['seconds_per_batch']:8.3f} {row['batches_per_15_min']:11,}"
        )
    print(
        "The paper (full MNIST, long training; its table): pixel by pixel LSTM "
        "0.989, BN-LSTM 0.990; permuted 0.902 and 0.954."
    )
    result.paths["population"] = os.path.join(run_dir, "population_statistics.json")
    with open(result.paths["population"], "w") as f:
        json.dump(population, f, indent=2)
    print(f"{'population':>13}: {result.paths['population']}")
    return result


if __name__ == "__main__":
    main()
