"""`kbn.convert_batch_norm` and `kbn.layers.convert_to_keras_batch_norm`.

Small functional and Sequential models check every guarantee in seconds:
nested models, a layer shared between branches, frozen layers, options,
state carried over, the way back, and each refusal with its message.
ResNet50 and MobileNetV2 from `keras.applications` (`weights=None`) check
the same on real architectures; they are marked slow (on JAX, building one
compiles a random initializer per kernel shape, about 20 s each on 2 cores).

Two tolerances recur. Inference: kbn's layer subtracts the moving mean
before it scales (so that its float32 error does not grow with |mean| /
spread) where Keras's scales and shifts, so the two differ by rounding; the
outputs agree to 1e-6 of the largest output. Training mode: the difference
is held to the network's own float32 noise, the change of the original's
outputs when its inputs move by one rounding step (deep networks normalize
small batches, which amplifies any rounding).
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
from kbn.layers import convert_to_keras_batch_norm

DOC = os.path.join(os.path.dirname(os.path.dirname(__file__)), "docs", "subclassing.md")


def _np(x):
    return np.asarray(ops.convert_to_numpy(x))


def _norms(model, kind=(keras.layers.BatchNormalization, BatchNorm)):
    return [layer for layer in model._flatten_layers() if isinstance(layer, kind)]


def _randomize(model, rng):
    """Statistics and affine weights of a trained network (not 0, 1, 1, 0)."""
    for layer in _norms(model):
        width = layer.moving_mean.shape[0]
        layer.moving_mean.assign(rng.normal(0.0, 0.5, width))
        layer.moving_variance.assign(rng.uniform(0.5, 2.0, width))
        if layer.gamma is not None:
            layer.gamma.assign(rng.uniform(0.5, 1.5, width))
        if layer.beta is not None:
            layer.beta.assign(rng.normal(0.0, 0.2, width))


def assert_same_inference(actual, expected):
    actual, expected = _np(actual), _np(expected)
    assert actual.shape == expected.shape
    scale = np.max(np.abs(expected))
    assert np.max(np.abs(actual - expected)) <= 1e-6 * scale


def _training_outputs(model, x):
    """Training-mode outputs, the model's state left as it was."""
    saved = model.get_weights()
    outputs = _np(model(x, training=True))
    model.set_weights(saved)
    return outputs


def assert_training_within_noise(converted, original, x):
    expected = _training_outputs(original, x)
    nudged = (x * np.float32(1 + 2**-23)).astype("float32")
    noise = np.max(np.abs(_training_outputs(original, nudged) - expected))
    difference = np.max(np.abs(_training_outputs(converted, x) - expected))
    assert difference <= 4 * noise + 1e-6 * np.max(np.abs(expected))


LOAD_SCRIPT = """
import sys, json
import numpy as np
import keras
import kbn  # registers kbn's layers; no custom_objects needed
model = keras.saving.load_model(sys.argv[1])
x = np.load(sys.argv[2])
print(json.dumps(keras.ops.convert_to_numpy(model(x, training=False)).tolist()))
"""


def assert_loads_in_a_new_process(model, x, tmp_path):
    path = tmp_path / "converted.keras"
    model.save(path)
    np.save(tmp_path / "x.npy", x)
    out = subprocess.run(
        [sys.executable, "-c", LOAD_SCRIPT, str(path), str(tmp_path / "x.npy")],
        capture_output=True,
        text=True,
        check=True,
    )
    loaded = np.array(json.loads(out.stdout.strip().splitlines()[-1]), "float32")
    np.testing.assert_array_equal(loaded, _np(model(x, training=False)))


def _fit(model, x, rng, steps=2):
    """`steps` steps of `fit`, towards targets drawn from a generator seeded
    by `rng` (the same for every model given the same seed)."""
    model.compile(optimizer=keras.optimizers.SGD(1e-3), loss="mse")
    shape = (len(x), *model.output.shape[1:])
    y = np.random.default_rng(rng.integers(1 << 30)).normal(size=shape)
    history = model.fit(
        x, y, batch_size=len(x) // steps, epochs=1, shuffle=False, verbose=0
    )
    assert np.isfinite(history.history["loss"][-1])


