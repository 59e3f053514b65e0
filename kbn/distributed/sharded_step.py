"""Batch-norm moments and gradients in one collective each, on JAX.

Holds what makes a data-parallel step exchange as little as a hand-written
one: `batch_exchange` (how `kbn.layers.BatchNorm` gathers the moments of
the parts of a batch split across devices, in one collective) and
`sharded_train_step` (a block of training batches run per device with
`jax.shard_map`, every gradient summed in one all-reduce of one flattened
buffer; `kbn.MultiStepTrainer(sharded_step=True)` uses it). It must not
hold batch-norm maths (`kbn.ops`) or anything of TensorFlow. JAX is
imported inside the functions.

Why one buffer: XLA on CPU runs a combined all-reduce of several arrays
(what its all-reduce combiner makes of a step's gradients) as one Gloo
all-reduce per array, one network round trip each, so that only
concatenating the arrays first makes it one round trip.
"""

import contextlib
import threading

import keras

from kbn.distributed.jax_processes import batch_parts

_STEP = threading.local()


class BatchExchange:
    """How the parts of a batch split across devices exchange moments.

    Attributes:
        parts: The parts of the batch that this program holds: all of them
            under a data-parallel layout (one global array, split by XLA),
            one in `sharded_train_step` (each device its own).
        count_factor: Values of the whole batch per value of this program's
            batch (1, or the number of devices in `sharded_train_step`).
        required: Whether a layer that cannot exchange must refuse (in
            `sharded_train_step` its statistics would be this device's
            only).
    """

    def __init__(self, parts, count_factor=1, axis=None):
        self.parts = parts
        self.count_factor = count_factor
        self.required = axis is not None
        self._axis = axis

    def gather(self, values):
        """Every part's row of `values` `(parts, ...)`, on every device:
        `(all parts, ...)`, the same bit for bit everywhere, in one
        collective."""
        if self._axis is None:
            from kbn import ops as bn_ops

            return bn_ops.gather_parts(values)
        import jax

        # This device's row in place, zeros elsewhere, summed: exact.
        rows = self.count_factor
        here = keras.ops.arange(rows) == jax.lax.axis_index(self._axis)
        here = keras.ops.reshape(here, (rows,) + (1,) * (len(values.shape) - 1))
        return jax.lax.psum(keras.ops.where(here, values, 0.0), self._axis)


def batch_exchange():
    """How batch norm exchanges its moments here, or None (one device).

    Inside `sharded_train_step`, each device holds its own part; under a
    data-parallel layout with several devices (`batch_parts`), the program
    holds the whole batch, split by XLA.
    """
    step = getattr(_STEP, "axis", None)
    if step is not None:
        axis, devices = step
        return BatchExchange(1, devices, axis)
    parts = batch_parts()
    return BatchExchange(parts) if parts > 1 else None


def gradient_devices():
    """The devices whose gradients `sum_gradients` adds, or None outside
    `sharded_train_step`."""
    step = getattr(_STEP, "axis", None)
    return None if step is None else step[1]


def sum_gradients(values):
    """`values` as they are, whose gradients are summed across the devices
    of `sharded_train_step` in one all-reduce of one flattened buffer."""
    import jax
    import jax.flatten_util

    axis = _STEP.axis[0]

    @jax.custom_vjp
    def identity(values):
        return values

    def forward(values):
        return values, None

    def backward(_, gradients):
        flat, unflatten = jax.flatten_util.ravel_pytree(gradients)
        return (unflatten(jax.lax.psum(flat, axis)),)

    identity.defvjp(forward, backward)
    return identity(values)


@contextlib.contextmanager
def _inside(axis, devices):
    saved = getattr(_STEP, "axis", None)
    _STEP.axis = (axis, devices)
    try:
        yield
    finally:
        _STEP.axis = saved


def sharded_train_step(train_block, state, data, batch_axis=1):
    """Runs `train_block(state, data)` on each device's part of the batch.

    Under the current `keras.distribution` (a `BlockDataParallel`): the
    state replicated, the data split along `batch_axis` across the devices
    of the mesh's batch axis, `train_block` traced once per device with
    `jax.shard_map` while `batch_exchange`, `gradient_devices` and
    `sum_gradients` speak for this step. The caller makes `train_block`'s
    results the same on every device (the gradients summed, batch norm's
    moments exchanged, the metrics summed): they are returned as
    replicated.

    Returns:
        What `train_block` returns.
    """
    import jax
    from jax.sharding import PartitionSpec

    shard_map = getattr(jax, "shard_map", None)
    unchecked = {"check_vma": False}
    if shard_map is None:  # JAX before 0.6
        from jax.experimental.shard_map import shard_map

        unchecked = {"check_rep": False}
    distribution = keras.distribution.distribution()
    mesh = distribution.device_mesh.backend_mesh
    axis = distribution.batch_dim_name
    devices = int(mesh.shape[axis])

    def local(state, data):
        with _inside(axis, devices):
            return train_block(state, data)

    split = jax.tree.map(
        lambda x: PartitionSpec(*([None] * min(batch_axis, len(x.shape) - 1)), axis),
        data,
    )
    return shard_map(
        local,
        mesh=mesh,
        in_specs=(PartitionSpec(), split),
        out_specs=PartitionSpec(),
        **unchecked,
    )(state, data)


def sum_across_devices(values):
    """`values` (a list of arrays) summed across the devices of
    `sharded_train_step`, in one all-reduce of one flattened buffer."""
    import jax
    import jax.flatten_util

    flat, unflatten = jax.flatten_util.ravel_pytree(values)
    return unflatten(jax.lax.psum(flat, _STEP.axis[0]))
