"""Small datasets that need no download: XOR, and Iris and digits (shipped with scikit-learn)."""

from __future__ import annotations

from typing import Any

import numpy as np

from src.data.dataset import Dataset, InputScaling
from src.data.resample import resampling
from src.data.splits import split, standardized


@resampling
def load_xor(name: str = "xor") -> Dataset:
    """The four XOR points; no held-out split exists."""
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
    y = np.array([0, 1, 1, 0], dtype=np.int64)
    return Dataset(
        name=name,
        task="binary",
        x_train=x,
        y_train=y,
        feature_names=("x1", "x2"),
        class_names=("0", "1"),
        source="src.data.toy.load_xor",
    )


@resampling
def load_iris(
    name: str = "iris",
    test_size: float = 0.2,
    val_size: float = 0.0,
    standardize: bool = True,
    random_state: int = 0,
) -> Dataset:
    """Iris, 3 classes: stratified train/test (and optional validation) split.

    Args:
        test_size: Share of all rows held out as the test split.
        val_size: Share of all rows held out for per-epoch validation (0: none).
        standardize: Scale features with the mean and deviation of the training
            split only, so no statistic leaks from held-out rows.
        random_state: Seed of the splits.
    """
    from sklearn.datasets import load_iris as sklearn_iris

    iris = sklearn_iris()
    return _bundled(name, iris, iris.data, test_size, val_size, standardize, random_state, "sklearn.datasets.load_iris")


@resampling
def load_digits(
    name: str = "digits",
    test_size: float = 0.2,
    val_size: float = 0.0,
    standardize: bool = False,
    random_state: int = 0,
) -> Dataset:
    """scikit-learn's 8x8 digits (1797 images, shipped with scikit-learn): raw
    pixels (0-16), which the models scale to [0, 1]; stratified splits as for Iris."""
    from dataclasses import replace

    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    dataset = _bundled(
        name, digits, digits.data, test_size, val_size, standardize, random_state, "sklearn.datasets.load_digits"
    )
    return dataset if standardize else replace(dataset, scaling=InputScaling.dividing(dataset.n_features, 16))


def _bundled(
    name: str,
    bunch: Any,
    x: np.ndarray,
    test_size: float,
    val_size: float,
    standardize: bool,
    random_state: int,
    source: str,
) -> Dataset:
    x_train, y_train, x_val, y_val, x_test, y_test = split(
        x, bunch.target.astype(np.int64), test_size=test_size, val_size=val_size,
        random_state=random_state, stratify=True,
    )
    dataset = Dataset(
        name=name,
        task="multiclass",
        x_train=x_train,
        y_train=y_train,
        x_val=x_val,
        y_val=y_val,
        x_test=x_test,
        y_test=y_test,
        feature_names=tuple(bunch.feature_names),
        class_names=tuple(str(c) for c in bunch.target_names),
        source=source,
    )
    return standardized(dataset) if standardize else dataset


@resampling
def load_iris_setosa_2d(name: str = "iris_setosa_2d", standardize: bool = False) -> Dataset:
    """Sepal length and width, setosa (1) vs the rest (0), all 150 rows for training."""
    from sklearn.datasets import load_iris as sklearn_iris

    iris = sklearn_iris()
    x = iris.data[:, :2]
    y = (iris.target == 0).astype(np.int64)
    dataset = Dataset(
        name=name,
        task="binary",
        x_train=x,
        y_train=y,
        feature_names=tuple(iris.feature_names[:2]),
        class_names=("other", "setosa"),
        source="sklearn.datasets.load_iris",
    )
    return standardized(dataset) if standardize else dataset
