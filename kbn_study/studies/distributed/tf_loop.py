"""The study's data-parallel training step and input pipeline on `tf.distribute`.

Holds `distribute_global_batches` (each replica's slice of the same global
batches) and `sgd_train_step` (plain SGD on the cross-entropy, gradients
summed across replicas): what `recipes/distributed.py --strategy mirrored`
or `multiworker` trains with, as Keras 3's `fit` cannot run under
`MultiWorkerMirroredStrategy`. It must not hold the command's plumbing
(`kbn_study.studies.distributed.tf_distribute`). TensorFlow is imported
inside the functions.
"""

from kbn.distributed import replica_batch_size


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
