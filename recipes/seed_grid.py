"""The whole study: every configuration of its table, with several seeds.

Runs the study's 15 configurations (ReLU/sigmoid x learning rate 0.01/1/2 x
good/bad initial weights, 50,000 or 2,000 batches of 60), each with and
without batch norm, `--seeds` times with different initial weights. The runs
execute in one single-threaded worker process per core (`--workers N`), or as
Ray tasks (`--ray [ADDRESS]`, with the `ray` extra); this process
appends every finished run to `<out>/results.csv` at once; run the same
command again to resume an interrupted grid. At the end it writes:

- `<out>/summary.md`, `<out>/summary.csv`: per configuration and network,
  mean and spread of the final accuracies over the seeds, success rate
  (final validation accuracy above 0.5), and the study's published figures;
- `<out>/overview.png`: one small plot per configuration;
- `<out>/<run>/{without_bn,with_bn}/`: TensorBoard logs of every run.

    python recipes/seed_grid.py                       # the full study
    python recipes/seed_grid.py --seeds 5             # randomness as a number
    python recipes/seed_grid.py --configs relu:1:bad,relu:2:bad --seeds 5
    python recipes/seed_grid.py --fraction 0.04       # a quick look (2,000 and 80)
    python recipes/seed_grid.py --workers 1           # one run after the other
    python recipes/seed_grid.py --ray auto            # on a running Ray cluster
    python recipes/seed_grid.py --fraction 0.05 --configs relu:*:good:50000 \
        --seeds 2 --time-workers 1,2                  # speed-up of 2 workers

The full grid is 1.2 million training steps (one seed); its time and its
table on a named machine are in the README ("What the study measured
here"), the quick look's in "A quick look at the whole study".
"""

from kbn_study.commands.seed_grid import main

if __name__ == "__main__":
    main()
