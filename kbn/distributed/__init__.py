"""Data-parallel training on several devices, processes or machines.

Two engines: TensorFlow's `tf.distribute` (the TensorFlow backend) and
JAX's multi-process runtime (`jax.distributed`, the JAX backend).

TensorFlow: with `kbn.layers.BatchNorm(synchronized=True)` under a `MirroredStrategy`
(several devices of one machine) or a `MultiWorkerMirroredStrategy`
(several machines, one `TF_CONFIG` each), every replica normalizes with the
statistics of the *global* batch (sums, sums of squares and counts are
all-reduced), so outputs, gradients and moving statistics equal those of one
device on the whole batch. Unsynchronized, each replica normalizes with the
statistics of its own slice: noisier, and different from single-device
training as soon as the slices differ.

JAX: a batch sharded by `keras.distribution.DataParallel` is one global
array: its moments are global by construction, synchronized or not. That
holds across processes too: `initialize_jax_processes` joins N processes
(one per machine, or several on one), after which `jax.devices()` lists the
devices of all of them; under a `BlockDataParallel` distribution, `fit`
assembles every global batch from the shard each process feeds
(`process_shards`). `kbn.layers.BatchNorm` takes each device's moments of
its part and exchanges them in one collective per layer and pass
(`batch_exchange`); `kbn.MultiStepTrainer(sharded_step=True)` (the study's
default) runs each block per device (`sharded_train_step`) and sums all the
gradients in one all-reduce of one flattened buffer, where XLA's own
partitioning sends one buffer per weight array (one Gloo round trip each on
CPU). Every process ends with the same weights and moving statistics,
those of one process trained on the same global batches. kbn's callbacks
compute on every process (their inference passes are collective) and
write only on process 0 (`is_writer`).

Failures under JAX (measured on one machine, two processes over
127.0.0.1, see the README): a process that dies closes its connections,
so the next all-reduce of the others fails at once with a `JaxRuntimeError`
("Gloo all-reduce failed: ... Connection closed by peer"); a process that
stops answering without closing them (frozen, network cut) is declared dead
after `heartbeat_timeout` seconds, and JAX's runtime then aborts the others
with "The following tasks are unhealthy (stopped sending heartbeats)"; a
process that cannot reach the coordinator gives up after
`initialization_timeout` seconds. A process that raises must not exit
normally: JAX's exit handler would wait at its shutdown barrier for the
others, which wait in their next collective for it. Print the error and
end it with `os._exit(1)` (as `recipes/distributed.py` does); the others
then stop at once.

The package's modules, one engine each: `kbn.distributed.tf_distribute` and
`kbn.distributed.jax_processes` (with `kbn.distributed.sharded_step`, the
JAX step's collectives); this module gives both under one name and
holds `is_chief`, which asks whichever engine runs.
"""

import json
import os

import keras

from kbn.distributed.jax_processes import HEARTBEAT_TIMEOUT
from kbn.distributed.jax_processes import INITIALIZATION_TIMEOUT
from kbn.distributed.jax_processes import SHUTDOWN_TIMEOUT
from kbn.distributed.jax_processes import BlockDataParallel
from kbn.distributed.jax_processes import barrier
from kbn.distributed.jax_processes import batch_parts
from kbn.distributed.jax_processes import initialize_jax_processes
from kbn.distributed.jax_processes import is_writer
from kbn.distributed.jax_processes import parse_address
from kbn.distributed.jax_processes import process_count
from kbn.distributed.jax_processes import process_index
from kbn.distributed.jax_processes import process_shards
from kbn.distributed.sharded_step import BatchExchange
from kbn.distributed.sharded_step import batch_exchange
from kbn.distributed.sharded_step import gradient_devices
from kbn.distributed.sharded_step import sharded_train_step
from kbn.distributed.sharded_step import sum_across_devices
from kbn.distributed.sharded_step import sum_gradients
from kbn.distributed.tf_distribute import STRATEGIES
from kbn.distributed.tf_distribute import make_strategy
from kbn.distributed.tf_distribute import replica_batch_size
from kbn.distributed.tf_distribute import use_logical_cpus

__all__ = [
    "BatchExchange",
    "HEARTBEAT_TIMEOUT",
    "INITIALIZATION_TIMEOUT",
    "SHUTDOWN_TIMEOUT",
    "STRATEGIES",
    "BlockDataParallel",
    "barrier",
    "batch_exchange",
    "batch_parts",
    "initialize_jax_processes",
    "is_chief",
    "is_writer",
    "make_strategy",
    "parse_address",
    "process_count",
    "process_index",
    "process_shards",
    "gradient_devices",
    "sharded_train_step",
    "sum_across_devices",
    "sum_gradients",
    "replica_batch_size",
    "use_logical_cpus",
]


def is_chief():
    """Whether this process writes results (worker 0, or no cluster).

    On JAX, process 0 of `jax.distributed` (the only process when it is not
    initialized); otherwise worker 0 (or the chief) of `TF_CONFIG`.
    """
    if keras.backend.backend() == "jax":
        return process_index() == 0
    config = json.loads(os.environ.get("TF_CONFIG", "{}"))
    task = config.get("task", {})
    return (
        task.get("type", "worker") in ("chief", "worker") and task.get("index", 0) == 0
    )
