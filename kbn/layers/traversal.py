"""Finding kbn's batch-norm layers inside a model.

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
    found, queue, seen = [], [model], set()
    while queue:
        layer = queue.pop(0)
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if isinstance(layer, (BatchNorm, BNLSTM)):
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
