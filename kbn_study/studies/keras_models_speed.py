"""Training-step and inference time of `keras.applications` networks: Keras's
batch norm against kbn's, for `recipes/benchmark.py --suite applications`.

`measure` builds each network (`weights=None`: nothing is downloaded) at a
small input size, converts a copy with `kbn.convert_batch_norm` (the same
weights, every `BatchNormalization` a `kbn.layers.BatchNorm`), compiles both
alike and times `train_on_batch` on one batch, interleaved: Keras, kbn, then
kbn, Keras, and so on for `repeats` rounds of `steps` steps each, so that a
burst of load on a shared machine falls on both. Then the same for
`predict_on_batch` of the Keras network, the kbn network and the kbn network
folded by `kbn.fold_batch_norm`. Each round is a row in the format of
`kbn_study.studies.benchmark.measure`; `ratios` turns the medians into
kbn / Keras time per step.

It must not write files or print (the command does).
"""

import time

import keras
import numpy as np

NETWORKS = ("ResNet50", "MobileNetV2")
IMAGE_SIZE = 64
BATCH_SIZE = 32
LAYERS = {"Keras": "Keras BatchNormalization", "kbn": "kbn BatchNorm"}


def measurement_name(network, kind, layer):
    """The row name: `"ResNet50 training step, kbn BatchNorm"`."""
    return f"{network} {kind}, {layer}"


def _networks(name):
    """`{"Keras": model, "kbn": model}`: the same weights, compiled alike."""
    import kbn

    original = getattr(keras.applications, name)(
        weights=None, input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3), classes=10
    )
    models = {"Keras": original, "kbn": kbn.convert_batch_norm(original)}
    for model in models.values():
        model.compile(
            optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
            loss=keras.losses.SparseCategoricalCrossentropy(),
        )
    return models


def _interleaved(functions, repeats, steps):
    """Calls per second of each function, one value per round:
    `{name: [...]}`; the order of the functions is reversed every other
    round."""
    speeds = {name: [] for name in functions}
    names = list(functions)
    for repeat in range(repeats):
        for name in names if repeat % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            for _ in range(steps):
                result = functions[name]()
            np.asarray(result)  # wait for asynchronous dispatch
            speeds[name].append(steps / (time.perf_counter() - start))
    return speeds


def measure(networks=NETWORKS, repeats=5, steps=3):
    """Rows of `repeats` rounds of every network's measurements."""
    rows = []
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH_SIZE, IMAGE_SIZE, IMAGE_SIZE, 3)).astype("float32")
    y = rng.integers(0, 10, size=BATCH_SIZE)
    for network in networks:
        import kbn

        keras.backend.clear_session()
        models = _networks(network)
        for model in models.values():  # compiles, outside the timing
            for _ in range(2):
                model.train_on_batch(x, y)
        training = _interleaved(
            {k: (lambda m=m: m.train_on_batch(x, y)) for k, m in models.items()},
            repeats,
            steps,
        )
        models["kbn folded"] = kbn.fold_batch_norm(models["kbn"])
        for model in models.values():
            model.predict_on_batch(x)
        inference = _interleaved(
            {k: (lambda m=m: m.predict_on_batch(x)) for k, m in models.items()},
            repeats,
            steps,
        )
        for kind, speeds, unit in (
            ("training step", training, f"training batches of {BATCH_SIZE}/s"),
            ("inference", inference, f"inference calls ({BATCH_SIZE} images)/s"),
        ):
            for layer, values in speeds.items():
                name = LAYERS.get(layer, "kbn BatchNorm folded")
                rows += [
                    {
                        "backend": keras.backend.backend(),
                        "measurement": measurement_name(network, kind, name),
                        "repeat": repeat,
                        "steps_per_second": value,
                        "unit": unit,
                    }
                    for repeat, value in enumerate(values)
                ]
    return rows


def ratios(speed, backends):
    """kbn / Keras time per training step and per inference call, and
    folded / unfolded inference time, per backend and network.

    Args:
        speed: Series of median calls/s indexed by (backend, measurement).
        backends: The backends measured.
    """
    rows = []
    for b in backends:
        for network in NETWORKS:
            for kind, goal in (("training step", "<= 1.05"), ("inference", "<= 1.05")):
                keras_speed = speed.get(
                    (b, measurement_name(network, kind, LAYERS["Keras"]))
                )
                kbn_speed = speed.get(
                    (b, measurement_name(network, kind, LAYERS["kbn"]))
                )
                if keras_speed and kbn_speed:
                    rows.append(
                        {
                            "ratio": f"{network} {kind}: kbn / Keras time",
                            "backend": b,
                            "value": keras_speed / kbn_speed,
                            "goal": goal,
                        }
                    )
            folded = speed.get(
                (b, measurement_name(network, "inference", "kbn BatchNorm folded"))
            )
            kbn_speed = speed.get(
                (b, measurement_name(network, "inference", LAYERS["kbn"]))
            )
            if folded and kbn_speed:
                rows.append(
                    {
                        "ratio": f"{network} inference: folded / unfolded time",
                        "backend": b,
                        "value": kbn_speed / folded,
                        "goal": "(measured)",
                    }
                )
    return rows
