"""kbn.callbacks inside real model.fit runs, and their TensorBoard files."""

import io
import os

import keras
import numpy as np
import pytest

from kbn.callbacks import TrainingProgress
from kbn.callbacks import ValidationAccuracyRecorder
from kbn.layers import BatchNorm
from tests.helpers import read_scalars


def _model(steps_per_execution=1):
    keras.utils.set_random_seed(3)
    inputs = keras.Input((8,))
    h = keras.layers.Dense(16, use_bias=False)(inputs)
    h = BatchNorm()(h)
    h = keras.layers.Activation("relu")(h)
    model = keras.Model(inputs, keras.layers.Dense(3)(h))
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution,
    )
    return model


@pytest.fixture
def task(rng):
    x = rng.normal(size=(70, 8)).astype("float32")
    y = (x[:, 0] > 0).astype("int64") + (x[:, 1] > 1).astype("int64")
    x_val = rng.normal(size=(40, 8)).astype("float32")
    y_val = (x_val[:, 0] > 0).astype("int64") + (x_val[:, 1] > 1).astype("int64")
    return x, y, x_val, y_val


@pytest.mark.parametrize(
    "steps_per_execution,expected",
    # 3 epochs of 7 batches, sampled every 5 batches, plus the final batch.
    [(1, [5, 10, 15, 20, 21]), (5, [5, 12, 19, 21])],
)
def test_steps_are_global_across_epochs(task, steps_per_execution, expected):
    x, y, x_val, y_val = task
    recorder = ValidationAccuracyRecorder((x_val, y_val), every_n_batches=5)
    _model(steps_per_execution).fit(
        x, y, batch_size=10, epochs=3, shuffle=False, verbose=0, callbacks=[recorder]
    )
    assert recorder.steps == expected
    assert len(recorder.accuracies) == len(expected) == len(recorder.losses)


def test_exact_sampling_points_when_execution_divides_the_interval(task):
    x, y, x_val, y_val = task
    x, y = np.concatenate([x, x[:30]]), np.concatenate([y, y[:30]])  # 10 batches
    recorder = ValidationAccuracyRecorder((x_val, y_val), every_n_batches=10)
    _model(steps_per_execution=5).fit(
        x, y, batch_size=10, epochs=3, verbose=0, callbacks=[recorder]
    )
    assert recorder.steps == [10, 20, 30]


def test_accuracy_is_inference_mode_accuracy_of_the_model(task):
    x, y, x_val, y_val = task
    recorder = ValidationAccuracyRecorder((x_val, y_val), every_n_batches=7)
    model = _model()
    model.fit(x, y, batch_size=10, epochs=2, verbose=0, callbacks=[recorder])
    logits = keras.ops.convert_to_numpy(model(x_val, training=False))
    assert recorder.accuracies[-1] == pytest.approx((logits.argmax(1) == y_val).mean())
    # One-hot labels give the same accuracy.
    onehot = ValidationAccuracyRecorder((x_val, np.eye(3)[y_val]), every_n_batches=7)
    model.fit(x, y, batch_size=10, epochs=1, verbose=0, callbacks=[onehot])
    logits = keras.ops.convert_to_numpy(model(x_val, training=False))
    assert onehot.accuracies[-1] == pytest.approx((logits.argmax(1) == y_val).mean())


def test_training_metrics_are_not_reset(task):
    """Unlike model.evaluate(), the recorder leaves fit's metrics alone."""
    x, y, x_val, y_val = task
    plain = _model().fit(x, y, batch_size=10, epochs=2, shuffle=False, verbose=0)
    recorder = ValidationAccuracyRecorder((x_val, y_val), every_n_batches=3)
    recorded = _model().fit(
        x, y, batch_size=10, epochs=2, shuffle=False, verbose=0, callbacks=[recorder]
    )
    for key in ("loss", "accuracy"):
        np.testing.assert_allclose(recorded.history[key], plain.history[key], rtol=1e-6)


def test_state_is_reset_for_each_fit(task):
    x, y, x_val, y_val = task
    recorder = ValidationAccuracyRecorder((x_val, y_val), every_n_batches=7)
    model = _model()
    model.fit(x, y, batch_size=10, epochs=2, verbose=0, callbacks=[recorder])
    model.fit(x, y, batch_size=10, epochs=1, verbose=0, callbacks=[recorder])
    assert recorder.steps == [7]


def test_tensorboard_scalars_next_to_keras_logs(task, tmp_path):
    x, y, x_val, y_val = task
    log_dir = str(tmp_path / "run")
    recorder = ValidationAccuracyRecorder(
        (x_val, y_val), every_n_batches=5, log_dir=log_dir
    )
    _model().fit(
        x,
        y,
        batch_size=10,
        epochs=3,
        verbose=0,
        callbacks=[recorder, keras.callbacks.TensorBoard(log_dir, write_graph=False)],
    )
    validation = read_scalars(log_dir)
    assert [s for s, _ in validation["validation/accuracy"]] == [5, 10, 15, 20, 21]
    np.testing.assert_allclose(
        [v for _, v in validation["validation/accuracy"]],
        recorder.accuracies,
        rtol=1e-6,
    )
    train = read_scalars(os.path.join(log_dir, "train"))
    assert [s for s, _ in train["epoch_loss"]] == [0, 1, 2]


def test_no_event_files_without_log_dir(task, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    x, y, x_val, y_val = task
    recorder = ValidationAccuracyRecorder((x_val, y_val), every_n_batches=5)
    _model().fit(x, y, batch_size=10, epochs=1, verbose=0, callbacks=[recorder])
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("every", [0, -5, 2.5, True])
def test_bad_interval_is_rejected(task, every):
    _, _, x_val, y_val = task
    with pytest.raises(ValueError, match=f"Received: every_n_batches={every!r}"):
        ValidationAccuracyRecorder((x_val, y_val), every_n_batches=every)


def test_validation_data_must_be_a_pair(task):
    with pytest.raises(TypeError, match="Received: validation_data of type ndarray"):
        ValidationAccuracyRecorder(task[2], every_n_batches=5)


def test_progress_prints_one_line_off_a_terminal(task):
    x, y, _, _ = task
    stream = io.StringIO()
    progress = TrainingProgress(21, label="with_bn:", stream=stream)
    _model(steps_per_execution=5).fit(
        x, y, batch_size=10, epochs=3, verbose=0, callbacks=[progress]
    )
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("with_bn:      21/21 batches [")
    assert "batches/s, loss " in lines[0]
