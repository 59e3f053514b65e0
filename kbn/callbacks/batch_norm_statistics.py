"""`BatchNormStatistics`: what every batch norm of a model does, in TensorBoard.

Holds the callback that writes each kbn batch norm's weights as histograms
and the gaps between its batch and moving statistics, and the compiled
probe pass that measures the batch statistics without changing the model.
It must not hold the layer's maths (it asks the layers, through their
recording protocol).
"""

import contextlib
import os

import numpy as np
from keras import ops

from kbn import checks
from kbn.callbacks import _summary_writers
from kbn.callbacks.global_step import GlobalStepCallback
from kbn.compiled import compiled
from kbn.layers import BatchNorm
from kbn.layers import batch_norm_layers
from kbn.trainer import MultiStepTrainer


class BatchNormStatistics(GlobalStepCallback):
    """Logs what every batch norm of a model is doing, against the global batch.

    In training, batch norm normalizes with the statistics of each batch; in
    inference, with its moving statistics. How far apart the two are, and
    how the layer's state evolves, is what decides whether a model behaves
    the same in both modes. At the start of training (step 0), every
    `every_n_batches` training batches (counted as a global step, right
    across epochs, with `steps_per_execution` and with
    `kbn.MultiStepTrainer`) and after the last batch, this callback writes,
    for every kbn `BatchNorm` layer of the model (nested ones included, as
    `kbn.layers.batch_norm_layers` finds them), with the layer's name:

    - histograms `batch_norm/<layer>/moving_mean`, `moving_variance`,
      `gamma` and `beta` (those the layer has), its weights at that step;
    - with `probe_images`, scalars `batch_norm/<layer>/mean_gap` and
      `batch_norm/<layer>/variance_gap`: the mean over the layer's features
      of `|batch mean - moving mean|` and `|batch variance - moving
      variance|`. The batch statistics are those the layer's moving
      statistics average, which the layer records for `probe_images`
      (`BatchNorm.recording_statistics`, with its own `unbiased_variance`;
      ghost batches averaged) in a compiled training-mode pass of the model
      that changes nothing in it: every batch norm normalizes with batch
      statistics, as in training. The pass runs the model (for a
      `kbn.MultiStepTrainer`, the model it trains) once it is built. Layers
      without moving statistics (`track_running_stats=False`) get
      histograms only.

    Give `ValidationAccuracyRecorder` and `TrainingScalars` the same
    `log_dir`: kbn's callbacks share one event file per folder.

    Args:
        log_dir: Folder of the event file (one TensorBoard run).
        every_n_batches: Positive int, the sampling interval in batches.
        probe_images: Optional fixed batch of inputs of the model (for
            example one training batch) for the gaps; `None` logs the
            histograms only.
        record_final: Also log after the last batch when it is not a
            multiple of `every_n_batches`.

    Example:

    ```python
    statistics = kbn.callbacks.BatchNormStatistics(
        "logs/run", every_n_batches=100, probe_images=x_train[:60])
    model.fit(x_train, y_train, batch_size=60, epochs=5, callbacks=[statistics])
    ```
    """

    def __init__(self, log_dir, every_n_batches, probe_images=None, record_final=True):
        super().__init__()
        self.log_dir = os.fspath(log_dir)
        self.every_n_batches = checks.check_int(every_n_batches, "every_n_batches")
        self.probe_images = probe_images
        self.record_final = bool(record_final)

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        model = self.model  # syncs the JAX backend's state
        layers = [
            layer for layer in batch_norm_layers(model) if isinstance(layer, BatchNorm)
        ]
        self._layers = _named(layers)
        measured = [layer for layer in layers if layer.track_running_stats]
        self._probe = None
        if self.probe_images is not None and measured:
            # A MultiStepTrainer passes images to the model it trains as they
            # are; that model is built before training, the trainer is not.
            network = model.model if isinstance(model, MultiStepTrainer) else model
            self._probe = _Probe(network, measured, self.probe_images)
        self._writer = None
        self.start_sampling(self.every_n_batches)
        self._last_sample = None
        self._sample()

    def on_steps_end(self, logs=None):
        if self.sample_due():
            self._sample()

    def on_train_end(self, logs=None):
        if self.record_final and self._last_sample != self.global_step:
            self._sample()
        if self._writer is not None:
            _summary_writers.release(self.log_dir)
            self._writer = None

    def statistics(self):
        """`{tag: value}` of the current state: arrays for the histograms,
        floats for the gaps."""
        self.model  # noqa: B018 - syncs the JAX backend's state
        values = {}
        for name, layer in self._layers:
            for weight in ("moving_mean", "moving_variance", "gamma", "beta"):
                variable = getattr(layer, weight, None)
                if variable is not None:
                    values[f"batch_norm/{name}/{weight}"] = _numpy(variable)
        if self._probe is not None and self._probe.model.built:
            batch = self._probe.batch_statistics()
            for name, layer in self._layers:
                if layer in batch:
                    mean, variance = batch[layer]
                    values[f"batch_norm/{name}/mean_gap"] = _mean_gap(
                        mean, layer.moving_mean
                    )
                    values[f"batch_norm/{name}/variance_gap"] = _mean_gap(
                        variance, layer.moving_variance
                    )
        return values

    def _sample(self):
        self._last_sample = self.global_step
        if not self._layers:
            return
        values = self.statistics()
        if self._writer is None:
            self._writer = _summary_writers.acquire(self.log_dir)
        # One event per sample, scalars and histograms together (written
        # value by value, a deep network's sample would cost more).
        self._writer.values(values, step=self.global_step)
        self._writer.flush()


