"""`compiled(function)`: a pure function compiled on the current Keras backend.

Holds the one switch between `jax.jit` and `tf.function` that kbn's
compiled passes use (accuracy, forward passes, population statistics, the
batch-norm probe). It must not hold the passes themselves. The function
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
