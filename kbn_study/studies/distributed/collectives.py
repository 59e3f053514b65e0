"""What one data-parallel training batch all-reduces, read from XLA's program.

Holds `all_reduced_per_batch`, which compiles (without running) a batch's
training step on a global batch split over every device and counts the
all-reduces of the optimized program and their bytes. It must not train or
time anything. JAX is imported inside the function.
"""

import re

import numpy as np

_HLO_SHAPE = re.compile(r"\b(pred|[a-z]+\d+)\[([\d,]*)\]")
_BYTES = {"pred": 1, "s8": 1, "u8": 1, "bf16": 2, "f16": 2, "s16": 2, "u16": 2}


def all_reduced_per_batch(model, global_batch_size):
    """What one training batch all-reduces across the processes.

    Compiles (without running) one batch's forward pass, backward pass and
    SGD update of `model` on a global batch split over every device, and
    reads the all-reduces in XLA's optimized program: their count and the
    bytes of their operands. (Keras's training step adds a few scalars for
    its loss tracker.) `{"all_reduces": n, "bytes": b}`; zero with one
    device.
    """
    import jax
    import keras
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec

    devices = jax.devices()
    mesh = jax.sharding.Mesh(np.array(devices), ("batch",))
    replicated = NamedSharding(mesh, PartitionSpec())
    split = NamedSharding(mesh, PartitionSpec("batch"))
    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def step(trainable, non_trainable, images, labels):
        def loss(trainable):
            logits, updated = model.stateless_call(
                trainable, non_trainable, images, training=True
            )
            return loss_fn(labels, logits), updated

        grads, updated = jax.grad(loss, has_aux=True)(trainable)
        return [w - 0.01 * g for w, g in zip(trainable, grads)], updated

    images = jax.ShapeDtypeStruct(
        (global_batch_size, *model.inputs[0].shape[1:]), "float32", sharding=split
    )
    labels = jax.ShapeDtypeStruct((global_batch_size,), "int32", sharding=split)
    compiled = (
        jax.jit(step, in_shardings=(replicated, replicated, split, split))
        .lower(trainable, non_trainable, images, labels)
        .compile()
    )
    count, total = 0, 0
    for line in compiled.as_text().splitlines():
        if " all-reduce(" not in line and " all-reduce-start(" not in line:
            continue
        count += 1
        result_type = line.split("=", 1)[1].split("all-reduce", 1)[0]
        for dtype, dims in _HLO_SHAPE.findall(result_type):
            size = int(np.prod([int(d) for d in dims.split(",") if d] or [1]))
            total += size * _BYTES.get(dtype, int(re.sub(r"\D", "", dtype)) // 8)
    return {"all_reduces": count, "bytes": total}
