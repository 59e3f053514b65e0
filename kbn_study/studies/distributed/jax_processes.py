"""The study's batch-norm MLP trained by several JAX processes at once.

Holds `train`: one process's part of `recipes/distributed.py --strategy
jax-multiprocess` (the study's MLP, or with `--network convnet` its conv
net; every process runs it, each feeding its shard of every global batch;
process 0 writes), through the one training path
(`kbn_study.training.runs.train`) under `kbn.distributed.BlockDataParallel`;
and `check_same_data`. It must not parse arguments, start or end the
process (the command does: joining the processes and a failed process's
exit are process life, not training), nor anything of TensorFlow.
"""

import functools
import hashlib
import os

import keras
import numpy as np

import kbn
from kbn import distributed
from kbn_study.models import networks
from kbn_study.studies.distributed import schedule_and_kernels
from kbn_study.studies.distributed.collectives import CollectivesCounter
from kbn_study.studies.distributed.collectives import describe
from kbn_study.studies.distributed.throughput import Throughput
from kbn_study.training import comparison
from kbn_study.training import runs

STRATEGY = "jax-multiprocess"


class DifferentData(ValueError):
    """The processes of a run loaded different data."""


def check_same_data(dataset, index, count):
    """Raises `DifferentData` unless every process loaded the same data.

    A machine without Keras's MNIST cache falls back to the shipped subset:
    the processes would then feed shards of different datasets.
    """
    from jax.experimental import multihost_utils

    digest = hashlib.sha256(dataset.tag.encode()).digest()[:8]
    mine = np.frombuffer(digest, dtype="uint8")
    every = np.asarray(multihost_utils.process_allgather(mine))
    if not (every == every[0]).all():
        raise DifferentData(
            f"process {index} of {count}: the processes loaded different data "
            f"(this one: {dataset.tag}). Expected the same data everywhere: "
            "pass the same --data file to every process"
        )


def train(args, dataset, index, count):
    """This process's part of the run; returns its `ComparisonResult`.

    Args:
        args: The command's parsed arguments (`--network mlp`: the study's
            BN MLP, SGD; `convnet`: the study's conv net with batch norm,
            Adam).
        dataset: `kbn_study.data.mnist.Dataset`, the same on every process.
        index, count: This process's index and the number of processes
            (`kbn.distributed.initialize_jax_processes` has joined them).
    """
    chief = index == 0

    def say(*lines):
        if chief:
            print(*lines, sep="\n", flush=True)

    if count > 1:
        keras.distribution.set_distribution(distributed.BlockDataParallel())
    schedule, kernels = schedule_and_kernels(args)
    devices = keras.distribution.list_devices()
    say(
        f"Strategy: {STRATEGY}, {count} process(es), {len(devices)} device(s), "
        f"global batch {args.global_batch_size} = {count} x "
        f"{args.global_batch_size // count}, batch norm on the global batch"
    )
    if args.network == "convnet":
        dataset = dataset.with_images(lambda images: images.reshape(-1, 28, 28, 1))
        build = functools.partial(
            networks.build_convnet, batch_norm=True, seed=args.seed
        )
        optimizer = functools.partial(keras.optimizers.Adam, args.learning_rate)
        stem = f"distributed_jax{count}proc_convnet_adam{args.learning_rate:g}"
        title = f"Conv net with BN, {STRATEGY}, {count} process(es)"
    else:
        build = functools.partial(
            networks.build_mlp, kernels, args.activation, kbn.layers.BatchNorm
        )
        optimizer = functools.partial(keras.optimizers.SGD, args.learning_rate)
        stem = (
            f"distributed_jax{count}proc_{args.activation}_"
            f"lr{args.learning_rate:g}_{args.weights}"
        )
        title = f"BN MLP, {STRATEGY}, {count} process(es)"
    run_dir = os.path.join(args.log_dir, runs.run_name(stem, schedule, dataset.tag))
    throughput = Throughput(schedule.sample_interval, report=chief)
    per_step = schedule.resolved_batches_per_step
    counter = CollectivesCounter(per_step, args.global_batch_size)
    # Every process runs every callback (their passes are collective); only
    # process 0 writes (kbn.distributed.is_writer).
    network = runs.train(
        dataset,
        runs.NetworkRun(
            name="with_bn",
            build=build,
            optimizer=optimizer,
            schedule=schedule,
            log_dir=os.path.join(run_dir, "with_bn"),
            callbacks=lambda log_dir: [throughput, counter],
        ),
    )
    result = comparison.finish(
        {"with_bn": network},
        dataset,
        run_dir if chief else None,
        title=title,
        metadata={
            "args": vars(args),
            "processes": count,
            "devices": len(devices),
            "throughput_batches_per_s": throughput.rate,
            "all_reduced_per_batch": counter.counts["per_batch"],
            "all_reduced_per_call": counter.counts["per_call"],
        },
    )
    say(
        f"Throughput: {throughput.rate:,.1f} batches/s after the first "
        f"{throughput.first:,} batches (compilation excluded)",
        f"All-reduced per batch: {describe(counter.counts, per_step)}",
        "",
        comparison.summary_text(result),
    )
    # Process 0 writes while the others wait here: nobody exits first.
    distributed.barrier("kbn-distributed-end")
    return result
