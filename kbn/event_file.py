"""TensorBoard event files written without TensorFlow.

Holds `EventFileWriter`, which writes scalars, histograms, text and whole
`Summary` protos (TensorBoard's HParams experiment and trials, for
instance) into one new event file of a folder, and `histogram_buckets`, the
histogram that TensorBoard's histogram dashboard reads. It must not hold
anything about *what* is logged or *when* (kbn's callbacks decide that), nor
the rule that callbacks share one file per folder
(`kbn/callbacks/_summary_writers.py`).

The files are those `tf.summary` writes: TFRecord framing (length, masked
CRC-32C, payload, masked CRC-32C) around serialized `Event` protos, the
first one naming the file version. TensorBoard's own package holds every
part of that in plain Python and protobuf (`RecordWriter` for the framing,
`tensorboard.compat.proto` for the protos, each dashboard's `metadata`
module for its plugin metadata), so that is what is used here: the
`tensorboard` package is needed anyway to view the logs, and unlike
tensorboardX it adds no package of its own. TensorBoard's higher-level
`EventFileWriter` is not used: it imports TensorFlow when it is installed.
Nothing here imports TensorFlow, on any backend.
"""

import itertools
import os
import socket
import time

import numpy as np

# Distinguishes the files that one process creates in the same second.
_file_numbers = itertools.count()


class EventFileWriter:
    """Writes TensorBoard events into a new file in `log_dir`.

    Every `scalar`, `histogram`, `text` or `write` call appends one event
    at its step; `flush` puts what was written on disk (call it after each
    sample: TensorBoard then shows a run live, and a run that raises keeps
    what it wrote). TensorBoard reads the file as its own: `tensorboard
    --logdir` shows the scalars, histograms and text in their dashboards,
    and `EventAccumulator` reads them back.

    Args:
        log_dir: The folder (one TensorBoard run); created if missing.
        filename_suffix: Appended to the file's name.

    Example:

    ```python
    with kbn.event_file.EventFileWriter("logs/run") as writer:
        writer.scalar("validation/accuracy", 0.93, step=500)
        writer.histogram("weights", kernel, step=500)
    ```
    """

    def __init__(self, log_dir, filename_suffix=""):
        from tensorboard.summary.writer.record_writer import RecordWriter

        self.log_dir = os.fspath(log_dir)
        os.makedirs(self.log_dir, exist_ok=True)
        # The name `tf.summary` gives its files (TensorBoard reads only
        # files named so): time, host, process, and a number of its own.
        stamp = f"{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}"
        name = f"events.out.tfevents.{stamp}.{next(_file_numbers)}{filename_suffix}"
        self.path = os.path.join(self.log_dir, name)
        self._records = RecordWriter(open(self.path, "wb"))
        event_pb2 = _protos()[0]
        self._write_event(event_pb2.Event(file_version="brain.Event:2"))
        self.flush()

    def write(self, summary, step):
        """Appends a `tensorboard.compat.proto.summary_pb2.Summary` at `step`."""
        event_pb2 = _protos()[0]
        self._write_event(event_pb2.Event(step=int(step), summary=summary))

    def values(self, values, step):
        """Appends `{tag: number}` (scalars) and `{tag: array}` (histograms)
        in one event at `step`; a histogram of no finite value is left out."""
        self.write(summary(values), step)

    def scalar(self, tag, value, step):
        """Appends the scalar `value` as `tag` at `step`."""
        self.values({tag: float(value)}, step)

    def histogram(self, tag, values, step, bucket_count=30):
        """Appends a histogram of `values` (`histogram_buckets`) at `step`."""
        buckets = histogram_buckets(values, bucket_count)
        if buckets is not None:
            self.write(_summary_of([_value(tag, "histograms", buckets)]), step)

    def text(self, tag, text, step):
        """Appends `text` (Markdown, as TensorBoard's text dashboard shows
        it) as `tag` at `step`."""
        self.write(_summary_of([_value(tag, "text", np.asarray(str(text)))]), step)

    def flush(self):
        self._records.flush()

    def close(self):
        if not self._records.closed:
            self._records.flush()
            self._records.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def _write_event(self, event):
        event.wall_time = time.time()
        self._records.write(event.SerializeToString())


class DiscardingWriter:
    """`EventFileWriter`'s interface, writing nothing and creating no file
    (the processes other than process 0 of a multi-process run)."""

    path = None

    def __init__(self, log_dir=None):
        self.log_dir = None if log_dir is None else os.fspath(log_dir)

    def write(self, summary, step):
        pass

    def values(self, values, step):
        pass

    def scalar(self, tag, value, step):
        pass

    def histogram(self, tag, values, step, bucket_count=30):
        pass

    def text(self, tag, text, step):
        pass

    def flush(self):
        pass

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        pass


def summary(values):
    """One `Summary` proto of `{tag: value}`: a Python or NumPy number is a
    scalar, an array a histogram (`histogram_buckets`; left out when none
    of its values is finite).

    The values are those `tf.summary.scalar` and `tf.summary.histogram`
    write, with the same plugin metadata, so TensorBoard shows them in its
    scalar and histogram dashboards.
    """
    entries = []
    for tag, data in values.items():
        if np.ndim(data) == 0 and not isinstance(data, np.ndarray):
            entries.append(_value(tag, "scalars", np.float32(data)))
        else:
            buckets = histogram_buckets(data)
            if buckets is not None:
                entries.append(_value(tag, "histograms", buckets))
    return _summary_of(entries)


def histogram_buckets(values, bucket_count=30):
    """TensorBoard's histogram of `values`: `(bucket_count, 3)` rows of left
    edge, right edge, count, as `tf.summary.histogram` makes them (equal
    buckets from the smallest to the largest value; one value: every edge at
    it, the count in the last bucket). Non-finite values are left out; None
    if none is finite."""
    values = np.asarray(values, "float64").ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    low, high = values.min(), values.max()
    if low == high:
        counts = np.zeros(bucket_count)
        counts[-1] = values.size
        edges = np.full(bucket_count, high)
        return np.stack([edges, edges, counts], axis=1)
    width = (high - low) / bucket_count
    index = np.minimum(np.floor((values - low) / width).astype(int), bucket_count - 1)
    counts = np.bincount(index, minlength=bucket_count).astype("float64")
    edges = np.linspace(low, high, bucket_count + 1)
    edges[-1] = high
    return np.stack([edges[:-1], edges[1:], counts], axis=1)


def _value(tag, plugin, array):
    from tensorboard.util import tensor_util

    summary_pb2 = _protos()[1]
    metadata = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=plugin)
    )
    return summary_pb2.Summary.Value(
        tag=tag, metadata=metadata, tensor=tensor_util.make_tensor_proto(array)
    )


def _summary_of(entries):
    return _protos()[1].Summary(value=entries)


def _protos():
    # Imported when first written, so that `import kbn` needs no TensorBoard.
    from tensorboard.compat.proto import event_pb2
    from tensorboard.compat.proto import summary_pb2

    return event_pb2, summary_pb2
