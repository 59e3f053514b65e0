"""The inference map of a batch-norm layer whose maths a subclass changed.

`kbn.layers.BatchNorm.inference_affine` derives `outputs = inputs * scale +
offset` in closed form from the moving statistics; when a subclass overrides
`normalize` (or `call`), the closed form may be wrong, and this module reads
the map from the layer itself instead.

It must not be used when a layer gives its map in closed form.
"""

import keras
import numpy as np
from keras import ops


def probed_affine(layer):
    """`(scale, offset)` of `layer`'s inference map, read from probe inputs.

    Evaluates the built layer in inference at two points per feature (the
    moving mean, and one moving standard deviation above it) for the scale
    and offset, then at three random points per feature to check that the
    map is affine: within a tolerance of 100 float epsilons of the output
    dtype (at least 1e-4), relative to the size of the terms.

    Raises:
        ValueError: If the map is not affine per feature, naming the layer.
    """
    dtype = keras.backend.standardize_dtype(layer.moving_mean.dtype)
    mean = _numpy(layer.moving_mean)
    spread = np.sqrt(_numpy(layer.moving_variance) + layer.epsilon)

    def evaluate(points):
        points = np.reshape(points, layer._broadcast_shape).astype(dtype)
        outputs = _numpy(layer(points, training=False))
        return points.astype("float64").reshape(mean.shape), outputs.reshape(mean.shape)

    x0, y0 = evaluate(mean)
    x1, y1 = evaluate(mean + spread)
    scale = (y1 - y0) / (x1 - x0)
    offset = y0 - x0 * scale
    output_dtype = keras.backend.standardize_dtype(layer.compute_dtype)
    tolerance = max(1e-4, 100 * float(np.finfo(output_dtype).eps))
    rng = np.random.default_rng(0)
    for _ in range(3):
        x, y = evaluate(mean + 3.0 * spread * rng.standard_normal(mean.shape))
        expected = x * scale + offset
        bound = tolerance * (np.abs(x * scale) + np.abs(offset) + np.abs(y))
        if not (np.all(np.isfinite(y)) and np.all(np.abs(y - expected) <= bound)):
            raise ValueError(
                f"{type(layer).__name__} layer '{layer.name}' overrides "
                "normalize, and its inference map is not affine per "
                "feature (y = x * scale + offset), so it cannot be "
                "folded. Override inference_affine() if it is affine. "
                "Received: a largest deviation from the affine map of "
                f"{float(np.max(np.abs(y - expected))):.3g}"
            )
    return (
        ops.convert_to_tensor(scale.astype(dtype)),
        ops.convert_to_tensor(offset.astype(dtype)),
    )


def _numpy(tensor):
    return np.asarray(ops.convert_to_numpy(tensor), "float64")