# --- Small models ------------------------------------------------------------


def nested_model():
    """A functional model holding a functional backbone (which holds a
    Sequential block and a frozen batch norm), a batch norm shared by two
    branches, and an operation of `keras.ops` (as `x + y` makes)."""
    image = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(image)
    h = keras.layers.BatchNormalization(name="stem_bn")(h)
    h = keras.layers.ReLU()(h)
    block = keras.Sequential(
        [
            keras.Input((8, 8, 4)),
            keras.layers.Conv2D(4, 1, use_bias=False),
            keras.layers.BatchNormalization(momentum=0.9, name="block_bn"),
        ],
        name="block",
    )
    backbone = keras.Model(image, block(h), name="backbone")
    backbone.get_layer("stem_bn").trainable = False

    inputs = keras.Input((8, 8, 3))
    features = backbone(inputs)
    shared = keras.layers.BatchNormalization(epsilon=1e-2, name="shared_bn")
    left = shared(keras.layers.Conv2D(4, 1, name="left")(features))
    right = shared(keras.layers.Conv2D(4, 3, padding="same", name="right")(features))
    h = keras.layers.GlobalAveragePooling2D()(left + right)  # an operation
    outputs = keras.layers.Dense(3, name="head")(h)
    return keras.Model(inputs, outputs, name="nested")


@pytest.fixture
def nested(rng):
    model = nested_model()
    _randomize(model, rng)
    return model


@pytest.fixture
def images(rng):
    return rng.normal(0.5, 2.0, size=(8, 8, 8, 3)).astype("float32")


def _pairs(original, converted):
    """(original, converted) for every layer, matched by name, nested too."""
    pairs = []
    for layer in original.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue  # clone_model names new inputs after their tensors
        twin = converted.get_layer(layer.name)
        pairs.append((layer, twin))
        if isinstance(layer, keras.Model):
            pairs.extend(_pairs(layer, twin))
    return pairs


def test_every_batch_norm_is_replaced_in_nested_models_and_shared_layers(nested):
    before = [_np(w).copy() for w in nested.weights]
    converted = kbn.convert_batch_norm(nested)
    assert converted is not nested
    assert not _norms(converted, keras.layers.BatchNormalization)
    assert [n.name for n in _norms(converted, BatchNorm)] == [
        n.name for n in _norms(nested)
    ]
    block = converted.get_layer("backbone").get_layer("block")
    assert isinstance(block, keras.Sequential)
    shared = converted.get_layer("shared_bn")
    assert isinstance(shared, BatchNorm) and len(shared._inbound_nodes) == 2
    for branch in ("left", "right"):
        (node,) = converted.get_layer(branch)._outbound_nodes
        assert node.operation is shared
    # The original is untouched and shares nothing with the copy.
    assert len(_norms(nested, keras.layers.BatchNormalization)) == 3
    assert not {id(v) for v in nested.weights} & {id(v) for v in converted.weights}
    for value, weight in zip(before, nested.weights):
        np.testing.assert_array_equal(_np(weight), value)


def test_weights_statistics_and_trainable_flags_are_carried(nested):
    nested.get_layer("backbone").get_layer("block").trainable = False
    converted = kbn.convert_batch_norm(nested)
    for original, twin in _pairs(nested, converted):
        assert twin.trainable == original.trainable, original.name
        if isinstance(original, keras.Model):
            continue
        twins = {w.name: w for w in twin.weights}
        for weight in original.weights:
            np.testing.assert_array_equal(_np(twins[weight.name]), _np(weight))
    assert not converted.get_layer("backbone").get_layer("stem_bn").trainable
    assert len(converted.trainable_weights) == len(nested.trainable_weights)
    assert len(converted.weights) == len(nested.weights)


def test_frozen_model_stays_frozen_with_a_layer_thawed_inside(nested):
    backbone = nested.get_layer("backbone")
    backbone.trainable = False
    backbone.get_layer("block").trainable = True  # the model's flag wins
    converted = kbn.convert_batch_norm(nested)
    for original, twin in _pairs(nested, converted):
        assert twin.trainable == original.trainable, original.name
    assert len(converted.trainable_weights) == len(nested.trainable_weights)


