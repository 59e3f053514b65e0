"""`ActivationPercentiles`: percentiles of a layer's activations over training.

Holds the callback that measures the internal covariate shift of Ioffe &
Szegedy's Figure 1 (percentiles of a layer's inputs or outputs on a fixed
probe, every N batches) and writes them to TensorBoard. It must not hold
any plotting or the study's tables (`kbn_study.studies.covariate_shift`).
"""

import os

import keras
import numpy as np

from kbn import checks
from kbn.callbacks import _summary_writers
from kbn.callbacks.global_step import GlobalStepCallback
from kbn.evaluation import compiled_forward
from kbn.trainer import MultiStepTrainer


class ActivationPercentiles(GlobalStepCallback):
    """Records percentiles of layers' activations on a fixed probe batch.

    Ioffe & Szegedy (2015, Figure 1) show internal covariate shift as the
    15th, 50th and 85th percentiles of the input to one sigmoid of the last
    hidden layer, over training: without batch norm they drift, with it they
    stay put. This callback records such curves during `model.fit`. At the
    start of training (step 0), every `every_n_batches` training batches
    (counted as a global step, right across epochs, with
    `steps_per_execution` and with `kbn.MultiStepTrainer`) and after the last
    batch, it runs `probe` through the model in one compiled pass that
    changes nothing in it, and records, for each named layer, the chosen
    percentiles of that layer's output (or input, `tensor="input"`) per
    unit: over the probe's examples, and over every other axis but the last
    (the units; for a conv layer, the positions of each feature map).

    A pre-activation is the input of an activation layer: name the
    `keras.layers.Activation` layers with `tensor="input"` (the input of
    `sigmoid_3` is a Dense layer's output without batch norm, a batch norm's
    output with it), or the layer before it with `tensor="output"`.

    With `log_dir`, it writes against the global step, in the event file
    that kbn's other callbacks with the same `log_dir` share:

    - scalars `activation_percentiles/<layer>/unit_<k>/p<q>` for each chosen
      unit (`units`), or, when every unit is recorded, `activation_
      percentiles/<layer>/p<q>`: the percentiles of all units' values pooled;
    - histograms `activation_percentiles/<layer>/values`: every value of the
      recorded units on the probe (TensorBoard's histogram of the whole
      distribution).

    Attributes:
        steps: Global steps of the samples.
        values: `{layer name: array (samples, len(percentiles), units)}`,
            the recorded percentiles (see `records()` for a table).

    Args:
        layer_names: Name of a layer of the model, or a list of names (for
            a `kbn.MultiStepTrainer`, layers of the model it trains). The
            model must be functional (or Sequential): the callback builds a
            model from its inputs to these layers' tensors.
        probe: Fixed batch of inputs of the model, for example a validation
            batch.
        percentiles: Percentiles to record, each in `[0, 100]` (NumPy's
            `np.percentile`, linear interpolation).
        every_n_batches: Positive int, the sampling interval in batches.
        units: `None` (every unit), an int, or a list of ints: the units
            (indices on the last axis) to record.
        tensor: `"output"` or `"input"`: which tensor of each layer.
        training: Mode of the probe pass. `True` (the default), as the
            layers see their inputs in training: batch norm normalizes with
            the probe's own statistics (its moving statistics do not
            change); `False`, inference mode.
        log_dir: Optional TensorBoard folder.
        record_final: Also record after the last batch when it is not a
            multiple of `every_n_batches`.

    Example:

    ```python
    percentiles = kbn.callbacks.ActivationPercentiles(
        "sigmoid_3", probe=x_val[:1000], every_n_batches=500,
        tensor="input", units=0, log_dir="logs/run")
    model.fit(x, y, batch_size=60, epochs=5, callbacks=[percentiles])
    pandas.DataFrame(percentiles.records())  # step, layer, unit, percentile, value
    ```
    """

    def __init__(
        self,
        layer_names,
        probe,
        percentiles=(15, 50, 85),
        every_n_batches=100,
        units=None,
        tensor="output",
        training=True,
        log_dir=None,
        record_final=True,
    ):
        super().__init__()
        names = [layer_names] if isinstance(layer_names, str) else layer_names
        if (
            not isinstance(names, (list, tuple))
            or not names
            or not all(isinstance(n, str) and n for n in names)
            or len(set(names)) != len(names)
        ):
            checks.fail(
                "layer_names",
                layer_names,
                "a layer name or a list of distinct layer names",
                TypeError,
            )
        self.layer_names = list(names)
        if probe is None or np.ndim(probe) < 1 or len(probe) < 1:
            checks.fail(
                "probe", probe, "a batch of inputs of the model (an array)", TypeError
            )
        self.probe = np.asarray(probe)
        self.percentiles = _check_percentiles(percentiles)
        self.every_n_batches = checks.check_int(every_n_batches, "every_n_batches")
        self.units = _check_units(units)
        self.tensor = checks.check_choice(tensor, "tensor", ("output", "input"))
        self.training = bool(training)
        self.log_dir = None if log_dir is None else os.fspath(log_dir)
        self.record_final = bool(record_final)
        self.steps = []
        self.values = {}

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        model = self.model  # syncs the JAX backend's state
        network = model.model if isinstance(model, MultiStepTrainer) else model
        self._probe_model = _probe_model(network, self.layer_names, self.tensor)
        self._forward = compiled_forward(self._probe_model, self.training)
        self._probe_tensor = keras.ops.convert_to_tensor(self.probe)
        self.steps = []
        self._samples = {name: [] for name in self.layer_names}
        self.values = {}
        self._writer = None
        self.start_sampling(self.every_n_batches)
        self._sample()

    def on_steps_end(self, logs=None):
        if self.sample_due():
            self._sample()

    def on_train_end(self, logs=None):
        if self.record_final and self.steps[-1] != self.global_step:
            self._sample()
        if self._writer is not None:
            _summary_writers.release(self.log_dir)
            self._writer = None

    def activations(self):
        """`{layer name: array (values, units)}`: the recorded tensors on the
        probe now, every axis but the last flattened, the chosen units only."""
        self.model  # noqa: B018 - syncs the JAX backend's state
        outputs = self._forward(self._probe_tensor)
        if not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        result = {}
        for name, output in zip(self.layer_names, outputs):
            array = np.asarray(keras.ops.convert_to_numpy(output), "float64")
            array = array.reshape(-1, array.shape[-1])
            if self.units is not None:
                if max(self.units) >= array.shape[-1]:
                    raise ValueError(
                        f"Invalid value for argument units. Layer {name!r} has "
                        f"{array.shape[-1]} units. Received: units={self.units!r}"
                    )
                array = array[:, list(self.units)]
            result[name] = array
        return result

    def records(self):
        """The recorded percentiles as columns of a long table.

        Returns:
            `{"step", "layer", "unit", "percentile", "value"}`, NumPy arrays
            of equal length, one entry per sample, layer, unit and
            percentile: `pandas.DataFrame(callback.records())` is the table.
        """
        columns = {k: [] for k in ("step", "layer", "unit", "percentile", "value")}
        for name in self.layer_names:
            values = self.values.get(name)
            if values is None or values.size == 0:
                continue
            samples, count, width = values.shape
            units = self.units if self.units is not None else range(width)
            grid = np.meshgrid(
                np.asarray(self.steps), np.asarray(self.percentiles),
                np.asarray(list(units)), indexing="ij",
            )  # fmt: skip
            columns["step"].append(grid[0].ravel())
            columns["percentile"].append(grid[1].ravel())
            columns["unit"].append(grid[2].ravel())
            columns["layer"].append(np.full(samples * count * width, name, object))
            columns["value"].append(values.ravel())
        empty = {"step": "int64", "unit": "int64", "layer": object}
        return {
            key: np.concatenate(parts)
            if parts
            else np.zeros(0, empty.get(key, "float64"))
            for key, parts in columns.items()
        }

    def _sample(self):
        activations = self.activations()
        self.steps.append(self.global_step)
        summary = {}
        for name, array in activations.items():
            self._samples[name].append(np.percentile(array, self.percentiles, axis=0))
            self.values[name] = np.stack(self._samples[name])
            if self.log_dir is None:
                continue
            prefix = f"activation_percentiles/{name}"
            if self.units is None:
                pooled = np.percentile(array, self.percentiles)
                for q, value in zip(self.percentiles, pooled):
                    summary[f"{prefix}/p{q:g}"] = float(value)
            else:
                for column, unit in enumerate(self.units):
                    for row, q in enumerate(self.percentiles):
                        value = float(self._samples[name][-1][row, column])
                        summary[f"{prefix}/unit_{unit}/p{q:g}"] = value
            summary[f"{prefix}/values"] = array
        if self.log_dir is not None:
            self._write(summary)

    def _write(self, values):
        if self._writer is None:
            self._writer = _summary_writers.acquire(self.log_dir)
        self._writer.values(values, step=self.global_step)
        self._writer.flush()


