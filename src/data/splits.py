"""Splitting and scaling shared by the loaders: statistics come from the
training split only, so nothing leaks from held-out rows."""

from __future__ import annotations

import numpy as np

from src.data.dataset import Dataset, InputScaling


def carve_validation(
    x: np.ndarray, y: np.ndarray, val_size: float, random_state: int, stratify: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """``x, y`` split into train and validation (None, None without ``val_size``)."""
    if not val_size:
        return x, y, None, None
    from sklearn.model_selection import train_test_split

    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=val_size, stratify=y if stratify else None, random_state=random_state
    )
    return x_train, y_train, x_val, y_val


def split(
    x: np.ndarray,
    y: np.ndarray,
    *,
    test_size: float,
    val_size: float,
    random_state: int,
    stratify: bool,
) -> tuple[np.ndarray, ...]:
    """Train, validation and test splits; ``val_size`` and ``test_size`` are shares of all rows.

    Returns:
        ``x_train, y_train, x_val, y_val, x_test, y_test`` (validation may be None).
    """
    from sklearn.model_selection import train_test_split

    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_size, stratify=y if stratify else None, random_state=random_state
    )
    x_train, y_train, x_val, y_val = carve_validation(
        x_train, y_train, val_size / (1 - test_size) if val_size else 0, random_state, stratify
    )
    return x_train, y_train, x_val, y_val, x_test, y_test


def standardized(dataset: Dataset) -> Dataset:
    """The dataset with its models told to standardize their inputs with the
    training split's mean and deviation (the arrays stay in their own units)."""
    from dataclasses import replace

    return replace(dataset, scaling=InputScaling.standardizing(dataset.x_train))
