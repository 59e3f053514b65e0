"""Data-parallel training on TensorFlow's distribution engine (`tf.distribute`).

With `kbn.layers.BatchNorm(synchronized=True)` under a `MirroredStrategy`
(several devices of one machine) or a `MultiWorkerMirroredStrategy`
(several machines, one `TF_CONFIG` each), every replica normalizes with the
statistics of the *global* batch (sums, sums of squares and counts are
all-reduced), so outputs, gradients and moving statistics equal those of one
device on the whole batch. Unsynchronized, each replica normalizes with the
statistics of its own slice: noisier, and different from single-device
training as soon as the slices differ.

On JAX, a batch sharded by `keras.distribution.DataParallel` is one global
array: its moments are global by construction, synchronized or not.
"""

import json
import os

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
    import keras

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
    """Whether this process writes results (worker 0, or no cluster)."""
    config = json.loads(os.environ.get("TF_CONFIG", "{}"))
    task = config.get("task", {})
    return (
        task.get("type", "worker") in ("chief", "worker") and task.get("index", 0) == 0
    )


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
