"""Keras layers of kbn."""

from kbn.layers.batch_norm import BatchNorm
from kbn.layers.bn_lstm_layer import BNLSTM
from kbn.layers.conversion import convert_batch_norm
from kbn.layers.conversion import convert_to_keras_batch_norm
from kbn.layers.traversal import batch_norm_layers

__all__ = [
    "BNLSTM",
    "BatchNorm",
    "batch_norm_layers",
    "convert_batch_norm",
    "convert_to_keras_batch_norm",
]
