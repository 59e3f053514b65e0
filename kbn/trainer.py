"""Training at the pace of a hand-written loop, through `model.fit`.

On a CPU the study's small MLP trains at thousands of batches per second, so
what `fit` does around each batch (a Python call of the compiled step, a
host-to-device copy of 60 images) costs as much as the batch itself. Keras's
`steps_per_execution` does not help on JAX, where it still calls the
compiled step once per batch from Python.

`MultiStepTrainer` wraps a model for training only:

- the training images are copied to the device once, as a non-trainable
  variable of the trainer; `fit` receives blocks of batch *indices*
  (`index_batches` below) and the trainer gathers the images on the device;
- one call of the compiled training step runs `batches_per_step` ordinary
  Keras training steps in a loop compiled with it (`jax.lax.scan` on JAX, a
  `tf.while_loop` on TensorFlow), each a plain `train_step` of the model:
  same loss, same optimizer, same metrics, same batch-norm updates.

Callbacks see one Keras step per block; `kbn.callbacks.GlobalStepCallback`
reads `batches_per_step` and counts batches. Save and use the wrapped model
(`trainer.model`), not the trainer.

It must not hold callbacks or anything of a study (data, losses).
"""

import keras
import numpy as np
from keras import ops

from kbn import checks


class MultiStepTrainer(keras.Model):
    """Trains `model` for several batches per compiled call, data on device.

    Args:
        model: The Keras model to train (its inputs are images).
        images: The training images, copied to the device once.
        batches_per_step: Batches per call of the compiled training step.

    Call arguments:
        inputs: Either images (floating point), passed to the model as they
            are, or integer indices into `images`, of shape `(batch,)` or
            `(batches_per_step, batch)`.

    Example:

    ```python
    trainer = MultiStepTrainer(model, x_train, batches_per_step=50)
    trainer.compile(optimizer="sgd", loss=loss)
    blocks = kbn.trainer.index_batches(y_train, 60, batches_per_step=50)
    trainer.fit(blocks, steps_per_epoch=10, epochs=5)  # 2,500 batches
    ```
    """

    def __init__(self, model, images, batches_per_step=50, **kwargs):
        super().__init__(**kwargs)
        checks.check_int(batches_per_step, "batches_per_step")
        self.model = model
        self.batches_per_step = batches_per_step
        self.training_images = keras.Variable(
            images, trainable=False, name="training_images"
        )

    def call(self, inputs, training=None):
        if not keras.backend.is_float_dtype(inputs.dtype):
            inputs = ops.take(self.training_images, ops.cast(inputs, "int32"), axis=0)
        if len(inputs.shape) == len(self.model.inputs[0].shape) + 1:
            # A block of batches, as `fit`'s first symbolic call sees it.
            block = ops.shape(inputs)[:2]
            flat = ops.reshape(inputs, (-1, *inputs.shape[2:]))
            outputs = self.model(flat, training=training)
            return ops.reshape(outputs, (*block, *outputs.shape[1:]))
        return self.model(inputs, training=training)

    def train_step(self, *args):
        backend = keras.backend.backend()
        if backend == "jax":
            return self._jax_train_step(*args)
        if backend == "tensorflow":
            return self._tensorflow_train_step(*args)
        return self._eager_train_step(*args)

    def _jax_train_step(self, state, data):
        import jax

        def one_batch(state, batch):
            logs, state = super(MultiStepTrainer, self).train_step(state, batch)
            return state, logs

        state, logs = jax.lax.scan(one_batch, state, _as_pair(data))
        return jax.tree.map(lambda value: value[-1], logs), state

    def _tensorflow_train_step(self, data):
        import tensorflow as tf

        indices, labels = _as_pair(data)
        parent = super()

        def body(i):
            parent.train_step((indices[i], labels[i]))
            return (i + 1,)

        tf.while_loop(lambda i: i < tf.shape(indices)[0], body, (tf.constant(0),))
        return self.get_metrics_result()

    def _eager_train_step(self, data):
        indices, labels = _as_pair(data)
        logs = None
        for i in range(indices.shape[0]):
            logs = super().train_step((indices[i], labels[i]))
        return logs


def _as_pair(data):
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ValueError(
            "MultiStepTrainer expects (indices, labels) blocks from "
            "kbn.trainer.index_batches. Received: data of type "
            f"{type(data).__name__}"
        )
    return tuple(data)


def batch_indices(num_examples, batch_size=60, seed=None):
    """Endless index batches of `batch_size`, reshuffled every epoch.

    As TensorFlow 1's `DataSet.next_batch`, which the study used: each epoch
    is a new random permutation, and a batch that reaches the end of an epoch
    is completed with the first examples of the next one, so every batch has
    exactly `batch_size` examples.

    Yields:
        int64 NumPy arrays of shape `(batch_size,)`.
    """
    n = int(num_examples)
    checks.check_int(batch_size, "batch_size", minimum=1, maximum=n)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    position = 0
    while True:
        if position + batch_size > n:
            order = np.concatenate([order[position:], rng.permutation(n)])
            position = 0
        yield order[position : position + batch_size]
        position += batch_size


def index_batches(labels, batch_size=60, batches_per_step=1, seed=None):
    """Endless blocks of `batches_per_step` index batches, with their labels.

    The input of `MultiStepTrainer`, which keeps the images on the device:
    the batches of `batch_indices` with the same seed, `batches_per_step` of
    them stacked.

    Yields:
        Tuples `(indices, labels)` of shape `(batches_per_step, batch_size)`;
        indices are int32.
    """
    labels = np.asarray(labels)
    stream = batch_indices(len(labels), batch_size, seed)
    while True:
        block = np.stack([next(stream) for _ in range(batches_per_step)])
        yield block.astype("int32"), labels[block]
