"""One TensorBoard event file per folder, shared by kbn's callbacks.

TensorBoard reads every event file of a folder as one run, but while a run
is being written its default reader follows only the newest file of the
folder: two writers appending to two files in one folder would freeze one
of them on the screen until TensorBoard restarts. kbn's callbacks that
write into the same `log_dir` therefore share one `tf.summary` writer: each
acquires it at its first write and releases it in `on_train_end`; the last
release closes it. The callbacks flush after every sample, so what they
wrote is on disk even when `fit` raises (Keras then skips `on_train_end`,
and the writer stays open).

Under several JAX processes (`kbn.distributed.initialize_jax_processes`)
every process runs the callbacks, whose inference passes are collective,
but only process 0 writes: the others get a writer that discards
everything, and create no file.

TensorFlow is imported here, lazily: only a callback that writes needs it.
"""

import glob
import os

from kbn import distributed

_writers = {}  # folder: [writer, users, its event file]


def acquire(log_dir):
    """The shared `tf.summary` writer of `log_dir`; release it when done."""
    import tensorflow as tf

    key = os.path.abspath(os.fspath(log_dir))
    if not distributed.is_writer():
        key = ("discarded", key)
    entry = _writers.get(key)
    if entry is None and isinstance(key, tuple):
        entry = _writers[key] = [tf.summary.create_noop_writer(), 0, None]
    if entry is not None and entry[2] is not None and not os.path.exists(entry[2]):
        # Its file was removed (a run replacing an earlier one) while a run
        # that raised, and so never released it, still held the writer.
        entry[0].close()
        entry = None
    if entry is None:
        before = set(_event_files(key))
        writer = tf.summary.create_file_writer(key)
        created = set(_event_files(key)) - before
        path = created.pop() if len(created) == 1 else None
        entry = _writers[key] = [writer, 0, path]
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


def _event_files(folder):
    return glob.glob(os.path.join(glob.escape(folder), "events.out.tfevents.*"))
