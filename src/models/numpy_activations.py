"""The NumPy MLP's activations and their derivatives.

Kept apart from :mod:`src.models.numpy_mlp` so the config schema reads the names
without importing the estimator interface (and scikit-learn with it).
"""

from __future__ import annotations

import numpy as np

ACTIVATIONS = ("linear", "sigmoid", "tanh", "relu")


def activate(name: str, z: np.ndarray) -> np.ndarray:
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-z))
    if name == "tanh":
        return np.tanh(z)
    if name == "relu":
        return np.maximum(z, 0.0)
    return z


def derivative(name: str, z: np.ndarray, a: np.ndarray) -> np.ndarray:
    """d activation / dz, from the pre-activation ``z`` and the activation ``a``."""
    if name == "sigmoid":
        return a * (1.0 - a)
    if name == "tanh":
        return 1.0 - a**2
    if name == "relu":
        return (z > 0).astype(z.dtype)
    return np.ones_like(z)
