"""The three examples of docs/subclassing.md, run as printed there.

Each is held to a NumPy reference (`tests/reference.py`) under every option
it supports, in training over several steps and in inference, and refused
under the options it does not support; then trained with `fit`, saved and
loaded, folded, and given population statistics.
"""

import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
from keras import ops

import kbn
from kbn.layers import BatchNorm
from tests import reference

DOC = os.path.join(os.path.dirname(os.path.dirname(__file__)), "docs", "subclassing.md")


def example_source(name):
    """The code of the doc's `name` example."""
    text = open(DOC).read()
    block = re.search(
        rf"<!-- example: {name} -->\s*```python\n(.*?)```\s*<!-- end example -->",
        text,
        re.S,
    )
    assert block, f"docs/subclassing.md lost its {name!r} example"
    return block.group(1)


def example_class(name):
    """Executes the doc's `name` example; returns the class it defines."""
    namespace = {}
    exec(compile(example_source(name), DOC, "exec"), namespace)
    (cls,) = [
        value
        for value in namespace.values()
        if isinstance(value, type)
        and issubclass(value, BatchNorm)
        and value is not BatchNorm
    ]
    return cls


# name: (NumPy maths, options it refuses)
EXAMPLES = {
    "mean_only": (
        {"normalize": reference.mean_only_normalize},
        {"renorm"},
    ),
    "l1": (
        {"moments": reference.l1_moments},
        {"unbiased"}
        | ({"synchronized"} if keras.backend.backend() == "tensorflow" else set()),
    ),
    "debiased": (
        {"update": reference.debiased_ema_update},
        {"momentum_none"},
    ),
}

RENORM = {"rmax": 1.5, "rmin": 0.7, "dmax": 0.4}

# name: (input shape, mask?, layer options)
OPTIONS = {
    "dense": ((16, 5), False, {"axis": -1}),
    "sequence_mask": ((8, 6, 3), True, {"axis": -1}),
    "conv_channels_first": ((8, 3, 4, 5), False, {"axis": 1}),
    "ghost": ((16, 5), False, {"axis": -1, "virtual_batch_size": 4}),
    "ghost_conv": ((8, 3, 3, 2), False, {"axis": -1, "virtual_batch_size": 2}),
    "ghost_mask_unbiased": (
        (8, 6, 3),
        True,
        {"axis": -1, "virtual_batch_size": 2, "unbiased_variance": True},
    ),
    "unbiased": ((16, 5), False, {"axis": -1, "unbiased_variance": True}),
    "momentum_none": ((16, 5), False, {"axis": -1, "momentum": None}),
    "renorm": (
        (16, 5),
        False,
        {
            "axis": -1,
            "renorm": True,
            "renorm_clipping": RENORM,
            "renorm_momentum": 0.7,
        },
    ),
    "renorm_ghost": (
        (16, 5),
        False,
        {"axis": -1, "renorm": True, "virtual_batch_size": 8, "renorm_momentum": 0.6},
    ),
    "center_off_scale_flipped": ((16, 5), False, {"axis": -1, "center": False}),
    "batch_statistics_always": (
        (16, 5),
        False,
        {"axis": -1, "track_running_stats": False},
    ),
    "synchronized": ((16, 5), False, {"axis": -1, "synchronized": True}),
}

# Which refused set an option falls under.
FAMILY = {
    "unbiased": "unbiased",
    "ghost_mask_unbiased": "unbiased",
    "momentum_none": "momentum_none",
    "renorm": "renorm",
    "renorm_ghost": "renorm",
    "synchronized": "synchronized",
}

SUPPORTED = [
    (example, option)
    for example, (_, refused) in EXAMPLES.items()
    for option in OPTIONS
    if FAMILY.get(option) not in refused
]
REFUSED = [
    (example, option)
    for example, (_, refused) in EXAMPLES.items()
    for option in OPTIONS
    if FAMILY.get(option) in refused
]


