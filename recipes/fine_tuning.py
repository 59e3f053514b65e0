"""Fine-tuning a pretrained network with frozen batch norms: the Keras
issue everyone hit (keras-team/keras#9214, #9965, #11590, #7085), measured.

The study's conv net is pretrained on digits 0-4 (300 batches of 60, Adam),
then a new 5-way head is trained on digits 5-9 (150 batches) on top of it,
3 seeds, in five regimes: frozen layers with batch norms in inference mode
(Keras 3's rule, kbn's `BatchNorm(trainable=False)`); frozen layers whose
batch norms still normalize with the training batch's statistics but keep
the moving statistics of digits 0-4 (the Keras 2.1.x-2.2.x behaviour the
issues reported); the same with moving statistics that follow the new
batches (before Keras 2.1.3); AdaBN on the unlabeled new digits, then
frozen (`kbn.adapt_batch_norm_statistics`); and full fine-tuning.

Run (offline, JAX by default):

    python recipes/fine_tuning.py              # or: kbn-fine-tuning
    python recipes/fine_tuning.py --seeds 5 --fine-tune-batches 500

It prints the validation accuracy at three points of the fine-tuning, the
test accuracy on digits 5-9 in inference mode and with the statistics of
batches of 60 (what training saw), their gap, and a verdict per claim. On
the development machine (AMD EPYC, 2 cores, shared) the defaults took
5 min 19 s wall, 3 min of CPU; the table, the figure and what reproduced:
README ("Batch norm when the data moves") and docs/papers.md.

Writes `logs/fine_tuning_<run>/`: summary.md, summary.csv, results.csv,
curves.csv, fine_tuning.png, config.json, and one TensorBoard run per
regime and seed (`<regime>/seed<k>/`, its validation curve), each an
HParams trial (regime, seed, batches).
"""

from kbn_study.commands.fine_tuning import main

if __name__ == "__main__":
    main()
