"""Batch norm with small or non-i.i.d. batches, and batch renormalization
(Ioffe, 2017).

The study's ReLU MLP (or, with `--model convnet`, a conv net) trains with
kbn's batch norm, with batch renorm (`BatchNorm(renorm=True)` and
`kbn.callbacks.RenormClippingSchedule`: rmax 1 -> 3 and dmax 0 -> 5 on the
paper's schedule, read on a 50,000-step axis and scaled to the run), and
without normalization, under three batch regimes: i.i.d. batches of 60;
micro-batches (ghost batches of 2 and of 4 inside each batch of 60,
`virtual_batch_size`); and non-i.i.d. batches (each batch of 60 drawn from 2
classes, 30 examples each). Every cell is tested with the paper's population
statistics (`kbn.population`), over 3 seeds.

Run (30 runs of 2,000 batches; the conv net runs on TensorFlow and is far
slower; times and tables on a named machine: docs/papers.md):

    python recipes/small_batches.py
    python recipes/small_batches.py --model convnet
    python recipes/small_batches.py --dataset fashion_mnist --seeds 5

The paper's claims: batch norm loses accuracy with micro-batches and with
non-i.i.d. batches; batch renorm recovers most of it. The command prints,
regime by regime, what the table says about them.

Writes `logs/small_batches_<run>/`: summary.md (the Markdown table),
summary.csv, results.csv (every run), curves.csv, small_batches.png and one
TensorBoard run per cell and seed (`<regime>/<normalization>_seed<n>/`).
"""

from kbn_study.commands.small_batches import main

if __name__ == "__main__":
    main()
