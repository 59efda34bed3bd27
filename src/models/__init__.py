"""Models with one estimator-like interface (fit / predict / score), so the
training loop treats the Keras MLP and the scikit-learn baselines alike."""

from src.models.base import Estimator

__all__ = ["Estimator"]
