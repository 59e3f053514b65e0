"""Data parallelism across JAX processes (the JAX backend).

Holds what joins N JAX processes (`initialize_jax_processes`), says which
process this is, splits every global block of batches into this process's
shard (`process_shards`) and lays the batch axis out across the devices of
every process (`BlockDataParallel`). It must not hold anything of
TensorFlow (`kbn.distributed.tf_distribute`). JAX is imported inside the
functions.
"""

import socket
import time

import keras

from kbn import checks


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


def batch_parts():
    """Into how many parts the current Keras distribution splits a batch.

    The size of the batch axis of the device mesh of a
    `keras.distribution.DataParallel` (a `BlockDataParallel`, a
    `ModelParallel`) on JAX: a batch sharded so is one global array, each
    device holding one part. 1 without a distribution, on another backend,
    or on a single device. `kbn.layers.BatchNorm` asks it to take its
    moments part by part and exchange them once (`kbn.ops.
    combine_part_moments`) rather than let XLA all-reduce each reduction.
    """
    if keras.backend.backend() != "jax":
        return 1
    distribution = keras.distribution.distribution()
    name = getattr(distribution, "batch_dim_name", None)
    mesh = getattr(distribution, "device_mesh", None)
    if name is None or mesh is None or name not in mesh.axis_names:
        return 1
    return int(mesh.shape[list(mesh.axis_names).index(name)])


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
