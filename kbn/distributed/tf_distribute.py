"""Data parallelism on TensorFlow's `tf.distribute` (the TensorFlow backend).

Holds the helpers that set up a strategy: logical CPU devices, the
strategy by name, the per-replica batch. It must not hold a training step
or an input pipeline (those are the study's: they depend on its loss and
data), nor anything of JAX (`kbn.distributed.jax_processes`). TensorFlow is
imported inside the functions.
"""

import json
import os

import keras

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
