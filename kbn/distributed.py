"""Data-parallel training on several devices, processes or machines.

Two engines: TensorFlow's `tf.distribute` (the TensorFlow backend) and
JAX's multi-process runtime (`jax.distributed`, the JAX backend).

TensorFlow: with `kbn.layers.BatchNorm(synchronized=True)` under a `MirroredStrategy`
(several devices of one machine) or a `MultiWorkerMirroredStrategy`
(several machines, one `TF_CONFIG` each), every replica normalizes with the
statistics of the *global* batch (sums, sums of squares and counts are
all-reduced), so outputs, gradients and moving statistics equal those of one
device on the whole batch. Unsynchronized, each replica normalizes with the
statistics of its own slice: noisier, and different from single-device
training as soon as the slices differ.

JAX: a batch sharded by `keras.distribution.DataParallel` is one global
array: its moments are global by construction, synchronized or not. That
holds across processes too: `initialize_jax_processes` joins N processes
(one per machine, or several on one), after which `jax.devices()` lists the
devices of all of them; under a `BlockDataParallel` distribution, `fit`
assembles every global batch from the shard each process feeds
(`process_shards`), and XLA all-reduces the gradients and the batch-norm
moments. Every process ends with the same weights and moving statistics,
those of one process trained on the same global batches. kbn's callbacks
compute on every process (their inference passes are collective) and
write only on process 0 (`is_writer`).

Failures under JAX (measured on one machine, two processes over
127.0.0.1, see the README): a process that dies closes its connections,
so the next all-reduce of the others fails at once with a `JaxRuntimeError`
("Gloo all-reduce failed: ... Connection closed by peer"); a process that
stops answering without closing them (frozen, network cut) is declared dead
after `heartbeat_timeout` seconds, and JAX's runtime then aborts the others
with "The following tasks are unhealthy (stopped sending heartbeats)"; a
process that cannot reach the coordinator gives up after
`initialization_timeout` seconds. A process that raises must not exit
normally: JAX's exit handler would wait at its shutdown barrier for the
others, which wait in their next collective for it. Print the error and
end it with `os._exit(1)` (as `recipes/distributed.py` does); the others
then stop at once.
"""

import json
import os
import socket
import time

import keras

from kbn import checks

STRATEGIES = ("none", "mirrored", "multiworker")


def use_logical_cpus(count):
    """Splits the CPU into `count` logical devices (before TF starts).

    Lets one machine without accelerators run a `MirroredStrategy` over
    several replicas. Must run before TensorFlow initializes its devices.
    """
    import tensorflow as tf

    if count < 1:
        raise ValueError(f"Expected at least one device. Received: count={count}")
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * count
        )
    except RuntimeError as error:
        raise RuntimeError(
            "use_logical_cpus must run before TensorFlow initializes its "
            f"devices. Received: count={count} after initialization ({error})"
        ) from error


def make_strategy(name, devices=None):
    """A `tf.distribute` strategy by name, or None for `"none"`.

    Args:
        name: `"none"`, `"mirrored"` (the local devices, or `devices`) or
            `"multiworker"` (the cluster in `TF_CONFIG`).
        devices: Optional device names for `"mirrored"`.
    """
    if name not in STRATEGIES:
        raise ValueError(
            f"Invalid value for argument strategy. Expected one of {STRATEGIES}. "
            f"Received: strategy={name!r}"
        )
    if name == "none":
        return None
    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            "tf.distribute strategies need the TensorFlow backend. Received: "
            f"strategy={name!r} with KERAS_BACKEND={keras.backend.backend()!r}"
        )
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices)
    if "TF_CONFIG" not in os.environ:
        raise ValueError(
            "strategy='multiworker' needs TF_CONFIG describing the cluster and "
            "this worker's index. Received: no TF_CONFIG in the environment"
        )
    json.loads(os.environ["TF_CONFIG"])  # a clear error if it is not JSON
    return tf.distribute.MultiWorkerMirroredStrategy()


def replica_batch_size(global_batch_size, strategy):
    """The per-replica batch; raises unless the replicas divide the batch."""
    replicas = 1 if strategy is None else strategy.num_replicas_in_sync
    if global_batch_size % replicas:
        raise ValueError(
            f"The global batch of {global_batch_size} cannot be split evenly "
            f"across {replicas} replicas. Expected a multiple of {replicas}. "
            f"Received: global_batch_size={global_batch_size}"
        )
    return global_batch_size // replicas


