"""kbn's batch norm in a model built with Keras's: keras.applications' MobileNetV2.

`kbn.convert_batch_norm` swaps every `keras.layers.BatchNormalization` of a
built model for kbn's `BatchNorm`, weights and moving statistics carried
over. This recipe builds MobileNetV2 (alpha 0.35, `weights=None`, digits
padded to 32x32 and repeated into three channels; 52 batch norms with
Keras's momentum 0.999) once per variant from the same seed, converts it,
and trains every variant with Adam on the same batches:

- keras_bn: Keras's layer; kbn_bn: kbn's with the same configuration (the
  same numbers, so the same curve);
- kbn_ghost: ghost batches of 16; kbn_renorm: batch renormalization;
- kbn_population: momentum=None, the moving statistics as the average of
  every batch seen (the paper's population statistics).

    python recipes/keras_models.py            # README: the table, time, machine
    python recipes/keras_models.py --variants keras_bn,kbn_bn --batches 100

Writes `logs/mobilenet_v2_*/` like `compare.py`: results, curves, the plot
(accuracy.png) and a TensorBoard folder per variant.
"""

from kbn_study.commands.keras_models import main

if __name__ == "__main__":
    main()
