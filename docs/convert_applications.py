"""`kbn.convert_batch_norm` on every `keras.applications` network with batch norms.

Builds each network (`weights=None`: nothing is downloaded) at a small input
size, converts its `BatchNormalization` layers to kbn's `BatchNorm` and
checks, on the backend of the process:

- inference: the converted network's outputs against the original's, as
  the largest difference relative to the largest output (`inference`), and
  divided by the float32 noise of the original network (`inference /
  noise`), the change of its outputs when its inputs move by one rounding
  step;
- training mode: the same difference, divided by the same noise in
  training mode (`training / noise`);
- `kbn.fold_batch_norm` on the converted network (`folded`: how many batch
  norms it folded; `fold`: the relative difference of the outputs);
- the reverse conversion (`back`: the relative difference from the
  original's outputs; the same layers and weights, so 0);
- `.keras` save and load (`load`: the relative difference);
- with `--fit`, one `fit` step of the converted network.

Run (39 minutes on TensorFlow for all 40 networks, 2 CPU cores beside other
work; the table it gave is docs/convert_applications.md):

    KERAS_BACKEND=tensorflow python docs/convert_applications.py
    KERAS_BACKEND=jax python docs/convert_applications.py --only ResNet50 MobileNetV2

Networks without batch norms (ConvNeXt, VGG) are listed as such.
"""

import argparse
import os
import sys
import tempfile
import time
import traceback

import keras
import numpy as np
from keras import ops

import kbn

# Networks that do not take 32x32 inputs, with the smallest size they take.
SMALLEST_INPUT = {"InceptionV3": 75, "InceptionResNetV2": 75, "Xception": 71}


def applications():
    return [name for name in dir(keras.applications) if name[:1].isupper()]


def check(name, batch_size=4, fit=False):
    """One network's row: a dict of the checks' results."""
    size = SMALLEST_INPUT.get(name, 32)
    start = time.perf_counter()
    model = getattr(keras.applications, name)(
        weights=None,
        input_shape=(size, size, 3),
        classes=10,
        classifier_activation=None,
    )
    norms = [
        layer
        for layer in model._flatten_layers()
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    row = {"network": name, "input": size, "batch norms": len(norms)}
    if not norms:
        return row
    rng = np.random.default_rng(0)
    for layer in norms:  # statistics of a trained network, not 0 and 1
        width = layer.moving_mean.shape[0]
        layer.moving_mean.assign(rng.normal(0.0, 0.5, width))
        layer.moving_variance.assign(rng.uniform(0.5, 2.0, width))
        if layer.gamma is not None:
            layer.gamma.assign(rng.uniform(0.5, 1.5, width))
        if layer.beta is not None:
            layer.beta.assign(rng.normal(0.0, 0.2, width))
    converted = kbn.convert_batch_norm(model)
    row["converted"] = len(kbn.layers.batch_norm_layers(converted))
    x = rng.normal(size=(batch_size, size, size, 3)).astype("float32")

    def outputs(network, inputs=x, training=False):
        return np.asarray(ops.convert_to_numpy(network(inputs, training=training)))

    expected = outputs(model)
    scale = np.max(np.abs(expected))
    nudged = (x * np.float32(1 + 2**-23)).astype("float32")
    difference = np.max(np.abs(outputs(converted) - expected))
    row["inference"] = difference / scale
    noise = np.max(np.abs(outputs(model, nudged) - expected))
    row["inference / noise"] = difference / max(noise, 1e-30)
    back = kbn.layers.convert_to_keras_batch_norm(converted)
    row["back"] = np.max(np.abs(outputs(back) - expected)) / scale
    trained = outputs(model, training=True)
    noise = np.max(np.abs(outputs(model, nudged, training=True) - trained))
    difference = np.max(np.abs(outputs(converted, training=True) - trained))
    row["training / noise"] = difference / max(noise, 1e-30)
    folded = kbn.fold_batch_norm(converted)
    row["folded"] = row["converted"] - len(kbn.layers.batch_norm_layers(folded))
    reference = outputs(converted)
    row["fold"] = np.max(np.abs(outputs(folded) - reference)) / scale
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "converted.keras")
        converted.save(path)
        loaded = keras.saving.load_model(path)
        row["load"] = np.max(np.abs(outputs(loaded) - reference)) / scale
    if fit:
        converted.compile(optimizer="sgd", loss="mse")
        y = np.zeros((batch_size, 10), "float32")
        converted.fit(x, y, batch_size=batch_size, epochs=1, verbose=0)
        row["fit"] = "ok"
    row["seconds"] = time.perf_counter() - start
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", nargs="+", default=None, help="networks to check (default: all)"
    )
    parser.add_argument("--fit", action="store_true", help="also one fit step")
    args = parser.parse_args(argv)
    names = args.only or applications()
    print(f"backend {keras.backend.backend()}, Keras {keras.__version__}")
    failures = 0
    for name in names:
        try:
            row = check(name, fit=args.fit)
        except Exception:  # report and go on to the next network
            failures += 1
            print(f"{name}: FAILED\n{traceback.format_exc()}", flush=True)
            continue
        print(
            "  ".join(
                f"{key}={value:.3g}"
                if isinstance(value, (float, np.floating))
                else f"{key}={value}"
                for key, value in row.items()
            ),
            flush=True,
        )
        keras.backend.clear_session()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
