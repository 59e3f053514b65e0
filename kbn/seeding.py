"""`set_random_seed`: Keras's seeding, without importing TensorFlow on JAX.

Holds one function; it must not hold anything else random (initial weights,
batch orders are the study's).

`keras.utils.set_random_seed` seeds Python, NumPy, Keras's global
`SeedGenerator` and, whenever TensorFlow is installed, `tf.random`, which
it imports to do so: on the JAX backend that import costs about 8 s of
start-up on a 2-core CPU and seeds a generator nothing uses. kbn's
function does the same as Keras's, and leaves TensorFlow alone where it is
neither the backend nor already imported.
"""

import random
import sys

import keras
import numpy as np


def set_random_seed(seed):
    """Seeds Python, NumPy and Keras as `keras.utils.set_random_seed` does.

    On the TensorFlow backend, or once TensorFlow is imported, it *is*
    `keras.utils.set_random_seed`. Otherwise it does the same without
    importing TensorFlow: `random.seed`, `np.random.seed`, and Keras's
    global seed, from which `keras.random` and the initializers without a
    seed draw (the same draws as after Keras's function: tested).

    Args:
        seed: Integer, the random seed.
    """
    if keras.backend.backend() == "tensorflow" or "tensorflow" in sys.modules:
        keras.utils.set_random_seed(seed)
        return
    if not isinstance(seed, int):
        raise ValueError(
            "Expected `seed` argument to be an integer. "
            f"Received: seed={seed} (of type {type(seed)})"
        )
    # What keras/src/utils/rng_utils.py does besides seeding TensorFlow:
    # store the seed, and drop the global SeedGenerator so that it is made
    # anew from it.
    from keras.src.backend.common import global_state
    from keras.src.random import seed_generator
    from keras.src.utils import rng_utils

    global_state.set_global_attribute(rng_utils.GLOBAL_RANDOM_SEED, seed)
    global_state.set_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR, None)
    random.seed(seed)
    np.random.seed(seed)
