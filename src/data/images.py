"""MNIST and Fashion-MNIST from their idx files, or Keras's download when absent."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

import numpy as np

from src.data.dataset import Dataset, InputScaling
from src.data.files import DataError, data_dir, local_files, missing_files_error
from src.data.resample import resampling
from src.data.splits import carve_validation

CLASS_NAMES = {
    "mnist": tuple(str(d) for d in range(10)),
    "fashion_mnist": (
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ),
}
Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def read_idx(path: Path, magic: int) -> np.ndarray:
    """An idx file as uint8: images (magic 2051) start at byte 16, labels (2049) at 8."""
    with gzip.open(path, "rb") as stream:
        raw = stream.read()
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise DataError(f"{path} is not an idx file of kind {magic} (its magic number is {found})")
    if magic == 2049:
        return np.frombuffer(raw, dtype=np.uint8, offset=8)
    count, rows, cols = (int.from_bytes(raw[i : i + 4], "big") for i in (4, 8, 12))
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(count, rows, cols)


def keras_download(dataset: str) -> Arrays:
    """Keras's own copy (downloaded once to ~/.keras/datasets)."""
    from src.models.backend import import_tensorflow

    import_tensorflow()
    import keras

    (x_train, y_train), (x_test, y_test) = getattr(keras.datasets, dataset).load_data()
    return x_train, y_train, x_test, y_test


@resampling
def load_images(
    name: str,
    dataset: str,
    dir: str | None = None,
    val_size: float = 0.1,
    train_limit: int | None = None,
    test_limit: int | None = None,
    random_state: int = 0,
    download: Callable[[str], Arrays] | None = None,
) -> Dataset:
    """A 28x28 digit or clothing dataset as flat vectors of raw pixels (0-255),
    which the models scale to [0, 1] themselves (``Dataset.scaling``).

    Args:
        dataset: ``mnist`` or ``fashion_mnist``.
        dir: Folder holding ``<dataset>/*-ubyte.gz`` (see :func:`data_dir`).
        val_size: Share of the training split held out for validation; the
            official test split is kept whole for the final figure.
        train_limit, test_limit: Use only the first rows of each official split
            (a quick run on the real files); None for all.
        random_state: Seed of the validation split.
        download: Fallback when the files are absent (default: :func:`keras_download`).
    """
    directory = data_dir(dir)
    files = local_files(dataset, directory)
    if files is not None:
        x_train = read_idx(files["train-images-idx3-ubyte.gz"], 2051)
        y_train = read_idx(files["train-labels-idx1-ubyte.gz"], 2049)
        x_test = read_idx(files["t10k-images-idx3-ubyte.gz"], 2051)
        y_test = read_idx(files["t10k-labels-idx1-ubyte.gz"], 2049)
    else:
        try:
            x_train, y_train, x_test, y_test = (download or keras_download)(dataset)
        except Exception as exc:  # offline, proxy, server: all mean the same to the user
            raise missing_files_error(dataset, directory, exc) from None
    x_train, y_train = x_train[:train_limit], y_train[:train_limit]
    x_test, y_test = x_test[:test_limit], y_test[:test_limit]
    x_train, y_train, x_val, y_val = carve_validation(
        _flat(x_train), y_train.astype(np.int64), val_size, random_state, stratify=True
    )
    return Dataset(
        name=name,
        task="multiclass",
        x_train=x_train,
        y_train=y_train,
        x_val=x_val,
        y_val=y_val,
        x_test=_flat(x_test),
        y_test=y_test.astype(np.int64),
        class_names=CLASS_NAMES[dataset],
        scaling=InputScaling.dividing(28 * 28, 255),
        source=str((directory / dataset).resolve()) if files is not None else f"keras.datasets.{dataset}.load_data",
    )


def _flat(images: np.ndarray) -> np.ndarray:
    return images.reshape(len(images), -1).astype(np.float32)
