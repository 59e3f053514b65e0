"""One process of a multi-process JAX run of the study's BN MLP, or the run alone.

    python jax_process.py OUT NUM_PROCESSES PROCESS_ID [COORDINATOR]

Started by `tests/test_distributed.py`. Trains the study's MLP with batch
norm through `kbn_study.training.runs.train_network` (`model.fit` on a
`kbn.MultiStepTrainer`, kbn's callbacks writing TensorBoard events into
`OUT/logs`) for 20 global batches of 60, each process feeding its shard,
and saves the weights, moving statistics and recorded validation curve to
`OUT/state<NUM_PROCESSES>_<PROCESS_ID>.npz`. With NUM_PROCESSES 1 it is the
single-process run of the same global batches. Process 1 is made slower
than the others (it sleeps after every Keras step): the others wait for
it in the next collective, and nothing deadlocks.
"""

import os
import sys
import time
import traceback

os.environ["KERAS_BACKEND"] = "jax"
os.environ.setdefault("KBN_OFFLINE", "1")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import kbn  # noqa: E402
from kbn import distributed  # noqa: E402


def main(out, count, index, coordinator=None):
    count, index = int(count), int(index)
    if count > 1:
        distributed.initialize_jax_processes(
            coordinator,
            count,
            index,
            initialization_timeout=200,  # start-up beside the suite's work
            # Nothing here is about heartbeats (the killed-process test in
            # tests/test_distributed.py is): on a loaded 2-core machine both
            # processes once went 10 s without a heartbeat during their
            # start-up, and the coordination service aborted them.
            heartbeat_timeout=60,
            shutdown_timeout=30,
        )
        keras.distribution.set_distribution(distributed.BlockDataParallel())

    from kbn_study.data import mnist
    from kbn_study.models import networks
    from kbn_study.training import runs

    dataset = mnist.load_mnist()
    keras.utils.set_random_seed(0)
    model = networks.build_mlp(
        networks.initial_weights(seed=0), "relu", batch_norm=kbn.layers.BatchNorm
    )
    schedule = runs.Schedule(batches=20, batches_per_sample=10, batch_size=60)
    # A larger rate than the study's makes the steps move the weights.
    result = runs.train_network(
        model,
        dataset,
        keras.optimizers.SGD(0.5),
        schedule,
        "with_bn",
        log_dir=os.path.join(out, f"logs{count}", "with_bn"),
        verbose=False,
        callbacks=[
            keras.callbacks.LambdaCallback(
                on_train_batch_end=lambda batch, logs: time.sleep(1)
            )
        ]
        if index == 1
        else [],
    )
    state = {v.path: np.asarray(v.value) for v in model.weights}
    state["curve_steps"] = np.array(result.steps)
    state["curve_accuracies"] = np.array(result.accuracies)
    state["test_accuracy"] = np.array(result.test_accuracy)
    np.savez(os.path.join(out, f"state{count}_{index}.npz"), **state)
    distributed.barrier("jax-process-end")
    print(f"process {index} of {count} done")


if __name__ == "__main__":
    try:
        main(*sys.argv[1:])
    except BaseException:
        # Exit at once: a normal exit would wait at JAX's shutdown barrier
        # for the other process, which waits in a collective for this one.
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
