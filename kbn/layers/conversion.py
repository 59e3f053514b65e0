"""Swapping the batch norms of a built Keras model: Keras's layer for kbn's, and back.

`convert_batch_norm` rebuilds a Sequential or functional model (nested
models and shared layers included) with every
`keras.layers.BatchNormalization` replaced by kbn's `BatchNorm`, or by a
class or factory of the user's; `convert_to_keras_batch_norm` does the
reverse where Keras's layer computes what kbn's did, and refuses, naming the
layer and the option, where it does not. Both rebuild the graph with
`keras.models.clone_model`, copy every other layer with its weights, carry
the batch norms' weights and moving statistics over, keep every `trainable`
flag, and leave the original model untouched.

This module holds the rebuilding and the carrying of state from one layer
to the other, nothing else: no batch-norm maths (`kbn.ops` and the layer's
hooks) and no training. State that the new layer has and the old one had
not (renorm's statistics, the `momentum=None` counter) is derived from the
moving statistics; for a kbn layer through its own
`set_population_statistics`, so that a subclass that keeps state of its own
in step with its moving statistics is asked rather than guessed for.
"""

import contextlib
import inspect
import sys

import keras
import numpy as np
from keras import ops

from kbn.layers.batch_norm import BatchNorm

# The weights that make a batch norm's inference map; a conversion that has
# no place for one of them is refused.
_MAPPED = ("gamma", "beta", "moving_mean", "moving_variance")

# Methods a subclass may define and still compute what its base computes:
# they only set or list the constructor's arguments.
_HARMLESS = {"__init__", "get_config", "from_config"}


def convert_batch_norm(model, layer=None, **options):
    """A copy of `model` with kbn's batch norm in place of Keras's.

    Every `keras.layers.BatchNormalization` of `model` becomes a
    `kbn.layers.BatchNorm` (or what `layer` builds) with the same arguments
    and the `options` given, so that a model you already have (a
    `keras.applications` network, your own functional model) gets kbn's
    features: ghost batches, renorm with scheduled clip limits,
    `momentum=None`, population statistics, folding, a subclass of your
    own. Sequential and functional models are rebuilt with
    `keras.models.clone_model`, nested models (a backbone inside a
    functional model) too, and a layer shared between branches is one shared
    layer in the copy.

    What the copy keeps:

    - the weights and moving statistics of every batch norm (`gamma`,
      `beta`, `moving_mean`, `moving_variance`, and Keras's renorm
      statistics when both layers use renorm), and a copy of every other
      layer with its weights: with the default options, the copy's
      inference outputs are the original's, and its training outputs too,
      to float32 rounding;
    - every `trainable` flag, of layers and nested models, frozen ones
      included;
    - the compile configuration (a fresh optimizer), as `clone_model` does.

    The original model is not changed.

    State that the new layer keeps and Keras's did not is derived from the
    moving statistics. With `renorm=True` (from a layer without renorm):
    `moving_stddev` and `renorm_stddev` are `sqrt(moving_variance +
    epsilon)` and `renorm_mean` is `moving_mean`, so that renorm corrects
    towards the statistics the model was trained with (its first corrections
    are near `r = 1`, `d = 0` on data like the training data) rather than
    towards a fresh layer's 0 and 1. With `momentum=None`: the counter
    `num_batches` starts at `1 / (1 - momentum)` of the replaced layer (100
    for Keras's default 0.99), the number of batches its moving average
    spans, so that the carried statistics weigh as much as that many new
    batches in the cumulative average (`kbn.recompute_batch_norm_statistics`
    replaces them all). A kbn layer receives both through its
    `set_population_statistics`; a subclass's own state is what its
    `set_population_statistics` makes of them, else its initial value.

    Args:
        model: A Sequential or functional `keras.Model`. A subclassed model
            (a `call` written in Python) cannot be rebuilt: build it with
            `kbn.layers.BatchNorm`, or convert its functional parts.
        layer: What replaces each `BatchNormalization`: `None` for
            `kbn.layers.BatchNorm`, a layer class (a subclass of your own),
            or a factory, any callable that takes the layer's arguments as
            keywords and returns a layer (`factory(**config)`; choose per
            layer with `config["name"]`).
        **options: Arguments for every new layer, over those of the layer it
            replaces, e.g. `virtual_batch_size=16`, `renorm=True`,
            `momentum=None`.

    Returns:
        A new model of the same kind, built if `model` was. (As with
        `clone_model`, a functional model of a class of your own comes back
        as that class only if its constructor takes `(inputs, outputs,
        name)`, else as a plain functional model.)

    Raises:
        TypeError: If `model` is not a Keras model, `layer` is not a class
            or factory, or the factory returns something else than a layer.
        ValueError: If the model cannot be rebuilt (a subclassed model, or
            a layer that holds a batch norm in its own code), a batch norm
            is a subclass of Keras's that changes its maths, or a new layer
            has no place for one of the weights of the layer it replaces
            (for example `scale=False` would drop `gamma`); the message
            names the layer.

    Example:

    ```python
    backbone = keras.applications.ResNet50(
        weights=None, input_shape=(64, 64, 3), classes=10
    )
    model = kbn.convert_batch_norm(backbone, virtual_batch_size=16)
    ```
    """
    factory = BatchNorm if layer is None else layer
    if isinstance(factory, keras.layers.Layer) or not callable(factory):
        raise TypeError(
            "Invalid value for argument layer. Expected None, a layer class "
            "or a factory that returns a new layer for each batch norm. "
            f"Received: layer={layer!r}"
        )

    def replace(source):
        overridden = _overridden_methods(type(source), keras.layers.BatchNormalization)
        if overridden:
            _refuse_changed_maths(source, overridden, "keras.layers.BatchNormalization")
        config = source.get_config()
        if not config.get("renorm"):
            config["renorm_clipping"] = None  # Keras keeps it, unused
        config.update(options)
        if not config.get("renorm") and "renorm_clipping" not in options:
            config["renorm_clipping"] = None
        target = factory(**config)
        if not isinstance(target, keras.layers.Layer):
            raise TypeError(
                f"Invalid value for argument layer. Expected a factory that "
                f"returns a Keras layer; for layer '{source.name}' it "
                f"returned {target!r}. Received: layer={factory!r}"
            )
        return target

    def carry(source, target):
        _carry_state(source, target, source_momentum=source.momentum)

    return _rebuild(
        model,
        lambda layer: isinstance(layer, keras.layers.BatchNormalization),
        replace,
        carry,
        "kbn.layers.BatchNorm"
        if layer is None
        else getattr(factory, "__qualname__", repr(factory)),
        "convert_batch_norm",
    )


