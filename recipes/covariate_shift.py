"""Internal covariate shift, made visible (Ioffe & Szegedy 2015, Figure 1).

The study's 784-100-100-100-10 sigmoid network (SGD, learning rate 1, good
weights) trains with and without batch norm from the same weights on the same
batches of 60. Along the way, `kbn.callbacks.ActivationPercentiles` records
the 15th, 50th and 85th percentiles of the input of every sigmoid of the last
hidden layer on 1,000 fixed validation images (training mode: batch norm
normalizes with the probe's statistics). The figure: validation accuracy,
then one unit's percentile band without and with batch norm, side by side.
The drift: how far each unit's median moves from a tenth of the training to
its end, averaged over the layer's 100 units, also in widths of the 15-85
band.

Run (the paper's 50,000 batches; about a minute on a 2-core CPU, offline
MNIST subset, JAX backend):

    python recipes/covariate_shift.py
    python recipes/covariate_shift.py --batches 5000 --unit 7

Expected: without batch norm the band moves and widens for most of the
training; with it, it stays put after the first steps.

Writes `logs/covariate_shift_<run>/`: covariate_shift.png, drift.csv,
percentiles.csv (every unit), results.csv, curves.csv, accuracy.png and one
TensorBoard run per network (`activation_percentiles/...` scalars and
histograms beside the accuracy).
"""

from kbn_study.commands.covariate_shift import main

if __name__ == "__main__":
    main()