def _batches(rng, shape, axis, steps):
    """Batches whose features have different means and spreads."""
    features = [shape[a] for a in np.atleast_1d(axis) % len(shape)]
    feature_shape = [1] * len(shape)
    for a, size in zip(np.atleast_1d(axis) % len(shape), features):
        feature_shape[a] = size
    batches = []
    for step in range(steps):
        means = rng.uniform(-5, 5, size=feature_shape) + step
        spreads = rng.uniform(0.5, 4.0, size=feature_shape)
        batches.append((means + spreads * rng.normal(size=shape)).astype("float32"))
    return batches


def _mask(rng, shape):
    mask = rng.uniform(size=shape[:-1]) > 0.3
    mask[:, :2] = True  # at least two values per virtual batch
    return mask


def _layer_and_reference(cls, maths, shape, options, rng):
    layer = cls(**options)
    layer.build(shape)
    feature_shape = (
        tuple(layer.moving_mean.shape)
        if layer.moving_mean is not None
        else (tuple(shape[a] for a in layer.feature_axes))
    )
    gamma = beta = None
    if layer.gamma is not None:
        gamma = rng.uniform(0.5, 1.5, size=feature_shape)
        layer.gamma.assign(gamma)
    if layer.beta is not None:
        beta = rng.normal(size=feature_shape)
        layer.beta.assign(beta)
    ref = reference.BatchNormReference(
        feature_shape,
        momentum=layer.momentum,
        epsilon=layer.epsilon,
        gamma=gamma,
        beta=beta,
        **{
            k: v
            for k, v in options.items()
            if k not in ("synchronized", "center", "scale", "momentum")  # set below
        },
        **maths,
    )
    return layer, ref


def _np(x):
    return ops.convert_to_numpy(x).astype("float64")


@pytest.mark.parametrize(
    "example,option", SUPPORTED, ids=[f"{e}-{o}" for e, o in SUPPORTED]
)
def test_matches_numpy_under_every_supported_option(rng, example, option):
    maths, _ = EXAMPLES[example]
    shape, masked, options = OPTIONS[option]
    options = {"momentum": 0.8, **options}
    if option == "center_off_scale_flipped":
        options["scale"] = example == "mean_only"  # the example's default, flipped
    layer, ref = _layer_and_reference(
        example_class(example), maths, shape, options, rng
    )
    batches = _batches(rng, shape, options["axis"], steps=4)
    scale = max(float(np.abs(b).max()) for b in batches)
    for x in batches:
        mask = _mask(rng, shape) if masked else None
        expected = ref.train(x, mask=mask)
        actual = _np(layer(x, training=True, mask=mask))
        if mask is not None:  # masked positions carry no meaning
            actual, expected = actual[mask], expected[mask]
        reference.assert_close(actual, expected, scale)
        if layer.track_running_stats:
            reference.assert_close(layer.moving_mean, ref.state["moving_mean"], scale)
            reference.assert_close(
                layer.moving_variance, ref.state["moving_variance"], scale**2
            )
        if layer.renorm:
            for name in ("moving_stddev", "renorm_mean", "renorm_stddev"):
                reference.assert_close(getattr(layer, name), ref.state[name], scale)
        if layer.momentum is None:
            assert float(_np(layer.num_batches)) == ref.state["num_batches"]
        if hasattr(layer, "num_updates"):
            assert float(_np(layer.num_updates)) == ref.state.get("num_updates", 0)
    x = batches[0] + 1.0
    reference.assert_close(layer(x, training=False), ref.infer(x), scale)


@pytest.mark.parametrize(
    "example,option", REFUSED, ids=[f"{e}-{o}" for e, o in REFUSED]
)
def test_refuses_the_options_it_cannot_honour(example, option):
    cls = example_class(example)
    shape, _, options = OPTIONS[option]
    if option == "momentum_none":
        with pytest.raises(ValueError, match=re.escape("Received: momentum=None")):
            cls(**options)
        return
    layer = cls(name=f"my_{example}", **options)
    received = {
        "unbiased": "unbiased_variance=True",
        "renorm": "renorm=True",
        "synchronized": "synchronized=True",
    }[FAMILY[option]]
    with pytest.raises(ValueError, match=re.escape(f"Received: {received}")) as error:
        layer.build(shape)
    message = str(error.value)
    assert cls.__name__ in message and f"'my_{example}'" in message