def convert_to_keras_batch_norm(model, for_inference=False, **options):
    """A copy of `model` with Keras's batch norm in place of kbn's.

    The reverse of `convert_batch_norm`: every `kbn.layers.BatchNorm` of
    `model` becomes a `keras.layers.BatchNormalization` with its weights and
    moving statistics, so that a model trained with kbn runs where only
    Keras is installed. It converts a layer when Keras's computes the same in
    training and in inference, and refuses the rest with a `ValueError` that
    names the layer and the option. kbn's arguments become Keras's:

    - `axis` (an int, or a list of one), `momentum` (a float), `epsilon`,
      `center`, `scale`, the initializers, regularizers and constraints:
      the same arguments;
    - `renorm` and `renorm_momentum`: the same (Keras 3's renormalization
      has the same corrections and statistics, which are carried over); the
      clip limits as they are now in the weights `renorm_rmax`,
      `renorm_rmin` and `renorm_dmax` (where a schedule left them) become
      the constants of `renorm_clipping`;
    - `synchronized`: the same on TensorFlow; `False` on JAX, where kbn's
      flag changes nothing (a sharded batch is one global array) and Keras's
      is refused;
    - training-only features without an equivalent, refused:
      `virtual_batch_size` (ghost batches), `momentum=None` (a cumulative
      average), `unbiased_variance=True`, and a subclass that overrides a
      method of kbn's layer (a hook, `build`);
    - refused in any case: `track_running_stats=False` (no moving
      statistics: inference uses batch statistics), an `axis` list of
      several axes (Keras's layer takes one), and a subclass that overrides
      `normalize`, `call` or `inference_affine` (its inference map is its
      own).

    To drop a training-only feature knowingly, pass the argument that turns
    it off (`virtual_batch_size=None`, `unbiased_variance=False`,
    `momentum=0.99`), or `for_inference=True` for all of them, subclasses'
    training hooks included: the inference outputs stay the same, and
    training continues as Keras's layer trains. Every other layer is copied
    with its weights, `trainable` flags are kept, and the original model is
    not changed.

    Args:
        model: A Sequential or functional `keras.Model`.
        for_inference: If `True`, convert every layer whose inference Keras's
            layer computes, dropping the training-only features above
            (`momentum=None` becomes Keras's default 0.99).
        **options: Arguments of kbn's `BatchNorm` that replace those of
            every layer converted, before the checks.

    Returns:
        A new model of the same kind, built if `model` was.

    Raises:
        TypeError: If `model` is not a Keras model, or an option is not an
            argument of kbn's `BatchNorm`.
        ValueError: If the model cannot be rebuilt (a subclassed model, or
            a layer that holds a batch norm in its own code), or a layer has
            no equivalent in Keras's (see above); the message names the
            layer and the option.

    Example:

    ```python
    shipped = kbn.layers.convert_to_keras_batch_norm(
        trained, virtual_batch_size=None
    )
    shipped.save("model.keras")  # loads with Keras alone
    ```
    """
    known = set(inspect.signature(BatchNorm.__init__).parameters) - {
        "self",
        "kwargs",
    }
    unknown = sorted(set(options) - known - {"dtype", "trainable"})
    if unknown:
        raise TypeError(
            "Invalid options for convert_to_keras_batch_norm. Expected "
            "arguments of kbn.layers.BatchNorm. Received: "
            + ", ".join(f"{name}={options[name]!r}" for name in unknown)
        )
    for_inference = bool(for_inference)

    def replace(source):
        return keras.layers.BatchNormalization.from_config(
            _keras_config(source, options, for_inference)
        )

    return _rebuild(
        model,
        lambda layer: isinstance(layer, BatchNorm),
        replace,
        lambda source, target: _carry_state(source, target, source_momentum=None),
        "keras.layers.BatchNormalization",
        "convert_to_keras_batch_norm",
    )


