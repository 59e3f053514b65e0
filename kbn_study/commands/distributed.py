"""Train the study's batch-norm MLP data-parallel on tf.distribute, with synchronized
statistics.

The entry point of `recipes/distributed.py` (see its docstring), also
`python -m kbn_study.commands.distributed` and `kbn-distributed`.
"""

from kbn_study import cli

STRATEGIES = ("none", "mirrored", "multiworker")


def parse_args(argv=None):
    parser = cli.ArgumentParser(__doc__)
    parser.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default="mirrored",
        help="none: one device; mirrored: the local devices; multiworker: the "
        "cluster in TF_CONFIG",
    )
    parser.add_argument(
        "--devices",
        type=cli.positive_int,
        default=2,
        help="logical CPU devices to split this machine into (mirrored)",
    )
    parser.add_argument(
        "--unsynchronized",
        action="store_true",
        help="each replica normalizes with its own slice's statistics",
    )
    parser.add_argument(
        "--global-batch-size",
        type=cli.positive_int,
        default=60,
        help="images per global batch, split across the replicas",
    )
    parser.add_argument(
        "--batches", type=cli.positive_int, default=2_000, help="training batches"
    )
    parser.add_argument(
        "--batches-per-sample",
        type=cli.positive_int,
        default=50,
        help="validation sampling interval",
    )
    cli.add_mlp_arguments(parser)
    cli.add_run_arguments(parser)
    args = cli.parse(parser, argv)
    replicas = {"none": 1, "mirrored": args.devices}.get(args.strategy)
    if replicas and args.global_batch_size % replicas:
        parser.error(
            f"argument --global-batch-size: the global batch cannot be split "
            f"evenly across {replicas} replicas. Expected a multiple of "
            f"{replicas}. Received: global_batch_size={args.global_batch_size}"
        )
    cli.check_paths(
        parser, outputs={"--log-dir": args.log_dir}, inputs={"--data": args.data}
    )
    return args


def main(argv=None):
    args = parse_args(argv)
    import os

    os.environ["KERAS_BACKEND"] = "tensorflow"  # tf.distribute only
    cli.start(default_backend="tensorflow")
    from kbn import distributed

    if args.strategy == "mirrored" and args.devices > 1:
        distributed.use_logical_cpus(args.devices)

    import functools
    import time

    import keras
    import tensorflow as tf

    import kbn
    from kbn_study import comparison
    from kbn_study import experiment
    from kbn_study import mnist
    from kbn_study import networks
    from kbn_study import runs

    with cli.bad_input_exits(status=2):
        strategy = distributed.make_strategy(args.strategy)
        per_replica = distributed.replica_batch_size(args.global_batch_size, strategy)
    schedule = runs.Schedule(
        batches=args.batches,
        batches_per_sample=args.batches_per_sample,
        batch_size=args.global_batch_size,
        seed=args.seed,
    )
    dataset = cli.load_data(args)
    replicas = 1 if strategy is None else strategy.num_replicas_in_sync
    print(
        f"Strategy: {args.strategy}, {replicas} replica(s), global batch "
        f"{args.global_batch_size} = {replicas} x {per_replica}, batch norm "
        f"{'un' if args.unsynchronized else ''}synchronized"
    )

    kernels = networks.initial_weights(
        scale=experiment.WEIGHT_SCALES[args.weights], seed=args.seed
    )
    norm = functools.partial(kbn.layers.BatchNorm, synchronized=not args.unsynchronized)
    strategy = strategy or tf.distribute.get_strategy()  # "none": one device
    with strategy.scope():
        model = networks.build_mlp(kernels, args.activation, batch_norm=norm)
    step = distributed.sgd_train_step(
        strategy, model, args.learning_rate, args.global_batch_size
    )
    batches = distributed.distribute_global_batches(
        strategy,
        lambda: mnist.training_batches(
            dataset.train.images,
            dataset.train.labels,
            args.global_batch_size,
            args.seed,
        ),
        args.global_batch_size,
        image_shape=(784,),
    )

    stem = (
        f"distributed_{args.strategy}"
        f"{'_unsynchronized' if args.unsynchronized else ''}_{args.activation}_"
        f"lr{args.learning_rate:g}_{args.weights}"
    )
    chief = distributed.is_chief()
    run_dir = (
        os.path.join(args.log_dir, runs.run_name(stem, schedule, dataset.tag))
        if chief
        else None
    )
    recorder = kbn.callbacks.ValidationAccuracyRecorder(
        (dataset.validation.images, dataset.validation.labels),
        every_n_batches=args.batches_per_sample,
        log_dir=None if run_dir is None else os.path.join(run_dir, "with_bn"),
    )
    callbacks = [recorder]
    if chief:
        callbacks.append(kbn.callbacks.TrainingProgress(args.batches, label="with_bn:"))
    # kbn's callbacks, driven by a custom loop: Keras 3's fit cannot run under
    # MultiWorkerMirroredStrategy (see kbn.distributed).
    callbacks = keras.callbacks.CallbackList(callbacks, model=model)
    iterator = iter(batches)
    start = time.perf_counter()
    callbacks.on_train_begin()
    for batch in range(args.batches):
        callbacks.on_train_batch_begin(batch)
        loss = step(iterator)
        callbacks.on_train_batch_end(batch, {"loss": loss})
    callbacks.on_train_end({"loss": loss})
    wall = time.perf_counter() - start

    network = runs.network_result("with_bn", recorder, model, dataset, wall)
    result = comparison.ComparisonResult(
        {"with_bn": network},
        dataset.source,
        title=f"BN MLP, {args.strategy}, {replicas} replica(s)",
    )
    if chief:
        metadata = {
            "args": vars(args),
            "replicas": replicas,
            **comparison.circumstances(dataset),
        }
        result.paths = comparison.write_comparison(result, run_dir, metadata)
    print()
    print(comparison.summary_text(result))
    return result


if __name__ == "__main__":
    main()