def test_debiased_refuses_momentum_one():
    with pytest.raises(ValueError, match=re.escape("Received: momentum=1.0")):
        example_class("debiased")(momentum=1.0)


def test_debiased_starts_from_the_first_batch(rng):
    """The point of the example: no pull towards the initializer."""
    layer = example_class("debiased")(momentum=0.99)
    x = rng.normal(7.0, 3.0, size=(64, 4)).astype("float32")
    layer(x, training=True)
    reference.assert_close(layer.moving_mean, x.mean(0), 10.0)
    plain = BatchNorm(momentum=0.99)
    plain(x, training=True)
    assert np.all(np.abs(_np(plain.moving_mean) - x.mean(0)) > 0.9 * np.abs(x.mean(0)))


def _model(cls, rng, **options):
    keras.utils.set_random_seed(3)
    inputs = keras.Input((6,))
    h = keras.layers.Dense(5, use_bias=False)(inputs)
    h = cls(name="example_bn", **options)(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.Dense(5)(h)
    h = cls(name="example_bn_2", **options)(h)
    return keras.Model(inputs, keras.layers.Dense(2)(h))


@pytest.mark.parametrize("example", list(EXAMPLES))
def test_fits_and_round_trips_a_keras_file(rng, tmp_path, example):
    cls = example_class(example)
    model = _model(cls, rng, momentum=0.9)
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    x = rng.normal(1.0, 2.0, size=(48, 6)).astype("float32")
    y = rng.normal(size=(48, 2)).astype("float32")
    history = model.fit(x, y, batch_size=8, epochs=3, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < losses[0]
    path = tmp_path / f"{example}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.get_layer("example_bn")).__name__ == cls.__name__
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(_np(a), _np(b))
    np.testing.assert_array_equal(_np(loaded(x)), _np(model(x)))


LOAD_SCRIPT = """
import importlib, json, sys
import numpy as np, keras, kbn
if sys.argv[3] == "import":
    importlib.import_module("my_layers")  # registers the subclass
try:
    model = keras.saving.load_model(sys.argv[1])
except Exception as error:
    print("ERROR", " ".join(str(error).split()))
else:
    print(json.dumps(keras.ops.convert_to_numpy(model(np.load(sys.argv[2]))).tolist()))
"""


@pytest.mark.slow  # two processes
def test_a_new_process_loads_a_subclass_once_it_imports_it(rng, tmp_path):
    """As docs/subclassing.md says: a process that loads a saved model with a
    subclass must import (register) the subclass first."""
    (tmp_path / "my_layers.py").write_text(example_source("mean_only"))
    cls = example_class("mean_only")
    model = _model(cls, rng, momentum=0.9)
    x = rng.normal(1.0, 2.0, size=(8, 6)).astype("float32")
    model(x, training=True)
    model.save(tmp_path / "model.keras")
    np.save(tmp_path / "x.npy", x)
    outputs = {}
    for mode in ("no-import", "import"):
        result = subprocess.run(
            [
                sys.executable, "-c", LOAD_SCRIPT, str(tmp_path / "model.keras"),
                str(tmp_path / "x.npy"), mode,
            ],
            capture_output=True, text=True, cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(tmp_path)},
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        outputs[mode] = result.stdout.strip().splitlines()[-1]
    assert outputs["no-import"].startswith("ERROR")
    assert "Could not locate class 'MeanOnlyBatchNorm'" in outputs["no-import"]
    np.testing.assert_array_equal(
        np.array(json.loads(outputs["import"]), "float32"), _np(model(x))
    )


@pytest.mark.parametrize("example", list(EXAMPLES))
def test_folding_equals_the_unfolded_model(rng, example):
    model = _model(example_class(example), rng, momentum=0.7)
    x = rng.normal(1.0, 2.0, size=(32, 6)).astype("float32")
    for start in range(0, 32, 8):  # moving statistics away from their start
        model(x[start : start + 8], training=True)
    folded = kbn.fold_batch_norm(model)
    assert len(folded.layers) == len(model.layers) - 2
    expected = _np(model(x, training=False))
    reference.assert_close(folded(x), expected, float(np.abs(expected).max()))


MATHS = {
    "mean_only": (reference.masked_moments, reference.mean_only_normalize),
    "l1": (reference.l1_moments, reference.standard_normalize),
    "debiased": (reference.masked_moments, reference.standard_normalize),
}


def _numpy_training_pass(model, x, moments, normalize):
    """The inputs each batch norm sees in a training-mode pass, in NumPy."""
    seen, h = [], x.astype("float64")
    for layer in model.layers[1:]:
        if isinstance(layer, keras.layers.Dense):
            h = h @ _np(layer.kernel) + (_np(layer.bias) if layer.use_bias else 0)
        elif isinstance(layer, BatchNorm):
            seen.append(h)
            mean, variance = moments(h, [0])
            gamma = None if layer.gamma is None else _np(layer.gamma)
            beta = None if layer.beta is None else _np(layer.beta)
            h = normalize(h, mean, variance, gamma, beta, layer.epsilon)
        else:
            h = np.maximum(h, 0)
    return seen


@pytest.mark.parametrize("example", list(EXAMPLES))
def test_population_statistics_match_numpy(rng, example):
    moments, normalize = MATHS[example]
    unbiased = example != "l1"
    model = _model(example_class(example), rng, momentum=0.9)
    x = rng.normal(2.0, 3.0, size=(40, 6)).astype("float32")
    for start in range(0, 40, 10):
        model(x[start : start + 10], training=True)
    before = {id(v): _np(v) for v in model.weights}
    assert (
        kbn.recompute_batch_norm_statistics(model, x, batch_size=10, unbiased=unbiased)
        == 4
    )
    norms = [layer for layer in model.layers if isinstance(layer, BatchNorm)]
    passes = [
        _numpy_training_pass(model, x[i : i + 10], moments, normalize)
        for i in range(0, 40, 10)
    ]
    for index, norm in enumerate(norms):
        stats = [moments(batch[index], [0]) for batch in passes]
        correction = 10 / 9 if unbiased else 1.0
        reference.assert_close(
            norm.moving_mean, np.mean([m for m, _ in stats], 0), 10.0
        )
        reference.assert_close(
            norm.moving_variance,
            correction * np.mean([v for _, v in stats], 0),
            100.0,
        )
    changed = {"moving_mean", "moving_variance"}
    for variable in model.weights:
        if variable.name not in changed:
            np.testing.assert_array_equal(_np(variable), before[id(variable)])


def test_l1_population_statistics_refuse_bessel(rng):
    model = _model(example_class("l1"), rng)
    model(np.ones((4, 6), "float32"))
    with pytest.raises(ValueError, match="Received: unbiased=True") as error:
        kbn.recompute_batch_norm_statistics(model, np.ones((8, 6), "float32"))
    assert "L1BatchNorm layer 'example_bn'" in str(error.value)


@pytest.mark.filterwarnings("ignore:.*one value per feature")
@pytest.mark.parametrize("masked", [False, True], ids=["batch_of_one", "fully_masked"])
def test_debiased_state_is_left_alone_by_a_one_value_batch(rng, masked):
    """The layer undoes the subclass's own counter too, not only its statistics."""
    layer = example_class("debiased")(momentum=0.9)
    layer(rng.normal(size=(8, 4, 3)).astype("float32"), training=True)
    before = [_np(v) for v in layer.non_trainable_weights]
    if masked:
        x, mask = rng.normal(size=(8, 4, 3)), np.zeros((8, 4), bool)
    else:
        x, mask = rng.normal(size=(1, 1, 3)), None
    layer(x.astype("float32"), training=True, mask=mask)
    assert [w.name for w in layer.non_trainable_weights][-1] == "num_updates"
    for a, b in zip(before, layer.non_trainable_weights):
        np.testing.assert_array_equal(a, _np(b))
