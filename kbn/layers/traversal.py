"""Finding layers inside a model: kbn's batch norms, or layers of any type.

It must not change the layers it finds.
"""

import keras

from kbn.layers.batch_norm import BatchNorm
from kbn.layers.bn_lstm_layer import BNLSTM


def batch_norm_layers(model):
    """Every kbn `BatchNorm` and `BNLSTM` in `model`, nested too.

    Walks sub-models, the cells of recurrent layers and layers held as
    attributes, in breadth-first order, each layer once.
    """
    return layers_of_type(model, (BatchNorm, BNLSTM))


def layers_of_type(model, types):
    """Every layer of `model` that is an instance of `types`, nested too.

    The walk of `batch_norm_layers`, for other layer types (for example
    `keras.layers.BatchNormalization`).
    """
    found, queue, seen = [], [model], set()
    while queue:
        layer = queue.pop(0)
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if isinstance(layer, types):
            found.append(layer)
        queue.extend(getattr(layer, "layers", []) or [])
        cell = getattr(layer, "cell", None)
        if cell is not None:
            queue.append(cell)
        queue.extend(
            value
            for value in vars(layer).values()
            if isinstance(value, keras.layers.Layer) and value is not layer
        )
    return found
