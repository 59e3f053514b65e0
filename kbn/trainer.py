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

On JAX under a data-parallel `keras.distribution` (`kbn.distributed.
BlockDataParallel`), `sharded_step=True` runs each block per device
(`kbn.distributed.sharded_train_step`): each batch norm exchanges its
moments in one collective per pass and the gradients are summed in one
all-reduce of one flattened buffer, as a hand-written step does; without it
XLA partitions the step, exactly too, but with a collective per gradient.

It must not hold callbacks or anything of a study (data, losses).
"""

import keras
import numpy as np
from keras import ops

from kbn import checks
from kbn import distributed


class MultiStepTrainer(keras.Model):
    """Trains `model` for several batches per compiled call, data on device.

    Args:
        model: The Keras model to train (its inputs are images).
        images: The training images, copied to the device once.
        batches_per_step: Batches per call of the compiled training step.
        sharded_step: On JAX, with the batch split across several devices
            by a `keras.distribution.DataParallel` (a `kbn.distributed.
            BlockDataParallel`): run each block per device with
            `jax.shard_map`, every `kbn.layers.BatchNorm` exchanging its
            moments once per pass and the gradients summed in one
            all-reduce. Exact (the same numbers as one device, to float32
            rounding) for models whose only computations across examples
            are kbn's `BatchNorm` layers (which must `exchanges_moments`)
            and a loss averaged over the batch: the trainer refuses other
            stateful layers (Keras's `BatchNormalization`, `Dropout`) with a
            `ValueError`, but cannot see a stateless layer of yours that
            mixes examples. Metrics must add across devices (Keras's means,
            sums and counts do). Ignored elsewhere.

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

    def __init__(
        self, model, images, batches_per_step=50, sharded_step=False, **kwargs
    ):
        super().__init__(**kwargs)
        checks.check_int(batches_per_step, "batches_per_step")
        self.model = model
        self.batches_per_step = batches_per_step
        self.sharded_step = bool(sharded_step)
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

        def train_block(state, data):
            state, logs = jax.lax.scan(one_batch, state, _as_pair(data))
            return jax.tree.map(lambda value: value[-1], logs), state

        if not self.sharded_step or distributed.batch_parts() == 1:
            return train_block(state, data)
        self._check_sharded_step()

        def sharded_block(state, data):
            before = state[3]
            _, state = train_block(state, data)
            # Each device's metrics counted its own part: their increments
            # add up to the batch's (Keras's means are sums and counts).
            metrics = before
            if before:
                increments = [a - b for a, b in zip(state[3], before)]
                summed = distributed.sum_across_devices(increments)
                metrics = [b + s for b, s in zip(before, summed)]
            with keras.StatelessScope(
                state_mapping=list(zip(self.metrics_variables, metrics))
            ):
                logs = self.get_metrics_result()
            return logs, (*state[:3], metrics)

        return distributed.sharded_train_step(sharded_block, state, _as_pair(data))

    def compute_loss_and_updates(self, trainable_variables, *args, **kwargs):
        devices = distributed.gradient_devices()
        if devices is None:
            return super().compute_loss_and_updates(
                trainable_variables, *args, **kwargs
            )
        # In the sharded step: each device's loss is the mean over its part,
        # the batch's is their mean; the gradients are summed across devices.
        loss, aux = super().compute_loss_and_updates(
            distributed.sum_gradients(trainable_variables), *args, **kwargs
        )
        return loss / devices, aux

    def _check_sharded_step(self):
        from kbn.layers import BatchNorm

        reduction = getattr(self.loss, "reduction", "sum_over_batch_size")
        if reduction not in ("sum_over_batch_size", "mean"):
            raise ValueError(
                "MultiStepTrainer(sharded_step=True) averages the devices' "
                "losses, which needs a loss averaged over the batch. Received: "
                f"reduction={reduction!r}"
            )
        exchanging = set()
        for layer in self.model._flatten_layers(include_self=False):
            if isinstance(layer, BatchNorm):
                if not layer.exchanges_moments:
                    raise ValueError(
                        "MultiStepTrainer(sharded_step=True) trains each device "
                        f"on its part of the batch, and layer '{layer.name}' "
                        "cannot exchange its moments across devices (see "
                        "BatchNorm.exchanges_moments). Use sharded_step=False. "
                        f"Received: virtual_batch_size={layer.virtual_batch_size}"
                    )
                exchanging.update(id(v) for v in layer.variables)
        for variable in self.model.non_trainable_variables:
            if id(variable) not in exchanging:
                raise ValueError(
                    "MultiStepTrainer(sharded_step=True) trains each device on "
                    "its part of the batch, so state other than kbn batch "
                    "norm's would differ between devices. Use "
                    f"sharded_step=False. Received: variable {variable.path!r}"
                )

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