def _check_percentiles(percentiles):
    chosen = (percentiles,) if checks.is_real(percentiles) else percentiles
    try:
        chosen = tuple(checks.check_float(q, "percentiles", 0, 100) for q in chosen)
    except (TypeError, ValueError):
        chosen = ()
    if not chosen:
        checks.fail("percentiles", percentiles, "numbers in [0, 100], at least one")
    return chosen


def _check_units(units):
    if units is None:
        return None
    chosen = [units] if checks.is_int(units) else units
    if (
        not isinstance(chosen, (list, tuple))
        or not chosen
        or not all(checks.is_int(u) and u >= 0 for u in chosen)
        or len(set(chosen)) != len(chosen)
    ):
        checks.fail(
            "units", units, "None, a non-negative int or a list of distinct ones"
        )
    return tuple(int(u) for u in chosen)


def _probe_model(model, names, tensor):
    """A model from `model`'s inputs to the named layers' tensors."""
    layers = {layer.name: layer for layer in model.layers}
    missing = [name for name in names if name not in layers]
    if missing:
        raise ValueError(
            f"ActivationPercentiles: no layer named {missing} in model "
            f"{model.name!r}; its layers are {sorted(layers)}. "
            f"Received: layer_names={names}"
        )
    try:
        inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
        tensors = [getattr(layers[name], tensor) for name in names]
    except (AttributeError, ValueError) as error:
        raise ValueError(
            "ActivationPercentiles needs a functional or Sequential model (it "
            "reads the layers' symbolic tensors). Received: model "
            f"{model.name!r} of type {type(model).__name__} ({error})"
        ) from None
    return keras.Model(inputs, tensors, name=f"{model.name}_activations")
