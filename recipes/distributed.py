"""The study's BN MLP trained data-parallel: on tf.distribute, or on several JAX
processes (one per machine, or several on one) through `model.fit`.

Each global batch of 60 images is split across the replicas; with
synchronized batch norm (the default here) every replica normalizes with the
statistics of the whole global batch, so the run is the single-device run,
computed in parallel.

TensorFlow (`tf.distribute`, a custom training loop: Keras 3's `fit` fails
under `MultiWorkerMirroredStrategy`):

    python recipes/distributed.py --strategy mirrored --devices 2
    python recipes/distributed.py --strategy mirrored --devices 2 --unsynchronized
    # several machines: the same command on each, with its own TF_CONFIG
    TF_CONFIG='{"cluster": {"worker": ["host1:12345", "host2:12345"]},
                "task": {"type": "worker", "index": 0}}' \\
        python recipes/distributed.py --strategy multiworker

JAX (`jax.distributed`, `model.fit` on `kbn.MultiStepTrainer`, every process
feeding its half of every global batch):

    # two processes on this machine, started by this command
    python recipes/distributed.py --strategy jax-multiprocess --num-processes 2
    # two machines: one command on each; host1 runs process 0
    python recipes/distributed.py --strategy jax-multiprocess --num-processes 2 \\
        --process-id 0 --coordinator host1:12345     # on host1
    python recipes/distributed.py --strategy jax-multiprocess --num-processes 2 \\
        --process-id 1 --coordinator host1:12345     # on host2
    # throughput: 1 process x 2 threads against 2 processes (pinned, and not)
    python recipes/distributed.py --strategy jax-multiprocess --num-processes 2 \\
        --scaling --batches 2000
    # the same for the study's conv net with batch norm (Adam, batches of 64)
    python recipes/distributed.py --strategy jax-multiprocess --num-processes 2 \\
        --scaling --network convnet --global-batch-size 64 --learning-rate 0.002 \\
        --batches 200 --batches-per-sample 50
    # kbn's step against a hand-written plain-JAX one, side by side
    python recipes/distributed.py --strategy jax-multiprocess --num-processes 2 \\
        --anchor --batches 500 --rounds 5

`--devices` splits this machine's CPU into logical devices, so a mirrored
run works without accelerators. Worker (process) 0 writes
`logs/distributed_<strategy>_..._seed<seed>_<data>/` (for JAX
`distributed_jax<N>proc_...`); the others write nothing. If a JAX process
dies, the others stop with one error line at once; if one stops answering,
after `--heartbeat-timeout` seconds. Figures, with the machine and load
they were measured on: the README's "More than one device" and
docs/multi_process_jax.md.
"""

from kbn_study.commands.distributed import main

if __name__ == "__main__":
    main()
