"""kbn's data-parallel training step against the plain-JAX anchor, in turn.

Holds `measure` (`recipes/distributed.py --anchor`): in the processes of a
run, the study's MLP trained through kbn's path (`model.fit` on the
study's `kbn.MultiStepTrainer`, each process feeding its shard of every
global block), once with the sharded step (the default) and once with XLA
partitioning the step (`sharded_step=False`), and by the hand-written
`Anchor`, from the same kernels on the same global batches, in turn within
each round, so that all three see the same machine; it prints batches per
second of each (median, min, max over the rounds), kbn's ratio to the
anchor round by round, and what each step exchanges. It
must not parse arguments or start processes (the command does), and times
the training steps only: the study's sampling callbacks are the run's
(`jax_processes.train`), not the step's.
"""

import time

import keras
import numpy as np

import kbn
from kbn import distributed
from kbn_study.studies.distributed import schedule_and_kernels
from kbn_study.studies.distributed.anchor import Anchor
from kbn_study.studies.distributed.collectives import count_collectives
from kbn_study.studies.distributed.collectives import describe
from kbn_study.studies.distributed.collectives import trainer_collectives
from kbn_study.training import runs


def measure(args, dataset, index, count):
    """Times kbn's steps and the anchor's in `args.rounds` rounds of
    `args.batches` batches each (process 0 prints them).

    Returns:
        `{"kbn": [...], "kbn partitioned": [...], "anchor": [...]}`, batches
        per second per round, with `"ratios"` (`{"kbn / anchor": [...],
        "kbn partitioned / anchor": [...]}`) and `"collectives"` (each
        step's, `collectives.count_collectives`).
    """
    from kbn_study.models import networks

    say = print if index == 0 else (lambda *a, **k: None)
    if count > 1:
        keras.distribution.set_distribution(distributed.BlockDataParallel())
    schedule, kernels = schedule_and_kernels(args)
    per_step = schedule.resolved_batches_per_step
    if args.batches % per_step:
        raise ValueError(
            f"--batches must be a multiple of {per_step} (batches per compiled "
            f"call). Received: batches={args.batches}"
        )
    calls = args.batches // per_step
    contenders = {}
    for name, sharded_step in (("kbn", True), ("kbn partitioned", False)):
        kbn.set_random_seed(args.seed)
        model = networks.build_mlp(kernels, args.activation, kbn.layers.BatchNorm)
        trainer = runs.make_trainer(
            model,
            dataset,
            keras.optimizers.SGD(args.learning_rate),
            schedule,
            sharded_step=sharded_step,
        )
        blocks = runs.training_blocks(schedule, dataset)
        if count > 1:
            blocks = distributed.process_shards(blocks)
        contenders[name] = _fit_round(trainer, blocks)
    anchor = Anchor(kernels, dataset.train.images, args.learning_rate)
    contenders["anchor"] = _anchor_round(
        anchor, runs.training_blocks(schedule, dataset)
    )
    for run_round in contenders.values():
        run_round(1)  # compilation
    say(
        f"kbn's step against the plain-JAX anchor: {count} process(es), "
        f"{len(keras.distribution.list_devices())} device(s), global batch "
        f"{args.global_batch_size}, {args.rounds} rounds of {args.batches:,} "
        f"batches each, {per_step} per compiled call; kbn: sharded step "
        "(the default), kbn partitioned: sharded_step=False",
        flush=True,
    )
    rates = {name: [] for name in contenders}
    for round_ in range(args.rounds):
        for name, run_round in contenders.items():
            rates[name].append(args.batches / run_round(calls))
        say(
            f"  round {round_ + 1}: "
            + ", ".join(f"{n} {r[-1]:,.1f}" for n, r in rates.items())
            + f" batches/s; kbn / anchor {rates['kbn'][-1] / rates['anchor'][-1]:.3f}",
            flush=True,
        )
    ratios = {
        f"{name} / anchor": [k / a for k, a in zip(rates[name], rates["anchor"])]
        for name in ("kbn", "kbn partitioned")
    }
    for name, values in rates.items():
        say(
            f"{name:>24}: median {np.median(values):,.1f} batches/s (min "
            f"{min(values):,.1f}, max {max(values):,.1f})"
        )
    for name, values in ratios.items():
        say(
            f"{name:>24}: median {np.median(values):.3f} (min {min(values):.3f}, "
            f"max {max(values):.3f})"
        )
    exchanged = {
        name: trainer_collectives(run_round.trainer, per_step, args.global_batch_size)
        for name, run_round in contenders.items()
        if name != "anchor"
    }
    exchanged["anchor"] = count_collectives(
        anchor.lower(per_step, args.global_batch_size).as_text()
    )
    for name, counts in exchanged.items():
        say(f"{name:>24}, all-reduced per batch: {describe(counts, per_step)}")
    distributed.barrier("kbn-side-by-side-end")
    return {**rates, "ratios": ratios, "collectives": exchanged}


def _fit_round(trainer, blocks):
    """A round of kbn's path: `calls` compiled calls through `fit`, timed."""

    def run_round(calls):
        start = time.perf_counter()
        trainer.fit(blocks, epochs=1, steps_per_epoch=calls, shuffle=False, verbose=0)
        return time.perf_counter() - start

    run_round.trainer = trainer
    return run_round


def _anchor_round(anchor, blocks):
    """A round of the anchor: `calls` compiled calls, timed to the end of
    the last (JAX dispatches asynchronously)."""

    def run_round(calls):
        start = time.perf_counter()
        for _ in range(calls):
            loss = anchor.train(*next(blocks))
        loss.block_until_ready()
        return time.perf_counter() - start

    return run_round
