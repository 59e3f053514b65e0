"""Keras layers of kbn: `BatchNorm`, `BNLSTM`, and `batch_norm_layers`.

The layers' modules: `batch_norm` (the layer and its hooks), `renorm`
(batch renormalization's part of it), `recording` (the statistics-recording
protocol both layers speak), `batch_norm_options` (argument checks),
`affine_probe` (a subclass's inference map, probed), `bn_lstm_layer` and
`recurrence` (the recurrent layer and its TensorFlow loop), `traversal`
(finding the layers in a model). Nothing here trains or writes files.
"""

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
