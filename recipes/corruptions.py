"""Batch norm when the test data is corrupted: source statistics,
prediction-time batch statistics (Nado et al., 2020), AdaBN (Li et al.,
2016), Schneider et al.'s (2020) mix of source and target statistics, and
Tent (Wang et al., 2021).

The study's conv net (3 stride-2 convolutions, Adam, 300 batches of 60) and
its ReLU MLP (SGD 0.1, 2,000 batches) train on the clean digits, 3 seeds
each; then each is tested on the clean test digits and on corrupted copies
of them in the spirit of MNIST-C (Gaussian noise, blur, contrast,
brightness, fog-like haze, rotation, inversion; 3 severities each, made
reproducibly with NumPy, `kbn_study.data.corruptions`) by every method:
source statistics, test batches of 1, 8, 64 and 512, AdaBN on the whole
corrupted set, Schneider's N = 8 and 64 mixed into test batches of 1 and 8,
and Tent (one online pass in batches of 64, Adam 0.001 and 0.01).

Run (offline, JAX by default):

    python recipes/corruptions.py              # or: kbn-corruptions
    python recipes/corruptions.py --models convnet --corruptions blur,fog --severities 3

It prints a table per network (error per corruption, averaged over the
severities, and their mean; mean ± std over seeds) and a verdict per paper's
claim, with its numbers. On the development machine (AMD EPYC, 2 cores,
shared) the defaults took 7 min 13 s wall, 4 min 33 s of CPU; the tables,
the figure and what reproduced: README ("Batch norm when the data moves")
and docs/papers.md.

Writes `logs/corruptions_<run>/`: summary.md, summary.csv, results.csv
(every network, method, corruption and severity), training.csv,
corruptions.png, config.json, one TensorBoard run per network's training
(`training/`), and one HParams trial per network, method and corruption
(`trials/`: model, method, corruption, test batch size, N, seed).
"""

from kbn_study.commands.corruptions import main

if __name__ == "__main__":
    main()