def is_chief():
    """Whether this process writes results (worker 0, or no cluster).

    On JAX, process 0 of `jax.distributed` (the only process when it is not
    initialized); otherwise worker 0 (or the chief) of `TF_CONFIG`.
    """
    if keras.backend.backend() == "jax":
        return process_index() == 0
    config = json.loads(os.environ.get("TF_CONFIG", "{}"))
    task = config.get("task", {})
    return (
        task.get("type", "worker") in ("chief", "worker") and task.get("index", 0) == 0
    )


def process_index():
    """This process's index among the JAX processes (0 with one process)."""
    if keras.backend.backend() != "jax":
        return 0
    import jax

    return jax.process_index()


def process_count():
    """How many JAX processes train together (1 unless `jax.distributed`)."""
    if keras.backend.backend() != "jax":
        return 1
    import jax

    return jax.process_count()


def is_writer():
    """Whether this process writes logs and files: process 0 under JAX.

    kbn's callbacks run on every process of a multi-process JAX run (their
    inference passes are collective computations, which every process must
    run) and write their TensorBoard events and progress lines only where
    this is true. Under `tf.distribute` every worker writes what it is
    given; recipes give a folder to the chief only.
    """
    return process_index() == 0


# Timeouts of a multi-process JAX run, in seconds (see
# `initialize_jax_processes`).
INITIALIZATION_TIMEOUT = 60
HEARTBEAT_TIMEOUT = 30
SHUTDOWN_TIMEOUT = 300


def parse_address(address):
    """`(host, port)` of `"HOST:PORT"`; raises a ValueError naming it."""
    host, _, port = str(address).rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(
            "Invalid value for argument coordinator. Expected HOST:PORT, such "
            f"as 10.0.0.1:12345. Received: coordinator={address!r}"
        )
    return host.strip("[]"), int(port)


def initialize_jax_processes(
    coordinator,
    num_processes,
    process_id,
    initialization_timeout=INITIALIZATION_TIMEOUT,
    heartbeat_timeout=HEARTBEAT_TIMEOUT,
    shutdown_timeout=SHUTDOWN_TIMEOUT,
):
    """Joins `num_processes` JAX processes; call before any JAX computation.

    Process 0 runs the coordinator at `coordinator` ("HOST:PORT", an
    address of process 0's machine that every process can reach); the
    others connect to it. On CPUs the processes all-reduce over TCP with
    Gloo. Afterwards `jax.devices()` lists the devices of every process.

    Args:
        coordinator: "HOST:PORT" of process 0.
        num_processes: How many processes train together.
        process_id: This process's index, `0 <= process_id < num_processes`.
        initialization_timeout: Seconds to wait for every process to join.
            A process other than 0 that cannot open a connection to the
            coordinator in that time raises a `TimeoutError`; one that
            connects but whose peers do not all join is ended by JAX's
            runtime ("DEADLINE_EXCEEDED ... RegisterTask").
        heartbeat_timeout: Seconds without a heartbeat after which a
            process is declared dead and JAX's runtime ends the others.
        shutdown_timeout: Seconds that a finished process waits at exit for
            the others to finish too.
    """
    host, port = parse_address(coordinator)
    checks.check_int(num_processes, "num_processes")
    checks.check_int(process_id, "process_id", minimum=0, maximum=num_processes - 1)
    for name, value in (
        ("initialization_timeout", initialization_timeout),
        ("heartbeat_timeout", heartbeat_timeout),
        ("shutdown_timeout", shutdown_timeout),
    ):
        checks.check_int(value, name)
    if keras.backend.backend() != "jax":
        raise ValueError(
            "initialize_jax_processes needs the JAX backend. Received: "
            f"KERAS_BACKEND={keras.backend.backend()!r}"
        )
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if process_id != 0:
        _wait_for(host, port, initialization_timeout)
    jax.distributed.initialize(
        coordinator_address=f"{host}:{port}",
        num_processes=num_processes,
        process_id=process_id,
        initialization_timeout=initialization_timeout,
        heartbeat_timeout_seconds=heartbeat_timeout,
        shutdown_timeout_seconds=shutdown_timeout,
    )


