"""`compiled(function)`: a pure function compiled on the current Keras backend.

Holds the one switch between `jax.jit` and `tf.function` that kbn's
compiled passes use (accuracy, forward passes, population statistics, the
batch-norm probe), and `model_cache`, where a model keeps its compiled
passes. It must not hold the passes themselves. The function
must be pure in its arguments: on JAX, anything it reads that is not an
argument (a variable's current value) is frozen into the compiled program,
so model weights are passed in (`model.stateless_call`).
"""

import keras


def compiled(function):
    """`function` compiled on the current backend.

    `jax.jit` on JAX; `tf.function(reduce_retracing=True)` on TensorFlow
    (inputs whose shapes change, such as a last smaller batch, do not trace
    it again and again); the function itself on any other backend.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.jit(function)
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(function, reduce_retracing=True)
    return function


def model_cache(model):
    """The compiled passes kept on `model`: a dict that dies with it.

    `kbn.evaluation` and `kbn.population` keep their passes there, so that a
    model is traced once, not at every call;
    `kbn.evaluation.forget_compiled_passes(model)` empties it.
    """
    cache = model.__dict__.get(CACHE)
    if cache is None:
        cache = {}
        # Set through __dict__: Keras tracks attributes set on layers.
        model.__dict__[CACHE] = cache
    return cache


CACHE = "_kbn_compiled_passes"