def test_outputs_fit_fold_way_back_and_a_new_process(nested, images, rng, tmp_path):
    converted = kbn.convert_batch_norm(nested)
    assert_same_inference(converted(images), nested(images))
    assert_training_within_noise(converted, nested, images)
    back = convert_to_keras_batch_norm(converted)
    assert not _norms(back, BatchNorm)
    np.testing.assert_array_equal(_np(back(images)), _np(nested(images)))

    moving = _np(converted.get_layer("shared_bn").moving_mean).copy()
    _fit(converted, images, rng)
    assert not np.array_equal(_np(converted.get_layer("shared_bn").moving_mean), moving)
    assert_same_inference(kbn.fold_batch_norm(converted)(images), converted(images))
    back = convert_to_keras_batch_norm(converted)
    assert_same_inference(back(images), converted(images))
    assert_loads_in_a_new_process(converted, images, tmp_path)


def test_sequential_model(rng):
    model = keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(6),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(2),
        ]
    )
    _randomize(model, rng)
    converted = kbn.convert_batch_norm(model, momentum=0.5)
    assert isinstance(converted, keras.Sequential)
    assert isinstance(converted.layers[1], BatchNorm)
    assert converted.layers[1].momentum == 0.5
    x = rng.normal(size=(6, 5)).astype("float32")
    assert_same_inference(converted(x), model(x))
    back = convert_to_keras_batch_norm(converted)
    assert isinstance(back, keras.Sequential)
    assert back.layers[1].momentum == 0.5
    assert_same_inference(back(x), model(x))


def test_dtype_policy_is_kept(rng):
    inputs = keras.Input((5,))
    norm = keras.layers.BatchNormalization(dtype="mixed_float16")
    model = keras.Model(inputs, norm(inputs))
    _randomize(model, rng)
    converted = kbn.convert_batch_norm(model)
    assert converted.layers[1].dtype_policy.name == "mixed_float16"
    x = rng.normal(size=(4, 5)).astype("float32")
    np.testing.assert_allclose(
        _np(converted(x)).astype("float32"), _np(model(x)).astype("float32"), 1e-3
    )


# --- Options and the state they need -----------------------------------------


def test_options_reach_every_layer(nested, images):
    converted = kbn.convert_batch_norm(nested, virtual_batch_size=2)
    assert {n.virtual_batch_size for n in _norms(converted)} == {2}
    assert converted.get_layer("shared_bn").epsilon == 1e-2  # the layer's own
    assert_same_inference(converted(images), nested(images))
    converted(images, training=True)  # ghost batches of 2


def test_renorm_starts_from_the_moving_statistics(nested, images):
    converted = kbn.convert_batch_norm(nested, renorm=True)
    for original, twin in zip(_norms(nested), _norms(converted)):
        mean, variance = _np(original.moving_mean), _np(original.moving_variance)
        stddev = np.sqrt(variance + original.epsilon)
        np.testing.assert_array_equal(_np(twin.moving_mean), mean)
        np.testing.assert_array_equal(_np(twin.moving_variance), variance)
        np.testing.assert_array_equal(_np(twin.renorm_mean), mean)
        np.testing.assert_allclose(_np(twin.renorm_stddev), stddev, 1e-6)
        np.testing.assert_allclose(_np(twin.moving_stddev), stddev, 1e-6)
    assert_same_inference(converted(images), nested(images))


def test_momentum_none_counts_the_batches_the_average_spanned(nested, images):
    converted = kbn.convert_batch_norm(nested, momentum=None)
    block = converted.get_layer("backbone").get_layer("block").get_layer("block_bn")
    assert float(_np(block.num_batches)) == pytest.approx(10.0)  # momentum 0.9
    assert float(_np(converted.get_layer("shared_bn").num_batches)) == 100.0
    assert_same_inference(converted(images), nested(images))