def _wait_for(host, port, timeout):
    """Returns once `host:port` accepts a TCP connection; else TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=2):
                return
        except OSError as error:
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"Could not reach the coordinator (process 0) at "
                    f"{host}:{port} within {timeout} s ({error}). Expected "
                    "process 0 to be running and its port to be open to this "
                    f"machine. Received: coordinator='{host}:{port}'"
                ) from None
            time.sleep(0.5)


class BlockDataParallel(keras.distribution.DataParallel):
    """`keras.distribution.DataParallel` that splits the batch on any axis.

    Keras's `DataParallel` splits every input on its first axis. The blocks
    that `kbn.MultiStepTrainer` trains on are `(batches_per_step, batch,
    ...)`: their batch axis is axis 1 (`batch_axis`), which this layout
    splits across the devices instead; inputs with fewer axes are split on
    axis 0. Variables are replicated, as with `DataParallel`.

    With several processes, each process feeds its own shard of every
    global block (`process_shards`): `auto_shard_dataset` is False.

    Args:
        devices: The devices, by default `keras.distribution.list_devices()`
            (those of every process).
        batch_axis: The axis of the inputs that is the batch.
    """

    def __init__(self, devices=None, batch_axis=1):
        self.batch_axis = checks.check_int(batch_axis, "batch_axis", minimum=0)
        super().__init__(
            devices=devices or keras.distribution.list_devices(),
            auto_shard_dataset=False,
        )

    def get_data_layout(self, data_shape):
        spec = [None] * len(data_shape)
        spec[self.batch_axis if len(data_shape) > self.batch_axis else 0] = (
            self.batch_dim_name
        )
        return keras.distribution.TensorLayout(spec, self.device_mesh)


def process_shards(blocks, index=None, count=None, axis=1):
    """This process's shard of each global block, for a multi-process `fit`.

    Every process generates the same global blocks (same seed) and keeps
    the `index`-th of `count` equal slices along `axis` of every array;
    `fit` under `BlockDataParallel` reassembles the global block.

    Args:
        blocks: Iterable of tuples of arrays (`kbn.trainer.index_batches`).
        index: This process's index; by default `process_index()`.
        count: The number of processes; by default `process_count()`.
        axis: The batch axis (1 for `index_batches`' blocks).
    """
    index = process_index() if index is None else index
    count = process_count() if count is None else count
    for block in blocks:
        size = block[0].shape[axis]
        if size % count:
            raise ValueError(
                f"A batch of {size} cannot be split evenly across {count} "
                f"processes. Expected a multiple of {count}. Received: "
                f"batch_size={size}"
            )
        part = size // count
        cut = [slice(None)] * axis + [slice(index * part, (index + 1) * part)]
        yield tuple(array[tuple(cut)] for array in block)


def barrier(name):
    """Waits until every JAX process reaches `barrier(name)` (no-op alone)."""
    if process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def distribute_global_batches(strategy, make_batches, global_batch_size, image_shape):
    """Each replica's slice of the same sequence of global batches.

    Every input pipeline (one per worker) generates the same global batches
    with `make_batches()` and yields, in order, the slices of the replicas it
    feeds, so that the replicas together see exactly the global batch.
    (Keras 3.15's `fit` fails under `MultiWorkerMirroredStrategy`: its
    symbolic build reduces a per-replica batch across workers, hence this
    explicit pipeline and `train_steps` below.)
    """
    import tensorflow as tf

    replicas = strategy.num_replicas_in_sync
    size = replica_batch_size(global_batch_size, strategy)

    def dataset_fn(context):
        per_pipeline = replicas // context.num_input_pipelines
        first = context.input_pipeline_id * per_pipeline

        def slices():
            for images, labels in make_batches():
                for r in range(first, first + per_pipeline):
                    yield (
                        images[r * size : (r + 1) * size],
                        labels[r * size : (r + 1) * size],
                    )

        return tf.data.Dataset.from_generator(
            slices,
            output_signature=(
                tf.TensorSpec((size, *image_shape), tf.float32),
                tf.TensorSpec((size,), tf.int64),
            ),
        ).prefetch(4)

    return strategy.distribute_datasets_from_function(dataset_fn)


def sgd_train_step(strategy, model, learning_rate, global_batch_size):
    """A compiled data-parallel SGD step: `step(iterator) -> global mean loss`.

    Each replica computes the cross-entropy of its slice divided by the
    global batch size; gradients are summed across replicas, so the update
    is that of one device on the global batch.
    """
    import tensorflow as tf

    def replica_step(images, labels):
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
            loss = tf.reduce_sum(losses) / global_batch_size
        grads = tape.gradient(loss, model.trainable_variables)
        grads = tf.distribute.get_replica_context().all_reduce("SUM", grads)
        for variable, grad in zip(model.trainable_variables, grads):
            variable.assign_sub(learning_rate * grad)
        return loss

    @tf.function
    def step(iterator):
        losses = strategy.run(replica_step, args=next(iterator))
        return strategy.reduce("SUM", losses, axis=None)

    return step