class _Probe:
    """The batch moments that layers record on fixed inputs, compiled.

    Inside each layer's `recording_statistics` context, a training-mode
    `stateless_call` of the model makes every layer append its batch
    moments to a list instead of updating its state; the compiled pass
    returns them, and the model keeps its variables.
    """

    def __init__(self, model, layers, images):
        self.model = model
        self.layers = layers
        self.images = ops.convert_to_tensor(np.asarray(images))
        self._records = [[] for _ in layers]  # the lists of the current contexts
        self._pass = compiled(self._training_pass)

    def _training_pass(self, trainable, non_trainable, images):
        # Runs when the pass is traced: the layers append to the lists.
        for records in self._records:
            records.clear()
        self.model.stateless_call(trainable, non_trainable, images, training=True)
        return [
            [(r["moving_mean"], r["moving_variance"]) for r in records]
            for records in self._records
        ]

    def batch_statistics(self):
        """`{layer: (mean, variance)}` as NumPy arrays, for the layers that
        recorded a batch with more than one value per feature."""
        with contextlib.ExitStack() as stack:
            self._records = [
                stack.enter_context(
                    layer.recording_statistics(unbiased=layer.unbiased_variance)
                )
                for layer in self.layers
            ]
            outputs = self._pass(
                [v.value for v in self.model.trainable_variables],
                [v.value for v in self.model.non_trainable_variables],
                self.images,
            )
        result = {}
        for layer, records in zip(self.layers, outputs):
            # One record per call of the layer; weight 0: a single value per
            # feature, which does not count.
            weights = [float(_numpy(weight)) for (_, weight), _ in records]
            if sum(weights) == 0:
                continue
            result[layer] = tuple(
                sum(w * _numpy(r[i][0]) for w, r in zip(weights, records))
                / sum(weights)
                for i in (0, 1)
            )
        return result


def _named(layers):
    """`[(tag name, layer)]`: the layers' names, made unique."""
    counts = {}
    named = []
    for layer in layers:
        counts[layer.name] = counts.get(layer.name, 0) + 1
        suffix = "" if counts[layer.name] == 1 else f"_{counts[layer.name]}"
        named.append((f"{layer.name}{suffix}", layer))
    return named


def _numpy(tensor):
    return np.asarray(ops.convert_to_numpy(tensor), dtype="float32")


def _mean_gap(batch, moving):
    return float(np.mean(np.abs(np.asarray(batch, "float64") - _numpy(moving))))
