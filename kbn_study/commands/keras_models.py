"""Train a network built with Keras's batch norm (a small ResNet, or
keras.applications' MobileNetV2) on MNIST as it is and converted to kbn's (as is,
ghost batches, renorm, population statistics), from the same weights.

The entry point of `recipes/keras_models.py` (see its docstring), also
`python -m kbn_study.commands.keras_models` and `kbn-keras-models`.

It parses, starts the process and calls the study; it must not hold training
logic.
"""

from kbn_study import cli
from kbn_study.studies.keras_models import NETWORKS
from kbn_study.studies.keras_models import VARIANTS


def variant_list(text):
    """`--variants`: a comma-separated list of `VARIANTS`, in their order."""
    import argparse

    asked = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [v for v in asked if v not in VARIANTS]
    if unknown or not asked:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated list of {', '.join(VARIANTS)}. "
            f"Received: {text!r}"
        )
    return [v for v in VARIANTS if v in asked]


def parse_args(argv=None):
    parser = cli.ArgumentParser(__doc__)
    parser.add_argument(
        "--variants",
        type=variant_list,
        default=",".join(VARIANTS),
        help="comma-separated: " + ", ".join(VARIANTS),
    )
    parser.add_argument(
        "--network",
        choices=NETWORKS,
        default="resnet",
        help="resnet: 3 residual blocks of 16, 32, 64 filters, 8 batch norms; "
        "mobilenet_v2: keras.applications' (alpha 0.35, digits padded to "
        "32x32), 52 batch norms, about 20x the time",
    )
    parser.add_argument(
        "--ghost-batch-size",
        type=cli.positive_int,
        default=8,
        help="kbn_ghost's virtual batch size, a divisor of --batch-size",
    )
    cli.add_schedule_arguments(
        parser, batches=200, batch_size=32, batches_per_sample=50
    )
    parser.add_argument(
        "--learning-rate",
        type=cli.positive_float,
        default=0.001,
        help="Adam's learning rate",
    )
    cli.add_run_arguments(parser)
    cli.add_sweep_arguments(parser, ray=False)
    args = cli.parse(parser, argv)
    if args.batch_size % args.ghost_batch_size or (
        args.ghost_batch_size == args.batch_size and "kbn_ghost" in args.variants
    ):
        parser.error(
            "argument --ghost-batch-size: expected a divisor of --batch-size "
            f"({args.batch_size}) smaller than it. Received: {args.ghost_batch_size}"
        )
    if args.batches % args.batches_per_sample:
        parser.error(
            "argument --batches: expected a multiple of --batches-per-sample "
            f"({args.batches_per_sample}). Received: {args.batches}"
        )
    return args


def main(argv=None):
    args = parse_args(argv)
    from kbn_study import startup

    # On the 2-core development CPU, TensorFlow's convolutions ran
    # MobileNetV2 about 4x faster than JAX's (0.21 s against 0.81 s a batch
    # of 64), and JAX the small ResNet 1.6x faster than TensorFlow (0.11 s
    # against 0.17 s a batch of 32); KERAS_BACKEND chooses otherwise.
    startup.start(
        default_backend="tensorflow" if args.network == "mobilenet_v2" else "jax"
    )
    import os

    import keras

    from kbn_study.studies import keras_models
    from kbn_study.training import comparison
    from kbn_study.training import runs

    schedule = cli.schedule(args)
    dataset = cli.load_data(args, flatten=False)
    dataset = dataset.with_images(lambda images: images[..., None])
    print(f"Backend: {keras.backend.backend()}")
    stem = f"{args.network}_adam{args.learning_rate:g}"
    run_dir = os.path.join(args.log_dir, runs.run_name(stem, schedule, dataset.tag))
    result = comparison.compare_with_adam(
        keras_models.builders(args.variants, args.network, args.ghost_batch_size),
        dataset,
        args.learning_rate,
        schedule,
        run_dir,
        title=(
            f"{args.network} built with Keras's batch norm, Adam "
            f"{args.learning_rate:g}, {args.batches:,} batches of {args.batch_size}"
        ),
        metadata={"args": vars(args)},
        executor=cli.sweep_executor(args),
        # MobileNetV2's 52 batch norms' histograms every sample would cost
        # more than its training; TensorBoard gets its curves and loss.
        batch_norm_statistics=args.network == "resnet",
    )
    print()
    print(comparison.summary_text(result))
    return result


if __name__ == "__main__":
    main()
