"""The study's batch-norm MLP trained on `tf.distribute` (TensorFlow backend).

Holds `strategy_of` and `train`: the run of `recipes/distributed.py
--strategy none|mirrored|multiworker`, a custom loop (`tf_loop`) driving
kbn's callbacks, finished like every other run (`kbn_study.training`). It
must not parse arguments or start the process (the command does), nor
anything of JAX (`jax_processes`).
"""

import functools
import os
import time

import keras

import kbn
from kbn import distributed
from kbn_study.data import mnist
from kbn_study.models import networks
from kbn_study.studies.distributed import schedule_and_kernels
from kbn_study.studies.distributed import tf_loop
from kbn_study.training import comparison
from kbn_study.training import runs


def strategy_of(args):
    """`(strategy, per-replica batch)` of the command's arguments; raises a
    `ValueError` naming what is wrong (no TF_CONFIG, a batch the replicas
    do not divide)."""
    strategy = distributed.make_strategy(args.strategy)
    return strategy, distributed.replica_batch_size(args.global_batch_size, strategy)


def train(args, strategy, per_replica, dataset):
    """Trains the BN MLP on `strategy` (None: one device) and writes its run.

    Args:
        args: The command's parsed arguments.
        strategy, per_replica: From `strategy_of`.
        dataset: `kbn_study.data.mnist.Dataset`.

    Returns:
        The run's `kbn_study.training.comparison.ComparisonResult`; only
        the chief (worker 0, or the only worker) writes files.
    """
    import tensorflow as tf

    schedule, kernels = schedule_and_kernels(args)
    replicas = 1 if strategy is None else strategy.num_replicas_in_sync
    print(
        f"Strategy: {args.strategy}, {replicas} replica(s), global batch "
        f"{args.global_batch_size} = {replicas} x {per_replica}, batch norm "
        f"{'un' if args.unsynchronized else ''}synchronized"
    )
    norm = functools.partial(kbn.layers.BatchNorm, synchronized=not args.unsynchronized)
    strategy = strategy or tf.distribute.get_strategy()  # "none": one device
    with strategy.scope():
        model = networks.build_mlp(kernels, args.activation, batch_norm=norm)
    step = tf_loop.sgd_train_step(
        strategy, model, args.learning_rate, args.global_batch_size
    )
    batches = tf_loop.distribute_global_batches(
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
    # MultiWorkerMirroredStrategy (see tf_loop).
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
    return comparison.finish(
        {"with_bn": network},
        dataset,
        run_dir,
        title=f"BN MLP, {args.strategy}, {replicas} replica(s)",
        metadata={"args": vars(args), "replicas": replicas},
    )
