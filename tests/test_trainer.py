"""MultiStepTrainer trains exactly as plain fit does, K batches per call."""

import keras
import numpy as np
import pytest

from kbn.callbacks import ValidationAccuracyRecorder
from kbn.trainer import MultiStepTrainer
from kbn.trainer import index_batches
from kbn_study.data import mnist
from kbn_study.models import networks as models
from tests import reference


def _compiled(model_or_trainer):
    model_or_trainer.compile(
        optimizer=keras.optimizers.SGD(0.5),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model_or_trainer


@pytest.fixture
def task(rng):
    images = rng.uniform(size=(130, 784)).astype("float32")
    labels = (images[:, :10].sum(1) > 5).astype("int64") + (images[:, 10] > 0.5)
    return images, labels


@pytest.mark.parametrize("batch_norm", [False, True], ids=["plain", "bn"])
def test_same_weights_as_plain_fit_on_the_same_batches(task, batch_norm):
    images, labels = task
    kernels = models.initial_weights(seed=4)
    plain = _compiled(models.build_mlp(kernels, "relu", batch_norm))
    plain.fit(
        mnist.training_batches(images, labels, batch_size=20, seed=9),
        steps_per_epoch=12,
        epochs=2,
        shuffle=False,
        verbose=0,
    )
    model = models.build_mlp(kernels, "relu", batch_norm)
    trainer = _compiled(MultiStepTrainer(model, images, batches_per_step=6))
    history = trainer.fit(
        index_batches(labels, batch_size=20, batches_per_step=6, seed=9),
        steps_per_epoch=2,
        epochs=2,
        shuffle=False,
        verbose=0,
    )
    assert int(keras.ops.convert_to_numpy(trainer.optimizer.iterations)) == 24
    for a, b in zip(plain.weights, model.weights):
        reference.assert_close(a.numpy() if hasattr(a, "numpy") else a, b, 1.0)
    # The epoch loss is the mean over all its batches, as with plain fit.
    assert history.history["loss"][-1] == pytest.approx(
        plain.history.history["loss"][-1], rel=1e-4
    )


def test_callbacks_count_batches_not_calls(task):
    images, labels = task
    model = models.build_mlp(models.initial_weights(seed=0), "relu", True)
    trainer = _compiled(MultiStepTrainer(model, images, batches_per_step=5))
    recorder = ValidationAccuracyRecorder(
        (images[:40], labels[:40]), every_n_batches=10
    )
    trainer.fit(
        index_batches(labels, batch_size=20, batches_per_step=5, seed=0),
        steps_per_epoch=2,
        epochs=3,
        shuffle=False,
        verbose=0,
        callbacks=[recorder],
    )
    assert recorder.steps == [10, 20, 30]
    logits = keras.ops.convert_to_numpy(model(images[:40], training=False))
    assert recorder.accuracies[-1] == pytest.approx(
        (logits.argmax(1) == labels[:40]).mean()
    )


def test_index_batches_are_the_training_batches(task):
    images, labels = task
    blocks = index_batches(labels, batch_size=20, batches_per_step=4, seed=2)
    plain = mnist.training_batches(images, labels, batch_size=20, seed=2)
    for _ in range(3):
        indices, block_labels = next(blocks)
        assert indices.shape == (4, 20) and indices.dtype == np.int32
        for row, row_labels in zip(indices, block_labels):
            x, y = next(plain)
            np.testing.assert_array_equal(images[row], x)
            np.testing.assert_array_equal(row_labels, y)


def test_bad_arguments(task):
    images, _ = task
    model = models.build_mlp(models.initial_weights(seed=0))
    with pytest.raises(ValueError, match="Received: batches_per_step=0"):
        MultiStepTrainer(model, images, batches_per_step=0)
