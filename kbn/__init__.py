"""kbn: batch normalization for Keras 3, written from primitives.

- `kbn.layers`: `BatchNorm` (same numbers as `keras.layers.BatchNormalization`,
  plus ghost batches, population statistics, renorm schedules, hooks for
  subclasses) and `BNLSTM` (recurrent batch norm in a compiled loop);
- `kbn.ops`: the batch-norm maths as pure functions;
- `kbn.callbacks`: callbacks for `model.fit` that count global steps;
- `kbn.MultiStepTrainer`: many training batches per compiled call;
- `kbn.fold_batch_norm`, `kbn.recompute_batch_norm_statistics`;
- `kbn.adaptation`: batch norms adapted to new data (AdaBN, prediction-time
  batch norm, Schneider et al.'s mixed statistics, Tent);
- `kbn.convert_batch_norm`: any Keras model's `BatchNormalization` layers
  swapped for kbn's (and `kbn.layers.convert_to_keras_batch_norm`, back);
- `kbn.event_file.EventFileWriter`: TensorBoard files without TensorFlow;
- `kbn.set_random_seed`: Keras's seeding without importing TensorFlow on JAX.

The library imports Keras and NumPy only. The Ioffe & Szegedy MNIST study
built on it is the separate package `kbn_study`. Choose the backend before
importing kbn (`KERAS_BACKEND=jax` or `tensorflow`); kbn works on both.

It must not import anything of the study (`kbn_study`) or any package but
Keras and NumPy.
"""

from kbn import adaptation
from kbn import callbacks
from kbn import layers
from kbn import ops
from kbn.adaptation import Tent
from kbn.adaptation import adapt_batch_norm_statistics
from kbn.adaptation import use_moving_statistics
from kbn.adaptation import use_test_batch_statistics
from kbn.folding import fold_batch_norm
from kbn.layers.conversion import convert_batch_norm
from kbn.population import recompute_batch_norm_statistics
from kbn.seeding import set_random_seed
from kbn.trainer import MultiStepTrainer

# The one place of the version: the build reads it from here (pyproject.toml).
__version__ = "0.3.0"

__all__ = [
    "MultiStepTrainer",
    "Tent",
    "__version__",
    "adapt_batch_norm_statistics",
    "adaptation",
    "callbacks",
    "convert_batch_norm",
    "fold_batch_norm",
    "layers",
    "ops",
    "recompute_batch_norm_statistics",
    "set_random_seed",
    "use_moving_statistics",
    "use_test_batch_statistics",
]
