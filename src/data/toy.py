"""Small datasets that need no download: XOR and Fisher's Iris (shipped with scikit-learn)."""

from __future__ import annotations

import numpy as np

from src.data.dataset import Dataset


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
    )


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
    from sklearn.model_selection import train_test_split

    iris = sklearn_iris()
    x, y = iris.data, iris.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_size, stratify=y, random_state=random_state
    )
    x_val = y_val = None
    if val_size > 0:
        x_train, x_val, y_train, y_val = train_test_split(
            x_train,
            y_train,
            test_size=val_size / (1 - test_size),
            stratify=y_train,
            random_state=random_state,
        )
    if standardize:
        mean, std = x_train.mean(axis=0), x_train.std(axis=0)
        x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
        if x_val is not None:
            x_val = (x_val - mean) / std
    return Dataset(
        name=name,
        task="multiclass",
        x_train=x_train,
        y_train=y_train,
        x_val=x_val,
        y_val=y_val,
        x_test=x_test,
        y_test=y_test,
        feature_names=tuple(iris.feature_names),
        class_names=tuple(iris.target_names),
    )


def load_iris_setosa_2d(name: str = "iris_setosa_2d", standardize: bool = False) -> Dataset:
    """Sepal length and width, setosa (1) vs the rest (0), all 150 rows for training."""
    from sklearn.datasets import load_iris as sklearn_iris

    iris = sklearn_iris()
    x = iris.data[:, :2]
    y = (iris.target == 0).astype(np.int64)
    if standardize:
        x = (x - x.mean(axis=0)) / x.std(axis=0)
    return Dataset(
        name=name,
        task="binary",
        x_train=x,
        y_train=y,
        feature_names=tuple(iris.feature_names[:2]),
        class_names=("other", "setosa"),
    )
