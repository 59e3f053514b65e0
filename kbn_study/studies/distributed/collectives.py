"""What a data-parallel training step exchanges, read from XLA's program.

Holds `count_collectives` (the collectives of an optimized HLO program: per
batch, those in the body of its loop over the batches of a block; per
compiled call, the others), `trainer_collectives` (those of a
`kbn.MultiStepTrainer`'s own compiled step, as `fit` runs it) and
`CollectivesCounter`, a callback that reads them when training ends. It
must not train or time anything. JAX is imported inside the functions.

Why buffers as well as collectives: XLA combines the all-reduces of a step
into one all-reduce of several arrays, which XLA on CPU runs as one Gloo
all-reduce, one network round trip, per array.
"""

import re

import keras
import numpy as np

_HLO_SHAPE = re.compile(r"\b(pred|[a-z]+\d+)\[([\d,]*)\]")
_BYTES = {"pred": 1, "s8": 1, "u8": 1, "bf16": 2, "f16": 2, "s16": 2, "u16": 2}
_KINDS = (
    "all-reduce",
    "all-gather",
    "reduce-scatter",
    "all-to-all",
    "collective-permute",
)
_COMPUTATION = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$")
_CALLED = re.compile(
    r"(?:body|condition|to_apply|calls|branch_computations)=\{?%?([\w.\-]+)"
)


def count_collectives(hlo_text):
    """The collectives of an optimized HLO program (`compiled.as_text()`).

    Returns:
        `{"per_batch": counts, "per_call": counts}`, each `{"collectives":
        n, "buffers": arrays exchanged, "bytes": their size}`: `per_batch`
        counts those inside the body of the program's loops (a
        `MultiStepTrainer` block runs its batches in one), `per_call` the
        others (once per compiled call).
    """
    computations, current = {}, None
    for line in hlo_text.splitlines():
        match = _COMPUTATION.match(line)
        if match:
            current = computations.setdefault(match.group(1), [])
        elif current is not None:
            current.append(line)
    in_loop = set()
    for lines in computations.values():
        for line in lines:
            if " while(" in line:
                body = re.search(r"body=%?([\w.\-]+)", line)
                if body:
                    in_loop |= _reachable(body.group(1), computations)
    counts = {
        where: {"collectives": 0, "buffers": 0, "bytes": 0}
        for where in ("per_batch", "per_call")
    }
    for name, lines in computations.items():
        where = counts["per_batch" if name in in_loop else "per_call"]
        for line in lines:
            kind = next(
                (k for k in _KINDS if f" {k}(" in line or f" {k}-start(" in line),
                None,
            )
            if kind is None or "=" not in line:
                continue
            result_type = line.split("=", 1)[1].split(kind, 1)[0]
            shapes = _HLO_SHAPE.findall(result_type)
            where["collectives"] += 1
            where["buffers"] += len(shapes)
            where["bytes"] += sum(_size(dtype, dims) for dtype, dims in shapes)
    return counts


def _reachable(name, computations):
    seen, todo = set(), [name]
    while todo:
        current = todo.pop()
        if current in seen or current not in computations:
            continue
        seen.add(current)
        for line in computations[current]:
            todo.extend(_CALLED.findall(line))
    return seen


def _size(dtype, dims):
    size = int(np.prod([int(d) for d in dims.split(",") if d] or [1]))
    return size * _BYTES.get(dtype, int(re.sub(r"\D", "", dtype) or 32) // 8)


def trainer_collectives(trainer, batches_per_step, batch_size):
    """The collectives of `trainer`'s compiled training step, as `fit` runs it.

    Compiles (without running) `trainer.train_step` on its current state
    and a block of `(batches_per_step, batch_size)` index batches laid out
    by the current `keras.distribution`, and counts them
    (`count_collectives`). Zero without a distribution.

    Args:
        trainer: A `kbn.MultiStepTrainer` that has trained (it is built).
        batches_per_step, batch_size: The block's shape (global batch).
    """
    import jax

    distribution = keras.distribution.distribution()
    if distribution is None:
        empty = {"collectives": 0, "buffers": 0, "bytes": 0}
        return {"per_batch": dict(empty), "per_call": dict(empty)}
    state = (
        [v.value for v in trainer.trainable_variables],
        [v.value for v in trainer.non_trainable_variables],
        [v.value for v in trainer.optimizer.variables],
        [v.value for v in trainer.metrics_variables],
    )
    shape = (batches_per_step, batch_size)
    layout = distribution.get_data_layout(shape).backend_layout
    block = jax.ShapeDtypeStruct(shape, "int32", sharding=layout)
    compiled = jax.jit(trainer.train_step).lower(state, (block, block)).compile()
    return count_collectives(compiled.as_text())


class CollectivesCounter(keras.callbacks.Callback):
    """Reads what the trained step exchanges (`trainer_collectives`) at the
    end of training; `counts` holds them (None before)."""

    def __init__(self, batches_per_step, batch_size):
        super().__init__()
        self.block = (batches_per_step, batch_size)
        self.counts = None

    def on_train_end(self, logs=None):
        self.counts = trainer_collectives(self.model, *self.block)


def describe(counts, batches_per_step):
    """One line: what a batch exchanges, and what a compiled call adds."""
    batch, call = counts["per_batch"], counts["per_call"]
    return (
        f"{batch['collectives']} collective(s) ({batch['buffers']} "
        f"buffer(s), {batch['bytes']:,} bytes); per compiled call of "
        f"{batches_per_step} batches, {call['collectives']} more "
        f"({call['buffers']} buffer(s), {call['bytes']:,} bytes)"
    )
