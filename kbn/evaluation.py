"""Compiled inference passes that leave a model's compiled metrics alone.

`model.evaluate()` resets the metrics that `fit()` is accumulating, and
`model.predict()` rebuilds its data pipeline on every call. The validation
recorder and the experiments need a cheap, repeatable accuracy on a fixed set
of images: `Accuracy` compiles one inference pass per model and keeps the
images on the device. It must not train or write anything.
"""

import functools

import numpy as np
from keras import ops

from kbn.compiled import CACHE
from kbn.compiled import compiled
from kbn.compiled import model_cache


class Accuracy:
    """Classification accuracy of a model on fixed data, compiled once.

    Args:
        model: A Keras model returning logits or probabilities.
        images: Input array.
        labels: Integer labels, or one-hot rows.
        training: Mode of the forward pass: `False` (inference, moving
            statistics) or `True` (batch statistics, without updating them).
        batch_size: Evaluate in chunks of this many images (`None`: all at
            once; the last chunk may be smaller).

    Call returns the accuracy as a Python float.
    """

    def __init__(self, model, images, labels, training=False, batch_size=None):
        labels = np.asarray(labels)
        if labels.ndim == 2:
            labels = labels.argmax(axis=-1)
        if len(images) != len(labels):
            raise ValueError(
                "Images and labels must have the same length. Received: "
                f"len(images)={len(images)}, len(labels)={len(labels)}"
            )
        self.model = model
        self.training = bool(training)
        size = len(images) if batch_size is None else int(batch_size)
        self._chunks = [
            (
                ops.convert_to_tensor(np.asarray(images[i : i + size])),
                ops.convert_to_tensor(labels[i : i + size].astype("int32")),
            )
            for i in range(0, len(images), size)
        ]
        self._count = len(images)
        self._correct = _compiled_correct_count(model, self.training)

    def __call__(self):
        total = 0
        for images, labels in self._chunks:
            total += int(self._correct(images, labels))
        return total / self._count


def predictions(model, images, training=False):
    """Predicted classes of `model` on `images`, as a NumPy array.

    With `training=True` the batch statistics of `images` are used (and the
    moving statistics are left as they are).
    """
    logits = compiled_forward(model, training)(ops.convert_to_tensor(images))
    return ops.convert_to_numpy(ops.argmax(logits, axis=-1))


def compiled_forward(model, training=False):
    """A compiled `images -> logits` pass that never writes to the model.

    `training=True` normalizes with batch statistics without updating the
    moving statistics. The pass reads the model's current weights each call.
    """
    cache = _cache(model)
    if ("forward", training) not in cache:
        cache[("forward", training)] = _compile_forward(model, training)
    return cache[("forward", training)]


def _compile_forward(model, training):
    compiled_forward = compiled(functools.partial(_stateless_forward, model, training))
    return lambda images: compiled_forward(*_weights(model), images)


def _count_correct(logits, labels):
    hits = ops.equal(ops.cast(ops.argmax(logits, axis=-1), "int32"), labels)
    return ops.sum(ops.cast(hits, "int32"))


def _stateless_forward(model, training, trainable, non_trainable, images):
    logits, _ = model.stateless_call(
        trainable, non_trainable, images, training=training
    )
    return logits


def _weights(model):
    """The model's current weights, as arguments of a compiled pass."""
    return (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
    )


def _compiled_correct_count(model, training):
    cache = _cache(model)
    if ("correct", training) not in cache:
        cache[("correct", training)] = _compile_correct_count(model, training)
    return cache[("correct", training)]


def _compile_correct_count(model, training):
    def correct(trainable, non_trainable, images, labels):
        logits = _stateless_forward(model, training, trainable, non_trainable, images)
        return _count_correct(logits, labels)

    count = compiled(correct)
    return lambda images, labels: count(*_weights(model), images, labels)


def forget_compiled_passes(model):
    """Drops the compiled passes of `model`: kbn's (this module's,
    `kbn.recompute_batch_norm_statistics`') and Keras's own (`predict`,
    `evaluate`, `fit`), so that the next call traces the model again. For a
    change that a traced pass would not see, such as a batch norm switched
    to test-batch statistics (`kbn.use_test_batch_statistics`).
    """
    model.__dict__.pop(CACHE, None)
    for name in ("predict_function", "test_function", "train_function"):
        if getattr(model, name, None) is not None:
            setattr(model, name, None)


def _cache(model):
    """Compiled passes of `model`, kept on the model so they die with it."""
    return model_cache(model)
