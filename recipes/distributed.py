"""The study's BN MLP trained data-parallel on tf.distribute.

Each global batch of 60 images is split across the replicas; with
synchronized batch norm (the default here) every replica normalizes with the
statistics of the whole global batch, so the run is the single-device run,
computed in parallel.

    python recipes/distributed.py --strategy mirrored --devices 2
    python recipes/distributed.py --strategy mirrored --devices 2 --unsynchronized
    # several machines: the same command on each, with its own TF_CONFIG
    TF_CONFIG='{"cluster": {"worker": ["host1:12345", "host2:12345"]},
                "task": {"type": "worker", "index": 0}}' \\
        python recipes/distributed.py --strategy multiworker

`--devices` splits this machine's CPU into logical devices, so a mirrored
run works without accelerators. Worker 0 writes
`logs/distributed_<strategy>_<batches>_seed<seed>/`; other workers write
nothing. TensorFlow backend only.
"""

import os

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse
import functools
import time

from kbn import cli
from kbn import distributed


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--strategy", choices=distributed.STRATEGIES, default="mirrored"
    )
    parser.add_argument(
        "--devices", type=cli.positive_int, default=2, help="logical CPUs (mirrored)"
    )
    parser.add_argument("--unsynchronized", action="store_true")
    parser.add_argument("--global-batch-size", type=cli.positive_int, default=60)
    parser.add_argument("--batches", type=cli.positive_int, default=2_000)
    parser.add_argument("--batches-per-sample", type=cli.positive_int, default=50)
    parser.add_argument("--activation", choices=["relu", "sigmoid"], default="relu")
    parser.add_argument("--learning-rate", type=cli.positive_float, default=0.01)
    parser.add_argument("--weights", choices=["good", "bad"], default="good")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-dir", default="logs")
    parser.add_argument("--data", default=None, help="mnist.npz or IDX folder")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.strategy == "mirrored" and args.devices > 1:
        distributed.use_logical_cpus(args.devices)

    import keras
    import tensorflow as tf

    import kbn
    from kbn import fitting
    from kbn import models
    from kbn.experiment import WEIGHT_SCALES

    with cli.bad_input_exits():
        strategy = distributed.make_strategy(args.strategy)
        per_replica = distributed.replica_batch_size(args.global_batch_size, strategy)
        # Validates the lengths with the same messages as the other recipes.
        fitting.Schedule(
            batches=args.batches,
            batches_per_sample=args.batches_per_sample,
            batch_size=args.global_batch_size,
            seed=args.seed,
        )
        dataset = kbn.load_mnist(args.data)
    replicas = 1 if strategy is None else strategy.num_replicas_in_sync
    print(f"Data: {dataset.describe()}")
    print(
        f"Strategy: {args.strategy}, {replicas} replica(s), global batch "
        f"{args.global_batch_size} = {replicas} x {per_replica}, batch norm "
        f"{'un' if args.unsynchronized else ''}synchronized"
    )

    kernels = models.initial_weights(scale=WEIGHT_SCALES[args.weights], seed=args.seed)
    norm = functools.partial(kbn.layers.BatchNorm, synchronized=not args.unsynchronized)
    strategy = strategy or tf.distribute.get_strategy()  # "none": one device
    with strategy.scope():
        model = models.build_mlp(kernels, args.activation, batch_norm=norm)
    step = distributed.sgd_train_step(
        strategy, model, args.learning_rate, args.global_batch_size
    )
    batches = distributed.distribute_global_batches(
        strategy,
        lambda: kbn.data.training_batches(
            dataset.train.images,
            dataset.train.labels,
            args.global_batch_size,
            args.seed,
        ),
        args.global_batch_size,
        image_shape=(784,),
    )

    name = f"distributed_{args.strategy}_{args.batches}_seed{args.seed}"
    chief = distributed.is_chief()
    run_dir = os.path.join(args.log_dir, name) if chief else None
    recorder = kbn.callbacks.ValidationAccuracyRecorder(
        (dataset.validation.images, dataset.validation.labels),
        every_n_batches=args.batches_per_sample,
        log_dir=None if run_dir is None else os.path.join(run_dir, "with_bn"),
    )
    callbacks = [recorder]
    if chief:
        callbacks.append(kbn.callbacks.TrainingProgress(args.batches, label="with_bn:"))
    # kbn's callbacks, driven by a custom loop (see distribute_global_batches).
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
    from kbn.inference import Accuracy

    result = fitting.ComparisonResult(
        {
            "with_bn": fitting.NetworkResult(
                name="with_bn",
                steps=recorder.steps,
                accuracies=recorder.accuracies,
                losses=recorder.losses,
                final_validation_accuracy=recorder.accuracies[-1],
                test_accuracy=Accuracy(
                    model, dataset.test.images, dataset.test.labels
                )(),
                diverged=not all(x == x for x in recorder.losses),
                wall_time=wall,
                model=model,
            )
        },
        dataset.source,
        title=f"BN MLP, {args.strategy}, {replicas} replica(s)",
    )
    print()
    columns = ["network", "final_validation_accuracy", "test_accuracy"]
    print(result.summary()[columns].to_string(index=False))
    if chief:
        metadata = {
            "args": vars(args),
            "replicas": replicas,
            "data_source": dataset.source,
        }
        result.paths = fitting.write_comparison(result, run_dir, metadata)
        for key, path in result.paths.items():
            print(f"{key:>13}: {path}")
    return result


if __name__ == "__main__":
    main()
