"""Data-parallel training of the study's batch-norm MLP (`recipes/distributed.py`).

- `tf_distribute`: on `tf.distribute` (one device, mirrored, multi-worker),
  with the study's step and input pipeline from `tf_loop`;
- `jax_processes`: one process's part of a run on several JAX processes;
- `launcher`: starts a run's processes on this machine; `scaling`: N
  processes x 1 thread against 1 x N;
- `throughput` (batches per second after compilation) and `collectives`
  (what a batch all-reduces, read from XLA's program): the measures a run
  prints.

The command (`kbn_study.commands.distributed`) parses, starts the process
and dispatches; nothing here parses arguments.
"""


def schedule_and_kernels(args):
    """The `Schedule` (global batches) and initial kernels of a distributed
    run of the study's MLP, from the command's parsed arguments: the same
    on every replica and process, from one seed."""
    from kbn_study.models import networks
    from kbn_study.studies import experiment
    from kbn_study.training import runs

    schedule = runs.Schedule(
        batches=args.batches,
        batches_per_sample=args.batches_per_sample,
        batch_size=args.global_batch_size,
        seed=args.seed,
    )
    kernels = networks.initial_weights(
        scale=experiment.WEIGHT_SCALES[args.weights], seed=args.seed
    )
    return schedule, kernels
