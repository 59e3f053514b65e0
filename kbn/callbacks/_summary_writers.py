"""One TensorBoard event file per folder, shared by kbn's callbacks.

TensorBoard reads every event file of a folder as one run, but while a run
is being written its default reader follows only the newest file of the
folder: two writers appending to two files in one folder would freeze one
of them on the screen until TensorBoard restarts. kbn's callbacks that
write into the same `log_dir` therefore share one `tf.summary` writer: each
acquires it at its first write and releases it in `on_train_end`; the last
release closes it.

TensorFlow is imported here, lazily: only a callback that writes needs it.
"""

import os

_writers = {}


def acquire(log_dir):
    """The shared `tf.summary` writer of `log_dir`; release it when done."""
    import tensorflow as tf

    key = os.path.abspath(os.fspath(log_dir))
    entry = _writers.get(key)
    if entry is None:
        entry = _writers[key] = [tf.summary.create_file_writer(key), 0]
    entry[1] += 1
    return entry[0]


def release(log_dir):
    """Gives back a writer from `acquire`; the last release closes it."""
    key = os.path.abspath(os.fspath(log_dir))
    entry = _writers.get(key)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] <= 0:
        entry[0].close()
        del _writers[key]
