"""Keras layers of kbn."""

from kbn.layers.batch_norm import BatchNorm
from kbn.layers.bn_lstm_cell import BNLSTMCell
from kbn.layers.bn_lstm_cell import bn_lstm

__all__ = ["BNLSTMCell", "BatchNorm", "bn_lstm"]
