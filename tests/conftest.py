import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Tests never download: Keras's cache is an empty folder and the download
# is off, so MNIST comes from the offline subset (or from explicit files).
os.environ["KERAS_HOME"] = tempfile.mkdtemp(prefix="kbn-tests-keras-home-")
os.environ["KBN_OFFLINE"] = "1"

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)


@pytest.fixture
def rng():
    return np.random.default_rng(20150211)


@pytest.fixture(scope="session")
def mnist_subset():
    from kbn_study import mnist

    return mnist.load_mnist()