# What kbn's layer has and Keras's has not, for training only: the argument,
# the value that turns it off, why it differs, and how to drop it.
_TRAINING_ONLY = (
    (
        "virtual_batch_size",
        None,
        "splits a training batch into ghost batches, each normalized with its "
        "own statistics; Keras's layer normalizes whole batches",
        "Pass virtual_batch_size=None to drop the ghost batches",
    ),
    (
        "momentum",
        0.99,
        "makes the moving statistics a cumulative average of all batches; "
        "Keras's layer keeps an exponential moving average",
        "Pass a momentum (for example momentum=0.99) to continue with Keras's average",
    ),
    (
        "unbiased_variance",
        False,
        "averages the unbiased batch variance m / (m - 1) * variance; Keras's "
        "layer averages the biased one",
        "Pass unbiased_variance=False",
    ),
)

# Methods whose override changes the inference map.
_INFERENCE_METHODS = ("call", "normalize", "inference_affine")


def _keras_config(source, options, for_inference):
    """The arguments of Keras's layer that computes what `source` does."""
    overridden = _overridden_methods(type(source), BatchNorm)
    shaping = [name for name in overridden if name in _INFERENCE_METHODS]
    if shaping or (overridden and not for_inference):
        _refuse_changed_maths(
            source,
            shaping or overridden,
            "kbn.layers.BatchNorm",
            "" if shaping else " (for_inference=True converts it for inference)",
        )
    config = {**source.get_config(), **options}
    if not source.track_running_stats or not config["track_running_stats"]:
        _refuse(
            source,
            "track_running_stats=False",
            "keeps no moving statistics (it normalizes every batch with its "
            "own statistics, in inference too), and Keras's layer normalizes "
            "with moving statistics in inference",
            "Keep kbn's layer",
        )
    for name, off, reason, advice in _TRAINING_ONLY:
        value = config[name]
        if (value is not None) if name == "momentum" else (value == off):
            continue
        if for_inference:
            config[name] = off
            continue
        _refuse(
            source,
            f"{name}={value!r}",
            reason,
            f"{advice} (the inference outputs do not change), or "
            "for_inference=True for all such features, or keep kbn's layer",
        )
    axis = config["axis"]
    if isinstance(axis, list):
        if len(axis) != 1:
            _refuse(
                source,
                f"axis={axis!r}",
                "keeps one statistic per combination of several axes; Keras's "
                "layer takes a single axis",
                "Keep kbn's layer",
            )
        axis = axis[0]
    config["axis"] = axis
    # Ghost batches were refused above or dropped for inference; their
    # grouping goes with them.
    for name in (
        "virtual_batch_size",
        "virtual_batch_grouping",
        "unbiased_variance",
        "track_running_stats",
    ):
        config.pop(name)
    if config["renorm"] and "renorm_clipping" not in options:
        config["renorm_clipping"] = _current_clipping(source)
    if not config["renorm"]:
        config["renorm_clipping"] = None
    if keras.backend.backend() != "tensorflow":
        # kbn's flag acts on tf.distribute only; Keras's refuses it elsewhere.
        config["synchronized"] = False
    return config


