"""Keras layers of kbn."""

from kbn.layers.batch_norm import BatchNorm

__all__ = ["BatchNorm"]
