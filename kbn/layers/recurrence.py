"""The loop that runs a recurrent step over time on TensorFlow.

Holds `tensorflow_scan`, which `kbn.layers.BNLSTM` runs its recurrence in on
the TensorFlow backend (`keras.ops.scan` on JAX, a Python loop with
`unroll=True`). It must not hold the step itself (the layer's) nor its
maths (`kbn.ops`).
"""


def tensorflow_scan(step, carry, xs, steps):
    """`keras.ops.scan` for TensorFlow, as `keras.layers.LSTM` loops there.

    Keras's TensorFlow `scan` keeps the carry in a TensorArray of one
    element, rewritten every step, stacks outputs shaped like the carry and
    runs one iteration at a time: a plain LSTM step in it trained about
    twice as slowly as `keras.layers.LSTM` (784 steps, 100 units, batch 64:
    0.49 vs 0.24 s per batch on our 2-core machine). Here, as in Keras's
    TensorFlow RNN loop, the carry is the loop's variables, the inputs are
    read from and the outputs written to TensorArrays, and 32 iterations may
    run at once. The step is traced once outside the loop for the shapes of
    its outputs (dead code in a graph, one step more of work eagerly; as in
    Keras's loop). TensorFlow is imported only on that backend.
    """
    import tensorflow as tf

    xs_arrays = [
        tf.TensorArray(x.dtype, size=steps, element_shape=x.shape[1:]).unstack(x)
        for x in xs
    ]
    _, ys_first = step(carry, tuple(x[0] for x in xs))
    ys_arrays = tuple(
        tf.TensorArray(y.dtype, size=steps, element_shape=y.shape) for y in ys_first
    )

    def body(t, carry, ys_arrays):
        carry, ys = step(carry, tuple(x.read(t) for x in xs_arrays))
        return t + 1, carry, tuple(a.write(t, y) for a, y in zip(ys_arrays, ys))

    _, carry, ys_arrays = tf.while_loop(
        lambda t, *_: t < steps,
        body,
        (tf.constant(0), tuple(carry), ys_arrays),
        parallel_iterations=32,
        maximum_iterations=steps,
    )
    return carry, tuple(a.stack() for a in ys_arrays)
