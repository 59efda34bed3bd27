"""scikit-learn estimators (built by Hydra from ``conf/baselines``) as baselines."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from src.errors import ConfigError
from src.models.base import EpochListener, Estimator


class SklearnBaseline(Estimator):
    """Wraps any scikit-learn estimator so the training loop needs no special case.

    Args:
        estimator: An unfitted scikit-learn estimator.
        task: ``binary``, ``multiclass`` or ``regression``.
    """

    flavor = "sklearn"

    def __init__(self, estimator: Any, task: str) -> None:
        self.estimator = estimator
        self.task = task
        self.history = {}

    def fit(
        self,
        x: np.ndarray,
        y: np.ndarray,
        *,
        validation_data: tuple[np.ndarray, np.ndarray] | None = None,
        listeners: Sequence[EpochListener] = (),
    ) -> SklearnBaseline:
        from sklearn.utils._param_validation import InvalidParameterError

        try:
            self.estimator.fit(x, y)
        except InvalidParameterError as exc:
            raise ConfigError(f"bad baseline parameter: {exc}") from None
        curve = getattr(self.estimator, "loss_curve_", None)
        if curve is not None:
            self.history = {"loss": [float(v) for v in curve]}
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.estimator.predict(x)

    def predict_proba(self, x: np.ndarray) -> np.ndarray | None:
        if self.task == "regression" or not hasattr(self.estimator, "predict_proba"):
            return None
        return self.estimator.predict_proba(x)

    def serving_output(self, x: np.ndarray) -> np.ndarray:
        return self.predict(x)

    def loss(self, x: np.ndarray, y: np.ndarray) -> float | None:
        """Log-loss for classifiers with probabilities; None otherwise (e.g. Perceptron)."""
        probabilities = self.predict_proba(x)
        if probabilities is None:
            return None
        from sklearn.metrics import log_loss

        return float(log_loss(y, probabilities, labels=self.estimator.classes_))

    @property
    def native(self) -> Any:
        return self.estimator