def _renorm_model(norm, **options):
    inputs = keras.Input((6, 6, 3))
    outputs = norm(momentum=0.9, renorm_momentum=0.8, name="norm", **options)(inputs)
    return keras.Model(inputs, outputs)


def test_keras_renormalization_is_carried_and_trains_alike(rng):
    clipping = {"rmax": 1.5, "rmin": 0.7, "dmax": 0.3}
    model = _renorm_model(
        keras.layers.BatchNormalization, renorm=True, renorm_clipping=clipping
    )
    batches = rng.normal(2.0, 3.0, size=(5, 16, 6, 6, 3)).astype("float32")
    for x in batches[:2]:  # renorm's statistics away from their start
        model(x, training=True)
    converted = kbn.convert_batch_norm(model)
    norm = converted.get_layer("norm")
    assert norm.renorm and norm.renorm_clipping == clipping
    for weight in model.get_layer("norm").weights:
        np.testing.assert_array_equal(_np(getattr(norm, weight.name)), _np(weight))
    for x in batches[2:]:  # the corrections are clipped, and so the same
        np.testing.assert_allclose(
            _np(converted(x, training=True)),
            _np(model(x, training=True)),
            rtol=1e-5,
            atol=1e-5,
        )
    for weight in model.get_layer("norm").weights:
        np.testing.assert_allclose(
            _np(getattr(norm, weight.name)), _np(weight), rtol=1e-5, atol=1e-6
        )
    back = convert_to_keras_batch_norm(converted).get_layer("norm")
    assert back.renorm and back.renorm_clipping == clipping


def test_clip_limits_go_back_as_a_schedule_left_them(rng):
    model = _renorm_model(BatchNorm, renorm=True, renorm_clipping={"rmax": 1.5})
    model.get_layer("norm").renorm_rmax.assign(2.5)  # relaxed by a schedule
    model.get_layer("norm").renorm_dmax.assign(0.25)
    back = convert_to_keras_batch_norm(model).get_layer("norm")
    assert back.renorm_clipping == {"rmax": 2.5, "dmax": 0.25}


def test_synchronized_is_kept_where_it_acts():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, BatchNorm(synchronized=True)(inputs))
    back = convert_to_keras_batch_norm(model)
    assert back.layers[1].synchronized == (keras.backend.backend() == "tensorflow")


def test_training_only_features_go_back_when_asked(nested, images):
    converted = kbn.convert_batch_norm(
        nested, virtual_batch_size=2, momentum=None, unbiased_variance=True
    )
    for back in (
        convert_to_keras_batch_norm(converted, for_inference=True),
        convert_to_keras_batch_norm(
            converted, virtual_batch_size=None, momentum=0.9, unbiased_variance=False
        ),
    ):
        assert not _norms(back, BatchNorm)
        assert_same_inference(back(images), converted(images))


# --- A subclass of your own, or a factory --------------------------------------


@keras.saving.register_keras_serializable(package="kbn_tests")
class MedianCenteredBatchNorm(BatchNorm):
    """Centers training batches on the median (a hook of its own)."""

    def compute_moments(self, inputs, axes, mask=None):
        mean, variance = super().compute_moments(inputs, axes, mask)
        return mean * 0.5 + ops.median(inputs, axis=tuple(axes)) * 0.5, variance

    def debias_variance(self, variance, count):
        return super().debias_variance(variance, count)


def test_a_subclass_of_your_own(nested, images):
    converted = kbn.convert_batch_norm(nested, layer=MedianCenteredBatchNorm)
    assert {type(n) for n in _norms(converted)} == {MedianCenteredBatchNorm}
    assert_same_inference(converted(images), nested(images))
    converted(images, training=True)
    with pytest.raises(ValueError, match="Received: layer of type MedianCentered"):
        convert_to_keras_batch_norm(converted)
    back = convert_to_keras_batch_norm(converted, for_inference=True)
    assert_same_inference(back(images), converted(images))


