"""kbn: batch normalization for Keras 3, and the Ioffe & Szegedy MNIST study.

Choose the backend before importing kbn (`KERAS_BACKEND=jax` or
`tensorflow`); kbn works on both.
"""

from kbn import callbacks
from kbn import data
from kbn import layers
from kbn import models
from kbn import ops
from kbn.data import load_mnist
from kbn.experiment import ExperimentConfig
from kbn.experiment import train_and_test
from kbn.folding import fold_batch_norm
from kbn.population import recompute_batch_norm_statistics

__version__ = "0.1.0"

__all__ = [
    "ExperimentConfig",
    "callbacks",
    "fold_batch_norm",
    "recompute_batch_norm_statistics",
    "data",
    "layers",
    "load_mnist",
    "models",
    "ops",
    "train_and_test",
    "__version__",
]