def _current_clipping(layer):
    """renorm's clip limits as they are now in the layer's weights (where a
    `RenormClippingSchedule` left them), the unbounded ones left out; a
    limit still at its argument's value keeps that value's every digit."""
    unbounded = {"rmax": np.inf, "rmin": 0.0, "dmax": np.inf}
    clipping = {}
    for key, free in unbounded.items():
        value = float(ops.convert_to_numpy(getattr(layer, f"renorm_{key}")))
        given = layer.renorm_clipping.get(key)
        if given is not None and np.float32(given) == np.float32(value):
            value = given
        if value != free:
            clipping[key] = value
    return clipping


def _refuse(layer, option, reason, advice):
    raise ValueError(
        f"{type(layer).__name__} layer '{layer.name}' has no equivalent in "
        f"keras.layers.BatchNormalization: {option} {reason}. {advice}. "
        f"Received: {option}"
    )


def _refuse_changed_maths(layer, overridden, base_name, advice=""):
    raise ValueError(
        f"{type(layer).__name__} layer '{layer.name}' is a subclass of "
        f"{base_name} that overrides {', '.join(overridden)}, so the layer it "
        "would become computes without its changes. Convert this layer "
        f"yourself (build the model with the layer you want){advice}, or keep "
        f"it. Received: layer of type {type(layer).__name__}"
    )


def _overridden_methods(cls, base):
    """The methods of `base` (and of Keras's `Layer`) that `cls` redefines,
    besides those that only handle the constructor's arguments."""
    names = []
    for klass in cls.__mro__:
        if klass is base:
            break
        for name, value in vars(klass).items():
            if name in _HARMLESS or name in names or not hasattr(base, name):
                continue
            if callable(value) or isinstance(value, (property, classmethod)):
                names.append(name)
    return names


def _carry_state(source, target, source_momentum):
    """Sets `target`'s weights and statistics from `source`'s.

    Copies every weight of `source` that `target` has under the same name;
    refuses when `target` has no place for one that shapes the inference
    map (`_MAPPED`); derives renorm's statistics and the `momentum=None`
    counter from the moving statistics when `target` keeps them and `source`
    did not. Training-only state of `source` that `target` does not keep
    (renorm's statistics after `renorm=False`, the counter after a momentum
    is given, the clip limits that Keras's layer takes as arguments) is
    dropped.
    """
    if not source.built:
        return  # nothing to carry: the copy builds as the original would
    sources = {v.name: v for v in source.weights}
    targets = {v.name: v for v in target.weights}
    for name, variable in sources.items():
        landing = targets.get(name)
        if name in _MAPPED and (
            landing is None or tuple(landing.shape) != tuple(variable.shape)
        ):
            raise ValueError(
                f"{type(target).__name__} layer '{target.name}' has no weight "
                f"{name!r} of shape {tuple(variable.shape)} to carry the "
                f"{name} of {type(source).__name__} layer '{source.name}' "
                "over, so the converted model would compute something else. "
                "Convert with options that keep it (scale=True for gamma, "
                "center=True for beta, track_running_stats=True for the "
                "moving statistics). Received: "
                f"{name} {'missing' if landing is None else tuple(landing.shape)}"
            )
        if landing is not None:
            landing.assign(ops.convert_to_numpy(variable))
    missing = set(targets) - set(sources)
    if "moving_mean" not in sources or "moving_mean" not in targets:
        return
    mean = np.asarray(ops.convert_to_numpy(source.moving_mean), "float64")
    variance = np.asarray(ops.convert_to_numpy(source.moving_variance), "float64")
    stddev = np.sqrt(variance + target.epsilon)
    if isinstance(target, BatchNorm):
        if missing & {"moving_stddev", "num_batches"}:
            batches = _batches_spanned(source_momentum)
            target.set_population_statistics(
                {"moving_mean": mean, "moving_variance": variance},
                {"moving_mean": batches, "moving_variance": batches},
            )
    elif "moving_stddev" in missing:
        target.moving_stddev.assign(stddev)
    if "renorm_mean" in missing:
        target.renorm_mean.assign(mean)
    if "renorm_stddev" in missing:
        target.renorm_stddev.assign(stddev)