def test_a_factory_chooses_per_layer(nested, images):
    def factory(**config):
        if config["name"] == "shared_bn":
            return BatchNorm(**config, virtual_batch_size=4)
        return keras.layers.BatchNormalization(**config)

    converted = kbn.convert_batch_norm(nested, layer=factory)
    assert {n.name: type(n) for n in _norms(converted)} == {
        "stem_bn": keras.layers.BatchNormalization,
        "block_bn": keras.layers.BatchNormalization,
        "shared_bn": BatchNorm,
    }
    assert converted.get_layer("shared_bn").virtual_batch_size == 4
    assert_same_inference(converted(images), nested(images))


# --- Refusals ------------------------------------------------------------------


class Subclassed(keras.Model):
    def __init__(self, norm, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(4)
        self.norm = norm()

    def call(self, inputs):
        return self.norm(self.dense(inputs))


class KerasNormOfYourOwn(keras.layers.BatchNormalization):
    def call(self, inputs, training=None, mask=None):
        return super().call(inputs, training=training, mask=mask) * 2.0


class RescaledBatchNorm(BatchNorm):
    def normalize(self, inputs, mean, variance, gamma, beta):
        return super().normalize(inputs, mean, variance, gamma, beta) * 2.0


def _tiny(norm):
    inputs = keras.Input((4,))
    return keras.Model(inputs, keras.layers.Dense(2)(norm(inputs)))


def _subclassed(norm):
    model = Subclassed(norm, name="mine")
    model(np.ones((2, 3), "float32"))
    return model


def _holding(norm):
    inputs = keras.Input((3,))
    return keras.Model(inputs, _subclassed(norm)(inputs))


@pytest.mark.parametrize(
    "make,convert,error,received",
    [
        (
            lambda: _subclassed(keras.layers.BatchNormalization),
            kbn.convert_batch_norm,
            ValueError,
            "model of type Subclassed",
        ),
        (
            lambda: _subclassed(BatchNorm),
            convert_to_keras_batch_norm,
            ValueError,
            "model of type Subclassed",
        ),
        (
            lambda: _holding(keras.layers.BatchNormalization),
            kbn.convert_batch_norm,
            ValueError,
            "layer of type Subclassed",
        ),
        (
            lambda: _tiny(KerasNormOfYourOwn()),
            kbn.convert_batch_norm,
            ValueError,
            "layer of type KerasNormOfYourOwn",
        ),
        (
            lambda: _tiny(BatchNorm(virtual_batch_size=2)),
            convert_to_keras_batch_norm,
            ValueError,
            "virtual_batch_size=2",
        ),
        (
            lambda: _tiny(BatchNorm(momentum=None)),
            convert_to_keras_batch_norm,
            ValueError,
            "momentum=None",
        ),
        (
            lambda: _tiny(BatchNorm(unbiased_variance=True)),
            convert_to_keras_batch_norm,
            ValueError,
            "unbiased_variance=True",
        ),
        (
            lambda: _tiny(BatchNorm(track_running_stats=False)),
            convert_to_keras_batch_norm,
            ValueError,
            "track_running_stats=False",
        ),
        (
            lambda: _tiny(MedianCenteredBatchNorm()),
            convert_to_keras_batch_norm,
            ValueError,
            "layer of type MedianCenteredBatchNorm",
        ),
        (
            lambda: keras.layers.Dense(2),
            kbn.convert_batch_norm,
            TypeError,
            "model of type Dense",
        ),
    ],
)
def test_refusals_name_what_was_received(make, convert, error, received):
    with pytest.raises(error, match=f"Received: {re.escape(received)}"):
        convert(make())


def test_multi_axis_model_refused_names_the_layer():
    inputs = keras.Input((3, 4))
    model = keras.Model(inputs, BatchNorm(axis=[1, 2], name="grid")(inputs))
    with pytest.raises(ValueError, match="layer 'grid'.*Received: axis=\\[1, 2\\]"):
        convert_to_keras_batch_norm(model)


def test_a_subclass_that_changes_inference_is_refused_even_for_inference():
    model = _tiny(RescaledBatchNorm(name="rescaled"))
    with pytest.raises(ValueError, match="overrides normalize.*Received: layer of"):
        convert_to_keras_batch_norm(model, for_inference=True)


def test_conversion_that_would_drop_a_weight_is_refused(nested):
    with pytest.raises(ValueError, match="Received: gamma missing"):
        kbn.convert_batch_norm(nested, scale=False)
    with pytest.raises(ValueError, match="Received: moving_mean missing"):
        kbn.convert_batch_norm(nested, track_running_stats=False)


def test_bad_layer_and_option_arguments(nested):
    with pytest.raises(TypeError, match="Received: layer=<BatchNorm"):
        kbn.convert_batch_norm(nested, layer=BatchNorm())
    with pytest.raises(TypeError, match="Received: layer=<function"):
        kbn.convert_batch_norm(nested, layer=lambda **config: "a layer")
    with pytest.raises(TypeError, match="Received: ghost=2"):
        convert_to_keras_batch_norm(nested, ghost=2)


# --- docs/subclassing.md, "Your own model" -------------------------------------


def test_the_guide_example_runs_as_printed():
    text = open(DOC).read()
    block = re.search(
        r"<!-- example: your_own_model -->\s*```python\n(.*?)```\s*"
        r"<!-- end example -->",
        text,
        re.S,
    )
    assert block, "docs/subclassing.md lost its 'your_own_model' example"
    namespace = {}
    exec(compile(block.group(1), DOC, "exec"), namespace)
    model, converted, shipped = (
        namespace[name] for name in ("model", "converted", "shipped")
    )
    assert not _norms(shipped, BatchNorm) and _norms(converted, BatchNorm)
    x = namespace["images"]
    assert_same_inference(shipped(x), converted(x))


# --- keras.applications ----------------------------------------------------------

APPLICATIONS = {"ResNet50": 53, "MobileNetV2": 52}


@pytest.fixture(scope="module", params=list(APPLICATIONS))
def application(request):
    """`(original, converted, batch norms)` for one network, built once."""
    name = request.param
    model = getattr(keras.applications, name)(
        weights=None,
        input_shape=(32, 32, 3),
        classes=10,
        classifier_activation=None,
    )
    _randomize(model, np.random.default_rng(0))
    return model, kbn.convert_batch_norm(model), APPLICATIONS[name]


@pytest.fixture
def pictures(rng):
    return rng.normal(size=(8, 32, 32, 3)).astype("float32")


@pytest.mark.slow
def test_application_converts_with_the_same_outputs(application, pictures):
    model, converted, count = application
    assert len(_norms(model)) == count
    assert len(_norms(converted, BatchNorm)) == count
    assert not _norms(converted, keras.layers.BatchNormalization)
    assert_same_inference(converted(pictures), model(pictures))
    assert_training_within_noise(converted, model, pictures)
    back = convert_to_keras_batch_norm(converted)
    np.testing.assert_array_equal(_np(back(pictures)), _np(model(pictures)))


@pytest.mark.slow
def test_application_fits_folds_goes_back_and_loads(
    application, pictures, rng, tmp_path
):
    model, _, _ = application
    converted = kbn.convert_batch_norm(model)  # a copy of its own to train
    _fit(converted, pictures, rng)  # 2 steps of 4
    x = pictures[:4]
    outputs = _np(converted(x))
    assert np.all(np.isfinite(outputs))
    # After two steps of SGD the logits reach 1e6-1e7, and every rounding
    # is amplified: folding (each batch norm's scale multiplied into the
    # kernel before the convolution instead of after it) and Keras's layer
    # (its own order of the same operations, on JAX) round differently at
    # each of 53 layers. Both gaps are held to the float32 noise of the
    # network itself: how far its outputs move when every input moves by
    # one rounding step. Measured on both backends: 0.8 to 2.5 times that
    # noise; a wrong scale or shift is orders of magnitude above it.
    nudged = (x * np.float32(1 + 2**-23)).astype("float32")
    noise = np.max(np.abs(_np(converted(nudged)) - outputs))
    for other in (
        kbn.fold_batch_norm(converted),
        convert_to_keras_batch_norm(converted),
    ):
        gap = np.max(np.abs(_np(other(x)) - outputs))
        assert gap <= 8 * noise, (other.name, gap, noise)
    assert_loads_in_a_new_process(converted, x, tmp_path)
