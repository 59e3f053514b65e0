"""`kbn.adaptation`: AdaBN, mixed statistics, test-batch statistics and Tent,
each against NumPy written from the papers."""

import keras
import numpy as np
import pytest
from keras import ops

import kbn
from kbn import adaptation
from kbn.evaluation import Accuracy
from kbn.layers import BatchNorm

EPSILON = 1e-3


def _np(x):
    return ops.convert_to_numpy(x).astype("float64")


def _mlp(norm=BatchNorm, hidden=(5, 4), seed=5):
    """Dense -> batch norm -> ReLU, twice, then Dense logits; every batch
    norm given a gamma and beta that are not 1 and 0."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6,))
    h = inputs
    for units in hidden:
        h = keras.layers.Dense(units, use_bias=False)(h)
        h = norm()(h)
        h = keras.layers.ReLU()(h)
    model = keras.Model(inputs, keras.layers.Dense(3)(h))
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, (BatchNorm, keras.layers.BatchNormalization)):
            size = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, size).astype("float32"))
            layer.beta.assign(rng.normal(0, 0.3, size).astype("float32"))
            layer.moving_mean.assign(rng.normal(0, 1, size).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2, size).astype("float32"))
    return model


def _norms(model):
    return [
        layer
        for layer in model.layers
        if isinstance(layer, (BatchNorm, keras.layers.BatchNormalization))
    ]


def _forward(model, x, statistics="batch", gamma_beta=None):
    """The model in NumPy. `statistics`: "batch" (each batch norm normalizes
    with the batch's mean and biased variance), "moving", or a function
    `(index, batch mean, batch variance, layer) -> (mean, variance)`.

    Returns `(logits, [(inputs, normalized, outputs) of each batch norm])`.
    """
    seen, h, index = [], x.astype("float64"), 0
    for layer in model.layers[1:]:
        if isinstance(layer, keras.layers.Dense):
            h = h @ _np(layer.kernel) + (_np(layer.bias) if layer.use_bias else 0)
        elif isinstance(layer, (BatchNorm, keras.layers.BatchNormalization)):
            mean, variance = h.mean(0), h.var(0)
            if statistics == "moving":
                mean, variance = _np(layer.moving_mean), _np(layer.moving_variance)
            elif callable(statistics):
                mean, variance = statistics(index, mean, variance, layer)
            gamma, beta = _np(layer.gamma), _np(layer.beta)
            if gamma_beta is not None:
                gamma, beta = gamma_beta[index]
            normalized = (h - mean) / np.sqrt(variance + EPSILON)
            inputs, h = h, normalized * gamma + beta
            seen.append((inputs, normalized, h))
            index += 1
        else:
            h = np.maximum(h, 0)
    return h, seen


# --- AdaBN and Schneider's mix ------------------------------------------------


def test_adabn_is_the_statistics_of_the_target_set(rng):
    model = _mlp()
    weights = [_np(w) for w in model.trainable_weights]
    target = rng.normal(1.5, 2.0, size=(40, 6)).astype("float32")

    used = kbn.adapt_batch_norm_statistics(model, target)

    assert used == 40
    # One batch of all 40: each layer's inputs normalized by the target
    # statistics of the layers below, as in AdaBN.
    _, seen = _forward(model, target)
    for layer, (inputs, _, _) in zip(_norms(model), seen):
        np.testing.assert_allclose(_np(layer.moving_mean), inputs.mean(0), atol=1e-5)
        np.testing.assert_allclose(
            _np(layer.moving_variance), inputs.var(0), rtol=1e-5, atol=1e-6
        )
    for before, after in zip(weights, model.trainable_weights):
        np.testing.assert_array_equal(before, _np(after))
    # Inference on the target set now gives its training-mode outputs.
    np.testing.assert_allclose(
        _np(model(target, training=False)), _np(model(target, training=True)),
        rtol=1e-4, atol=1e-5,
    )  # fmt: skip


def test_adabn_on_a_conv_net_reduces_over_batch_height_and_width(rng):
    keras.utils.set_random_seed(3)
    inputs = keras.Input((5, 5, 2))
    conv = keras.layers.Conv2D(3, 3, padding="same", use_bias=False)
    model = keras.Model(inputs, BatchNorm()(conv(inputs)))
    target = rng.uniform(0, 1, size=(7, 5, 5, 2)).astype("float32")
    kbn.adapt_batch_norm_statistics(model, target)
    features = _np(conv(target))
    layer = model.layers[-1]
    np.testing.assert_allclose(
        _np(layer.moving_mean), features.mean((0, 1, 2)), atol=1e-5
    )
    np.testing.assert_allclose(
        _np(layer.moving_variance), features.var((0, 1, 2)), rtol=1e-5
    )


def _batched_reference(model, target, batch_size, unbiased):
    """The average over batches of each layer's batch moments (each batch
    normalized by its own statistics), variances unbiased if asked."""
    sums = None
    for start in range(0, len(target), batch_size):
        _, seen = _forward(model, target[start : start + batch_size])
        moments = []
        for inputs, _, _ in seen:
            m = len(inputs)
            variance = inputs.var(0) * (m / (m - 1) if unbiased else 1.0)
            moments.append((inputs.mean(0), variance))
        sums = moments if sums is None else [
            (a + c, b + d) for (a, b), (c, d) in zip(sums, moments)
        ]  # fmt: skip
    count = len(range(0, len(target), batch_size))
    return [(a / count, b / count) for a, b in sums]


@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize("form", ["array", "list", "generator of tuples"])
def test_adabn_takes_unlabeled_batches(rng, form, unbiased):
    model = _mlp()
    target = rng.normal(-1.0, 3.0, size=(36, 6)).astype("float32")
    expected = _batched_reference(model, target, 12, unbiased)
    batches = [target[i : i + 12] for i in range(0, 36, 12)]
    data = {
        "array": target,
        "list": batches,
        "generator of tuples": ((b,) for b in batches),
    }[form]
    size = 12 if form == "array" else None
    used = kbn.adapt_batch_norm_statistics(
        model, data, batch_size=size, unbiased=unbiased
    )
    assert used == 36
    for layer, (mean, variance) in zip(_norms(model), expected):
        np.testing.assert_allclose(_np(layer.moving_mean), mean, atol=1e-5)
        np.testing.assert_allclose(_np(layer.moving_variance), variance, rtol=1e-5)


def test_adabn_again_and_again_traces_the_model_once(rng, monkeypatch):
    model = _mlp()
    calls = []
    original = model.stateless_call

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "stateless_call", counted)
    for shift in (0.0, 1.0, 2.0):
        target = rng.normal(shift, 1.0, size=(20, 6)).astype("float32")
        kbn.adapt_batch_norm_statistics(model, target)
        mean = _forward(model, target)[1][0][0].mean(0)
        np.testing.assert_allclose(_np(_norms(model)[0].moving_mean), mean, atol=1e-5)
    assert len(calls) == 1
    # A layer whose configuration changed gets a new pass.
    _norms(model)[1].epsilon = 0.1
    kbn.adapt_batch_norm_statistics(model, target)
    assert len(calls) == 2


def test_mixed_statistics_are_schneiders_formula(rng):
    model = _mlp()
    source = [(_np(n.moving_mean), _np(n.moving_variance)) for n in _norms(model)]
    target = rng.normal(1.0, 2.0, size=(12, 6)).astype("float32")

    used = kbn.adapt_batch_norm_statistics(model, target, source_samples=4)

    assert used == 12
    _, seen = _forward(model, target)  # the target statistics, as AdaBN's
    weight = 4 / (4 + 12)
    for layer, (mean_s, var_s), (inputs, _, _) in zip(_norms(model), source, seen):
        np.testing.assert_allclose(
            _np(layer.moving_mean),
            weight * mean_s + (1 - weight) * inputs.mean(0),
            atol=1e-5,
        )
        # The variances averaged as they are: no (mean_s - mean_t)^2 term.
        np.testing.assert_allclose(
            _np(layer.moving_variance),
            weight * var_s + (1 - weight) * inputs.var(0),
            rtol=1e-5,
        )


def test_mix_statistics_is_pure_and_checks_its_arguments():
    source = {"a": (np.array([0.0, 2.0]), np.array([1.0, 4.0]))}
    target = {"a": (np.array([4.0, 2.0]), np.array([3.0, 0.0]))}
    mixed = adaptation.mix_statistics(source, target, 1, 3)
    np.testing.assert_allclose(mixed["a"][0], [3.0, 2.0])
    np.testing.assert_allclose(mixed["a"][1], [2.5, 1.0])
    np.testing.assert_allclose(
        adaptation.mix_statistics(source, target, 0, 3)["a"][1], [3.0, 0.0]
    )
    with pytest.raises(ValueError, match="Received: source_samples=-1"):
        adaptation.mix_statistics(source, target, -1, 3)
    with pytest.raises(ValueError, match="Received: target_samples=0"):
        adaptation.mix_statistics(source, target, 1, 0)
    with pytest.raises(ValueError, match=r"Received: source=\['a'\], target=\['b'\]"):
        adaptation.mix_statistics(source, {"b": target["a"]}, 1, 1)


def test_statistics_read_and_set_on_keras_layers_too():
    model = _mlp(norm=keras.layers.BatchNormalization)
    statistics = adaptation.batch_norm_statistics(model)
    assert list(statistics) == [n.path for n in _norms(model)]
    halved = {k: (m / 2, v / 2) for k, (m, v) in statistics.items()}
    adaptation.set_batch_norm_statistics(model, halved)
    for layer in _norms(model):
        np.testing.assert_allclose(
            _np(layer.moving_variance), halved[layer.path][1], rtol=1e-6
        )
    with pytest.raises(ValueError, match="Received: missing="):
        adaptation.set_batch_norm_statistics(model, {})


@pytest.mark.parametrize(
    "call",
    [
        lambda m: kbn.adapt_batch_norm_statistics(m, np.ones((4, 6), "float32")),
        kbn.use_test_batch_statistics,
    ],
)
def test_keras_layers_are_refused_with_the_conversion_to_use(call):
    model = _mlp(norm=keras.layers.BatchNormalization)
    with pytest.raises(TypeError, match=r"kbn\.convert_batch_norm\(model\)"):
        call(model)


def test_a_model_built_with_keras_batch_normalization_converted_then_adapted(rng):
    keras_model = _mlp(norm=keras.layers.BatchNormalization)
    x = rng.normal(1.0, 2.0, size=(8, 6)).astype("float32")
    source = _np(keras_model(x, training=False))
    source_statistics = {
        i: (_np(n.moving_mean), _np(n.moving_variance))
        for i, n in enumerate(_norms(keras_model))
    }

    model = kbn.convert_batch_norm(keras_model)

    assert all(isinstance(n, BatchNorm) for n in _norms(model))
    np.testing.assert_allclose(_np(model(x, training=False)), source, atol=1e-5)
    # Prediction-time batch norm, then Schneider's mix with N = 8 (weight
    # 8 / (8 + 8) on the statistics carried over from Keras's layers).
    with kbn.use_test_batch_statistics(model):
        np.testing.assert_allclose(
            _np(model(x, training=False)), _forward(model, x)[0], atol=1e-4
        )

    def mixed(index, mean, variance, layer):
        moving_mean, moving_variance = source_statistics[index]
        return (moving_mean + mean) / 2, (moving_variance + variance) / 2

    with kbn.use_test_batch_statistics(model, source_samples=8):
        np.testing.assert_allclose(
            _np(model(x, training=False)), _forward(model, x, mixed)[0], atol=1e-4
        )
    # AdaBN: the statistics of the target set, the original left as it was.
    kbn.adapt_batch_norm_statistics(model, x)
    _, seen = _forward(model, x)
    for layer, (inputs, _, _) in zip(_norms(model), seen):
        np.testing.assert_allclose(_np(layer.moving_mean), inputs.mean(0), atol=1e-5)
        np.testing.assert_allclose(
            _np(layer.moving_variance), inputs.var(0), rtol=1e-5, atol=1e-6
        )
    np.testing.assert_array_equal(_np(keras_model(x, training=False)), source)


@pytest.mark.parametrize(
    "kwargs,received",
    [
        ({"source_samples": -1}, "source_samples=-1"),
        ({"batch_size": 0}, "batch_size=0"),
    ],
)
def test_adabn_bad_arguments(kwargs, received):
    with pytest.raises(ValueError, match=f"Received: {received}"):
        kbn.adapt_batch_norm_statistics(_mlp(), np.ones((4, 6), "float32"), **kwargs)


# --- Prediction-time batch norm -------------------------------------------------


def test_test_batch_statistics_in_inference_and_back(rng):
    model = _mlp()
    x = rng.normal(1.0, 2.0, size=(10, 6)).astype("float32")
    moving = _np(model.predict(x, verbose=0))  # compiled before the switch
    np.testing.assert_allclose(moving, _forward(model, x, "moving")[0], atol=1e-4)
    state = [_np(w) for w in model.weights]

    with kbn.use_test_batch_statistics(model):
        np.testing.assert_allclose(
            _np(model(x, training=False)), _forward(model, x)[0], atol=1e-4
        )
        # predict in batches of 5: each batch its own statistics.
        expected = np.concatenate(
            [_forward(model, x[:5])[0], _forward(model, x[5:])[0]]
        )
        np.testing.assert_allclose(
            model.predict(x, batch_size=5, verbose=0), expected, atol=1e-4
        )
    np.testing.assert_allclose(model.predict(x, verbose=0), moving, atol=1e-6)
    for before, after in zip(state, model.weights):
        np.testing.assert_array_equal(before, _np(after))


def test_test_batch_statistics_mixed_with_the_source(rng):
    model = _mlp()
    x = rng.normal(size=(6, 6)).astype("float32")
    weight = 2 / (2 + 6)

    def mixed(index, mean, variance, layer):
        return (
            weight * _np(layer.moving_mean) + (1 - weight) * mean,
            weight * _np(layer.moving_variance) + (1 - weight) * variance,
        )

    switch = kbn.use_test_batch_statistics(model, source_samples=2)
    np.testing.assert_allclose(
        _np(model(x, training=False)), _forward(model, x, mixed)[0], atol=1e-4
    )
    switch.restore()
    np.testing.assert_allclose(
        _np(model(x)), _forward(model, x, "moving")[0], atol=1e-4
    )


@pytest.mark.parametrize("source_samples", [0, 3])
def test_groups_of_a_batch_are_test_batches_of_their_own(rng, source_samples):
    keras.utils.set_random_seed(3)
    inputs = keras.Input((4, 4, 2))
    conv = keras.layers.Conv2D(3, 3, padding="same", use_bias=False)
    model = keras.Model(inputs, BatchNorm()(conv(inputs)))
    layer = model.layers[-1]
    layer.gamma.assign(np.array([0.5, 1.0, 2.0], "float32"))
    layer.beta.assign(np.array([-1.0, 0.0, 1.0], "float32"))
    x = rng.normal(1.0, 2.0, size=(12, 4, 4, 2)).astype("float32")
    with kbn.use_test_batch_statistics(model, source_samples):
        separately = np.concatenate(
            [_np(model(x[i : i + 4], training=False)) for i in range(0, 12, 4)]
        )
    with kbn.use_test_batch_statistics(model, source_samples, group_size=4):
        grouped = _np(model(x, training=False))
    np.testing.assert_allclose(grouped, separately, atol=1e-5)
    # And in NumPy: each group of 4 images normalized per channel.
    features = _np(conv(x))
    weight = source_samples / (source_samples + 4)
    for i in range(0, 12, 4):
        group = features[i : i + 4]
        mean = weight * _np(layer.moving_mean) + (1 - weight) * group.mean((0, 1, 2))
        variance = weight * _np(layer.moving_variance) + (1 - weight) * group.var(
            (0, 1, 2)
        )
        expected = (group - mean) / np.sqrt(variance + EPSILON) * _np(layer.gamma)
        expected = expected + _np(layer.beta)
        np.testing.assert_allclose(grouped[i : i + 4], expected, atol=1e-4)


def test_the_switch_reaches_frozen_layers_and_compiled_passes(rng):
    model = _mlp()
    model.trainable = False
    x = rng.normal(2.0, 1.0, size=(30, 6)).astype("float32")
    labels = np.arange(30) % 3
    accuracy = Accuracy(model, x, labels)
    before = accuracy()
    batch = _forward(model, x)[0].argmax(-1)
    kbn.use_test_batch_statistics(model)
    # A new Accuracy traces the switched model; the old one's pass is gone.
    assert Accuracy(model, x, labels)() == pytest.approx(np.mean(batch == labels))
    kbn.use_moving_statistics(model)
    assert Accuracy(model, x, labels)() == before


def test_the_switch_refuses_what_it_cannot_switch():
    model = _mlp()
    kbn.use_test_batch_statistics(model)
    with pytest.raises(ValueError, match="is switched already"):
        kbn.use_test_batch_statistics(model)
    kbn.use_moving_statistics(model)
    renorm = _mlp(norm=lambda: BatchNorm(renorm=True))
    with pytest.raises(ValueError, match="uses renorm"):
        kbn.use_test_batch_statistics(renorm)
    with pytest.raises(ValueError, match="Received: source_samples=-2"):
        kbn.use_test_batch_statistics(_mlp(), source_samples=-2)
    keras.utils.set_random_seed(1)
    inputs = keras.Input((3,))
    plain = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    with pytest.raises(ValueError, match="without any"):
        kbn.use_test_batch_statistics(plain)


# --- Tent ---------------------------------------------------------------------


def _entropy_gradients(model, x, gamma_beta=None):
    """Logits and d mean entropy / d (gamma, beta) of each batch norm, by hand.

    With p = softmax(z) and H = -sum(p log p) per row, dH/dz = -p (log p + H);
    back through the Dense and ReLU layers to each batch norm's outputs y =
    gamma * x_hat + beta: dL/dgamma = sum over the batch of dL/dy * x_hat,
    dL/dbeta = sum of dL/dy (x_hat does not depend on gamma or beta).
    """
    logits, seen = _forward(model, x, gamma_beta=gamma_beta)
    shifted = logits - logits.max(1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    p = np.exp(log_p)
    entropy = -(p * log_p).sum(1, keepdims=True)
    grad = -p * (log_p + entropy) / len(x)  # d mean entropy / d logits
    layers = model.layers[1:]
    norms = [i for i, layer in enumerate(layers) if isinstance(layer, BatchNorm)]
    activations = {}
    h = x.astype("float64")
    for i, layer in enumerate(layers):  # every layer's input, forward
        activations[i] = h
        if isinstance(layer, keras.layers.Dense):
            h = h @ _np(layer.kernel) + (_np(layer.bias) if layer.use_bias else 0)
        elif isinstance(layer, BatchNorm):
            h = seen[norms.index(i)][2]
        else:
            h = np.maximum(h, 0)
    gradients = {}
    for i in reversed(range(len(layers))):  # backward
        layer = layers[i]
        if isinstance(layer, keras.layers.Dense):
            grad = grad @ _np(layer.kernel).T
        elif isinstance(layer, BatchNorm):
            k = norms.index(i)
            gradients[k] = ((grad * seen[k][1]).sum(0), grad.sum(0))
            gamma = _np(layer.gamma) if gamma_beta is None else gamma_beta[k][0]
            grad = _back_through_norm(grad * gamma, seen[k])
        else:
            grad = grad * (activations[i] > 0)
    return logits, [gradients[k] for k in range(len(norms))]


def _back_through_norm(grad_normalized, seen):
    """d/d inputs of x_hat = (x - mean) / sqrt(var + eps) with batch moments."""
    inputs, normalized, _ = seen
    m = len(inputs)
    inv = 1 / np.sqrt(inputs.var(0) + EPSILON)
    return (
        inv
        / m
        * (
            m * grad_normalized
            - grad_normalized.sum(0)
            - normalized * (grad_normalized * normalized).sum(0)
        )
    )


def _gamma_beta(model):
    return [(_np(n.gamma), _np(n.beta)) for n in _norms(model)]


def test_tent_step_is_a_gradient_step_on_the_entropy_over_gamma_and_beta(rng):
    model = _mlp()
    others = [
        _np(v) for v in model.weights if "gamma" not in v.path and "beta" not in v.path
    ]
    x = rng.normal(0.5, 1.5, size=(16, 6)).astype("float32")
    x2 = rng.normal(0.5, 1.5, size=(16, 6)).astype("float32")
    rate = 0.5
    tent = kbn.Tent(model, optimizer=keras.optimizers.SGD(rate))

    expected_logits, gradients = _entropy_gradients(model, x)
    start = _gamma_beta(model)
    logits = tent.adapt(x)

    # The predictions are those of the model before the step.
    np.testing.assert_allclose(logits, expected_logits, atol=1e-4)
    stepped = []
    for layer, (gamma, beta), (g_gamma, g_beta) in zip(_norms(model), start, gradients):
        np.testing.assert_allclose(_np(layer.gamma), gamma - rate * g_gamma, atol=1e-5)
        np.testing.assert_allclose(_np(layer.beta), beta - rate * g_beta, atol=1e-5)
        stepped.append((gamma - rate * g_gamma, beta - rate * g_beta))
    # Nothing else changed: kernels, biases, moving statistics.
    after = [
        _np(v) for v in model.weights if "gamma" not in v.path and "beta" not in v.path
    ]
    for before, now in zip(others, after):
        np.testing.assert_array_equal(before, now)

    # Online: the next batch is predicted and adapted by the updated model.
    expected_logits, gradients = _entropy_gradients(model, x2, stepped)
    np.testing.assert_allclose(tent(x2), expected_logits, atol=1e-4)
    for layer, (gamma, _), (g_gamma, _) in zip(_norms(model), stepped, gradients):
        np.testing.assert_allclose(_np(layer.gamma), gamma - rate * g_gamma, atol=1e-5)

    # Reset: the source model, and a fresh optimizer (the same first step).
    tent.reset()
    for layer, (gamma, beta) in zip(_norms(model), start):
        np.testing.assert_array_equal(_np(layer.gamma), gamma)
        np.testing.assert_array_equal(_np(layer.beta), beta)
    tent.adapt(x)
    for layer, (gamma, beta) in zip(_norms(model), stepped):
        np.testing.assert_allclose(_np(layer.gamma), gamma, atol=1e-5)
        np.testing.assert_allclose(_np(layer.beta), beta, atol=1e-5)


def test_tent_defaults_to_adam_at_1e_3(rng):
    model = _mlp()
    x = rng.normal(size=(16, 6)).astype("float32")
    _, gradients = _entropy_gradients(model, x)
    start = _gamma_beta(model)
    tent = kbn.Tent(model)
    assert isinstance(tent.optimizer, keras.optimizers.Adam)
    assert float(_np(tent.optimizer.learning_rate)) == pytest.approx(1e-3)
    tent.adapt(x)
    # Adam's first step: lr * g / (|g| + epsilon / sqrt(1 - beta_2)).
    for layer, (gamma, _), (g_gamma, _) in zip(_norms(model), start, gradients):
        step = 1e-3 * g_gamma / (np.abs(g_gamma) + 1e-7 / np.sqrt(1 - 0.999))
        np.testing.assert_allclose(_np(layer.gamma), gamma - step, atol=2e-6)


def test_tent_uses_test_batch_statistics_in_frozen_layers_too(rng):
    x = rng.normal(size=(16, 6)).astype("float32")
    trainable, frozen = _mlp(), _mlp()
    frozen.trainable = False
    logits = [
        kbn.Tent(m, keras.optimizers.SGD(0.1)).adapt(x) for m in (trainable, frozen)
    ]
    np.testing.assert_allclose(logits[0], logits[1], atol=1e-5)
    for a, b in zip(_norms(trainable), _norms(frozen)):
        np.testing.assert_allclose(_np(a.gamma), _np(b.gamma), atol=1e-6)
    # Its switch is gone once the step is done.
    np.testing.assert_allclose(
        _np(frozen(x)), _forward(frozen, x, "moving")[0], atol=1e-4
    )


def test_tent_works_directly_on_keras_batch_normalization(rng):
    x = rng.normal(size=(16, 6)).astype("float32")
    ours, theirs = _mlp(), _mlp(norm=keras.layers.BatchNormalization)
    logits = [kbn.Tent(m, keras.optimizers.SGD(0.1)).adapt(x) for m in (ours, theirs)]
    np.testing.assert_allclose(logits[0], logits[1], atol=1e-4)
    for a, b in zip(_norms(ours), _norms(theirs)):
        np.testing.assert_allclose(_np(a.beta), _np(b.beta), atol=1e-5)
        np.testing.assert_array_equal(_np(b.moving_mean), _np(a.moving_mean))
    theirs.layers[2].trainable = False
    with pytest.raises(ValueError, match="Received: trainable=False"):
        kbn.Tent(theirs)


def test_tent_needs_batch_norms_and_an_optimizer():
    keras.utils.set_random_seed(1)
    inputs = keras.Input((3,))
    plain = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    with pytest.raises(ValueError, match="Received: model="):
        kbn.Tent(plain)
    with pytest.raises(TypeError, match="Received: optimizer='adam'"):
        kbn.Tent(_mlp(), optimizer="adam")
    used = keras.optimizers.SGD(0.1)
    kbn.Tent(_mlp(), optimizer=used)
    with pytest.raises(ValueError, match="Expected a fresh optimizer"):
        kbn.Tent(_mlp(), optimizer=used)
