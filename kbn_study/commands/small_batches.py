"""Batch norm, batch renorm and no normalization under i.i.d. batches,
micro-batches and non-i.i.d. batches (Ioffe 2017), over several seeds.

The entry point of `recipes/small_batches.py` (see its docstring), also
`python -m kbn_study.commands.small_batches` and `kbn-small-batches`.

It parses, starts the process and calls the study; it must not hold training
logic.
"""

import argparse

from kbn_study import cli
from kbn_study import startup

DEFAULTS = {
    # model: (batches, learning rate, optimizer)
    "mlp": (2_000, 0.1, "SGD"),
    "convnet": (400, 0.002, "Adam"),
}


def micro_batch_sizes(text):
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        sizes = []
    if not sizes or any(s < 1 or 60 % s for s in sizes) or len(set(sizes)) < len(sizes):
        raise argparse.ArgumentTypeError(
            "expected distinct divisors of the batch size 60, comma-separated, "
            f"such as 2,4. Received: {text!r}"
        )
    return sizes


def parse_args(argv=None):
    parser = cli.ArgumentParser(__doc__)
    parser.add_argument(
        "--model",
        choices=["mlp", "convnet"],
        default="mlp",
        help="the study's ReLU MLP (784-100-100-100-10, good weights) or its "
        "conv net (3x3 convolutions, see --depth)",
    )
    parser.add_argument(
        "--batches",
        type=cli.positive_int,
        default=None,
        help="training batches of 60 per run (default: 2,000 for the MLP, 400 "
        "for the conv net)",
    )
    parser.add_argument(
        "--batches-per-sample",
        type=cli.positive_int,
        default=None,
        help="validation sampling interval (default: a twentieth of --batches)",
    )
    parser.add_argument(
        "--learning-rate",
        type=cli.positive_float,
        default=None,
        help="SGD's learning rate for the MLP, Adam's for the conv net "
        "(default: 0.1 and 0.002)",
    )
    parser.add_argument(
        "--seeds",
        type=cli.positive_int,
        default=3,
        help="seeds per cell (initial weights and batch order)",
    )
    parser.add_argument(
        "--micro-batches",
        type=micro_batch_sizes,
        default=[2, 4],
        help="ghost-batch sizes of the micro-batch regimes, comma-separated "
        "(default: 2,4)",
    )
    parser.add_argument(
        "--classes-per-batch",
        type=cli.positive_int,
        default=2,
        help="classes of each non-i.i.d. batch (an equal share of the 60 each; "
        "a divisor of 60)",
    )
    parser.add_argument(
        "--depth",
        type=cli.positive_int,
        default=6,
        help="3x3 convolutions of the conv net",
    )
    cli.add_log_dir_argument(parser)
    cli.add_data_arguments(parser)
    args = cli.parse(parser, argv)
    if 60 % args.classes_per_batch or args.classes_per_batch > 10:
        parser.error(
            "argument --classes-per-batch: expected a divisor of the batch size "
            f"60, at most 10 classes. Received: {args.classes_per_batch}"
        )
    batches, rate, _ = DEFAULTS[args.model]
    args.batches = args.batches or batches
    args.learning_rate = args.learning_rate or rate
    args.batches_per_sample = args.batches_per_sample or max(1, args.batches // 20)
    return args


def main(argv=None):
    args = parse_args(argv)
    # The conv net trains 3-4x faster on TensorFlow's CPU convolutions.
    startup.start(default_backend="tensorflow" if args.model == "convnet" else "jax")
    import functools
    import os
    import time

    import keras

    from kbn_study.models import networks
    from kbn_study.studies import small_batches as sb
    from kbn_study.training import runs

    dataset = cli.load_data(args, flatten=args.model == "mlp")
    if args.model == "convnet":
        dataset = dataset.with_images(lambda images: images[..., None])
    batch_size = 60
    regime_names = sb.regimes(args.micro_batches)
    labels = {
        r: sb.regime_label(r, args.classes_per_batch, batch_size) for r in regime_names
    }
    stem = f"small_batches_{args.model}"
    if args.model == "convnet":
        stem += f"_depth{args.depth}"
    optimizer_name = DEFAULTS[args.model][2]
    stem += f"_{optimizer_name.lower()}{args.learning_rate:g}"
    schedule0 = runs.Schedule(
        batches=args.batches,
        batches_per_sample=args.batches_per_sample,
        batch_size=batch_size,
    )
    run_dir = os.path.join(
        args.log_dir,
        f"{stem}_{args.batches}x{batch_size}_sample{args.batches_per_sample}_"
        f"seeds{args.seeds}_micro{'-'.join(map(str, args.micro_batches))}_"
        f"classes{args.classes_per_batch}_{dataset.tag}",
    )
    cells = [
        sb.Cell(normalization, regime, seed)
        for seed in range(args.seeds)
        for regime in regime_names
        for normalization in sb.NORMALIZATIONS
    ]
    trained = [
        c
        for c in cells
        if not (c.normalization == "none" and c.regime.startswith("micro"))
    ]
    print(
        f"Backend: {keras.backend.backend()}; run: {run_dir}\n"
        f"{len(cells)} cells, {len(trained)} trained runs of {args.batches:,} "
        f"batches of {batch_size} ({args.model}, {optimizer_name} "
        f"{args.learning_rate:g}); without normalization the micro-batch cells "
        "are the i.i.d. runs (no batch statistics to change)"
    )

    def build(cell):
        factory = sb.normalization_factory(cell.normalization, cell.regime)
        if args.model == "mlp":
            kernels = networks.initial_weights(seed=cell.seed)
            return networks.build_mlp(kernels, "relu", factory)
        return networks.build_convnet(
            depth=args.depth, batch_norm=factory, seed=cell.seed
        )

    def optimizer():
        return getattr(keras.optimizers, optimizer_name)(args.learning_rate)

    rows, curves, done = [], [], {}
    start = time.perf_counter()
    for index, cell in enumerate(trained, start=1):
        schedule = runs.Schedule(
            batches=schedule0.batches,
            batches_per_sample=schedule0.batches_per_sample,
            batch_size=batch_size,
            seed=cell.seed,
        )
        blocks = None
        if cell.regime == "noniid":
            blocks = functools.partial(
                sb.class_batches, dataset.train.labels, batch_size,
                args.classes_per_batch, schedule.resolved_batches_per_step,
                cell.seed,
            )  # fmt: skip
        callbacks = None
        if cell.normalization == "renorm":
            callbacks = functools.partial(_renorm_callbacks, schedule.batches)
        result = runs.train(
            dataset,
            runs.NetworkRun(
                name=cell.name,
                build=functools.partial(build, cell),
                optimizer=optimizer,
                schedule=schedule,
                log_dir=os.path.join(
                    run_dir, cell.regime, f"{cell.normalization}_seed{cell.seed}"
                ),
                callbacks=callbacks,
                blocks=blocks,
                batch_norm_statistics=False,
                verbose=False,
            ),
        )
        population = sb.population_test_accuracy(result.model, dataset, cell.seed)
        done[cell] = (result, population)
        print(
            f"[{index}/{len(trained)}] {cell.name:<22} test accuracy "
            f"{population:.4f} (moving averages {result.test_accuracy:.4f}), "
            f"{result.wall_time:.1f} s"
        )
    for cell in cells:
        source = cell
        if cell not in done:
            source = sb.Cell("none", "iid", cell.seed)
        result, population = done[source]
        rows.append(
            {
                "model": args.model,
                "normalization": cell.normalization,
                "regime": cell.regime,
                "seed": cell.seed,
                "test_accuracy_population": population,
                "test_accuracy_moving": result.test_accuracy,
                "final_validation_accuracy": result.final_validation_accuracy,
                "diverged": result.diverged,
                "wall_time_s": result.wall_time,
                "same_as": "" if source == cell else source.name,
            }
        )
        curves.append(
            sb.frame(
                {
                    "normalization": cell.normalization,
                    "regime": cell.regime,
                    "seed": cell.seed,
                    "step": result.steps,
                    "validation_accuracy": result.accuracies,
                }
            )
        )
    import pandas as pd

    title = (
        f"{args.model.upper() if args.model == 'mlp' else 'Conv net'}, "
        f"{optimizer_name} {args.learning_rate:g}, {args.batches:,} batches of "
        f"{batch_size}, {dataset.name}"
    )
    summary, paths = sb.write(
        sb.frame(rows), pd.concat(curves, ignore_index=True), run_dir,
        regime_names, labels, title,
    )  # fmt: skip
    print(f"\nTotal {time.perf_counter() - start:.0f} s. {title}")
    print("Test accuracy with population statistics, mean ± std over seeds:\n")
    print(sb.markdown_table(summary, regime_names, labels))
    print()
    for line in sb.claims(summary, regime_names):
        print(f"- {line}")
    print("\nWith the moving averages kept in training instead:\n")
    print(sb.markdown_table(summary, regime_names, labels, "moving"))
    print()
    for line in sb.claims(summary, regime_names, "moving"):
        print(f"- {line}")
    print()
    for name, path in paths.items():
        print(f"{name:>18}: {path}")
    print(f"{'tensorboard':>18}: {run_dir}")
    print(f"\nData source: {dataset.source}")
    return summary


def _renorm_callbacks(batches, log_dir):
    from kbn_study.studies import small_batches as sb

    return [sb.renorm_schedule(batches)]


if __name__ == "__main__":
    main()
