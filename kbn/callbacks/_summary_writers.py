"""One TensorBoard event file per folder, shared by kbn's callbacks.

Holds the registry of open writers (`acquire`, `release`); the writing
itself is `kbn.event_file.EventFileWriter`'s, and nothing here imports
TensorFlow.

TensorBoard reads every event file of a folder as one run, but while a run
is being written its default reader follows only the newest file of the
folder: two writers appending to two files in one folder would freeze one
of them on the screen until TensorBoard restarts. kbn's callbacks that
write into the same `log_dir` therefore share one writer: each acquires it
at its first write and releases it in `on_train_end`; the last release
closes it. The callbacks flush after every sample, so what they wrote is on
disk even when `fit` raises (Keras then skips `on_train_end`, and the
writer stays open).

Under several JAX processes (`kbn.distributed.initialize_jax_processes`)
every process runs the callbacks, whose inference passes are collective,
but only process 0 writes: the others get a writer that discards
everything, and create no file.
"""

import os

from kbn import distributed
from kbn import event_file

_writers = {}  # folder: [writer, users]


def acquire(log_dir):
    """The shared `EventFileWriter` of `log_dir`; release it when done."""
    key = os.path.abspath(os.fspath(log_dir))
    if not distributed.is_writer():
        key = ("discarded", key)
    entry = _writers.get(key)
    if entry is not None and entry[0].path and not os.path.exists(entry[0].path):
        # Its file was removed (a run replacing an earlier one) while a run
        # that raised, and so never released it, still held the writer.
        entry[0].close()
        entry = None
    if entry is None:
        if isinstance(key, tuple):
            writer = event_file.DiscardingWriter(key[1])
        else:
            writer = event_file.EventFileWriter(key)
        entry = _writers[key] = [writer, 0]
    entry[1] += 1
    return entry[0]


def release(log_dir):
    """Gives back a writer from `acquire`; the last release closes it."""
    key = os.path.abspath(os.fspath(log_dir))
    if not distributed.is_writer():
        key = ("discarded", key)
    entry = _writers.get(key)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] <= 0:
        entry[0].close()
        del _writers[key]