def _batches_spanned(momentum):
    """How many batches an exponential moving average with `momentum`
    spans: `1 / (1 - momentum)` (at most a billion)."""
    if momentum is None:
        return 1.0
    return round(1.0 / max(1.0 - float(momentum), 1e-9), 6)


def _rebuild(model, selects, replace, carry, new_name, function):
    """A copy of `model` in which `replace(layer)` stands for each layer that
    `selects`, and every other layer is a copy with its weights.

    `carry(original, replacement)` then carries the state over. Nested
    Sequential and functional models are rebuilt the same way; a layer (or
    model) shared in `model` is one shared layer in the copy.
    """
    _check_model(model, function, new_name)
    copies = {}  # id(original) -> its copy, for layers and nested models
    pairs = []  # (original, copy) of the layers that are not models

    def clone_function(original):
        if id(original) in copies:
            return copies[id(original)]
        if _is_graph_model(original):
            copy = keras.models.clone_model(original, clone_function=clone_function)
        elif not isinstance(original, keras.layers.Layer):
            # An operation of keras.ops in the graph (`x + 3`): no state.
            copy = original.__class__.from_config(original.get_config())
        elif selects(original):
            copy = replace(original)
            pairs.append((original, copy))
        else:
            _check_leaf(original, selects, new_name)
            copy = original.__class__.from_config(original.get_config())
            pairs.append((original, copy))
        copies[id(original)] = copy
        return copy

    with _tensorflow_left_unimported():
        rebuilt = clone_function(model)
    for original, copy in pairs:
        if selects(original):
            carry(original, copy)
        elif original.weights:
            copy.set_weights(original.get_weights())
    _copy_trainable(model, copies)
    return rebuilt


@contextlib.contextmanager
def _tensorflow_left_unimported():
    """Keeps Keras's `get_config` from importing TensorFlow on other backends.

    Keras 3's `serialize_keras_object` (which every layer's `get_config`
    calls) asks whether TensorFlow is available, importing it if it is
    installed (8 s on a 2-core machine), to recognize a `tf.TensorShape`,
    which no value can be unless TensorFlow is imported already. While
    TensorFlow is not imported, this tells Keras's lazy handle of it, for
    the rebuild, that it is unavailable; then Keras asks again as before.
    Nothing changes where the handle is not Keras's `LazyModule` of today.
    """
    try:
        from keras.src.utils import module_utils

        lazy = module_utils.tensorflow
        unasked = lazy._available is None and lazy.module is None
    except (ImportError, AttributeError):
        unasked = False
    if not unasked or "tensorflow" in sys.modules:
        yield
        return
    lazy._available = False
    try:
        yield
    finally:
        lazy._available = None


def _copy_trainable(model, copies):
    """Sets each copy's `trainable` as its original's, outer models first
    (setting a model's flag sets its layers', which are set after)."""
    queue, seen = [model], set()
    while queue:
        original = queue.pop(0)
        if id(original) in seen:
            continue
        seen.add(id(original))
        copy = copies.get(id(original))
        if copy is not None and copy.trainable != original.trainable:
            copy.trainable = original.trainable
        if _is_graph_model(original):
            queue.extend(original.layers)


def _is_graph_model(layer):
    """Whether `clone_model` can rebuild `layer` from its graph."""
    return isinstance(layer, keras.Sequential) or (
        isinstance(layer, keras.Model) and isinstance(layer, keras.Function)
    )


def _check_model(model, function, new_name):
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"Invalid value for argument model. Expected a Sequential or "
            f"functional keras.Model. Received: model of type "
            f"{type(model).__name__}"
        )
    if not _is_graph_model(model):
        raise ValueError(
            f"{function} cannot rebuild model '{model.name}': it is a "
            f"subclassed keras.Model ({type(model).__name__}), whose call() "
            "is Python code that keras.models.clone_model cannot rebuild with "
            f"other layers. Build the model with {new_name} in its code, or "
            "convert its Sequential or functional parts. Received: model of "
            f"type {type(model).__name__}"
        )


def _check_leaf(layer, selects, new_name):
    """Refuses a layer that holds, in its own code, a layer to replace."""
    for inner in layer._flatten_layers(include_self=False):
        if selects(inner):
            raise ValueError(
                f"Cannot rebuild layer '{layer.name}' ({type(layer).__name__}): "
                f"it holds {type(inner).__name__} layer '{inner.name}' in its "
                "own code, which keras.models.clone_model cannot replace by "
                f"{new_name}. Use {new_name} in that layer's code, or build it "
                "as a functional model. Received: layer of type "
                f"{type(layer).__name__}"
            )
