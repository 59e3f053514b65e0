"""Internal covariate shift, made visible (Ioffe & Szegedy 2015, Figure 1).

The study's 784-100-100-100-10 sigmoid network (its sigmoid configuration:
SGD at learning rate 0.01, good weights, 50,000 batches) trains with and
without batch norm from the same weights on the same batches of 60. Along
the way, `kbn.callbacks.ActivationPercentiles` records the 15th, 50th and
85th percentiles of the input of every sigmoid of the last hidden layer on
fixed validation images (up to 1,000; the offline subset has 357), in
training mode: batch norm normalizes with the probe's own statistics. The
figure: validation accuracy, then one unit's percentile band without and
with batch norm, side by side. The drift: how far each unit's median moves
from a tenth of the training to its end, averaged over the layer's 100
units, also in widths of the 15-85 band.

Run (the paper's 50,000 batches; its time and figures on a named machine:
the README and docs/papers.md):

    python recipes/covariate_shift.py
    python recipes/covariate_shift.py --learning-rate 1 --unit 7

Expected with the defaults: without batch norm the band of unit 0 drifts,
then splits wide open as the network starts to learn; the medians of the
layer's units move several times farther than with batch norm, whose band
stays put after the first few hundred batches (the measured drifts: the
README, "The papers behind the study").

Writes `logs/covariate_shift_<run>/`: covariate_shift.png, drift.csv,
percentiles.csv (every unit), results.csv, curves.csv, accuracy.png and one
TensorBoard run per network (`activation_percentiles/...` scalars and
histograms beside the accuracy).
"""

from kbn_study.commands.covariate_shift import main

if __name__ == "__main__":
    main()
