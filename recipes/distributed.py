"""The study's BN MLP trained data-parallel on tf.distribute.

Each global batch of 60 images is split across the replicas; with
synchronized batch norm (the default here) every replica normalizes with the
statistics of the whole global batch, so the run is the single-device run,
computed in parallel.

    python recipes/distributed.py --strategy mirrored --devices 2
    python recipes/distributed.py --strategy mirrored --devices 2 --unsynchronized
    # several machines: the same command on each, with its own TF_CONFIG
    TF_CONFIG='{"cluster": {"worker": ["host1:12345", "host2:12345"]},
                "task": {"type": "worker", "index": 0}}' \\
        python recipes/distributed.py --strategy multiworker

`--devices` splits this machine's CPU into logical devices, so a mirrored
run works without accelerators. Worker 0 writes
`logs/distributed_<strategy>_<batches>_seed<seed>/`; other workers write
nothing. TensorFlow backend only.
"""

from kbn_study.commands.distributed import main

if __name__ == "__main__":
    main()
