"""The estimator interface shared by every model family."""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


CHECKPOINTS_PER_TRAINING = 10
"""Times a training hands its epochs to the listeners while it runs, at least.

The compiled Keras engine runs a training in chunks of at most a tenth of its
epochs and calls the listeners after each chunk, so anything that acts on a
listener's word (early stopping, a pruner) acts within a tenth of the epochs. A
sweep's pruner is asked at these points only: asking in between would judge epochs
that have already run, and each report is a write to the study's storage."""


class EpochListener:
    """Receives per-epoch metrics from an iteratively trained model.

    Listeners log metrics, stop on a non-finite loss or report to a pruner. Any of
    them may raise to stop training; the exception leaves ``fit``.
    """

    def on_epoch_end(self, epoch: int, logs: Mapping[str, float]) -> None:
        """Called after each epoch; ``epoch`` counts from 1."""

    def on_train_end(self) -> None:
        """Called once when training ends normally."""


class Estimator(abc.ABC):
    """A model that can be fit, asked for predictions and logged to MLflow.

    Attributes:
        flavor: Name of the MLflow flavor module that logs :attr:`native`
            (``keras`` or ``sklearn``).
        task: ``binary``, ``multiclass`` or ``regression``.
        history: Per-epoch metrics of the last fit, by name (empty for models
            that are not trained epoch by epoch).
    """

    flavor: str
    task: str
    history: dict[str, list[float]]

    @abc.abstractmethod
    def fit(
        self,
        x: np.ndarray,
        y: np.ndarray,
        *,
        validation_data: tuple[np.ndarray, np.ndarray] | None = None,
        listeners: Sequence[EpochListener] = (),
    ) -> Estimator:
        """Trains on ``x, y`` and returns self."""

    @abc.abstractmethod
    def predict(self, x: np.ndarray) -> np.ndarray:
        """Class labels for classification, values for regression."""

    def score(self, x: np.ndarray, y: np.ndarray) -> float:
        """Accuracy for classification, R² for regression (as scikit-learn's ``score``)."""
        from sklearn.metrics import accuracy_score, r2_score

        predicted = self.predict(x)
        if self.task == "regression":
            return float(r2_score(y, predicted))
        return float(accuracy_score(y, predicted))

    @abc.abstractmethod
    def loss(self, x: np.ndarray, y: np.ndarray) -> float | None:
        """The model's own training loss on ``x, y``, or None where it has none."""

    @property
    @abc.abstractmethod
    def native(self) -> Any:
        """The underlying library object, as logged by the MLflow flavor."""

    @abc.abstractmethod
    def serving_output(self, x: np.ndarray) -> np.ndarray:
        """What the logged model's ``predict`` returns for ``x`` (for its signature)."""

    def predict_proba(self, x: np.ndarray) -> np.ndarray | None:
        """Class probabilities, one column per class, or None for a model without
        them (a regressor, a Perceptron)."""
        return None

    def fit_warnings(self) -> list[str]:
        """What the last fit warned about (a baseline that did not converge), one
        line each; the training loop reports them once and tags the run."""
        return []

    def parameters_finite(self) -> bool:
        """Whether every learned weight is finite (True for models that cannot diverge)."""
        return True

    def summary_metrics(self) -> dict[str, float]:
        """Figures that describe the fitted model itself, such as its parameter count."""
        return {}

    def history_epochs(self) -> list[int]:
        """The epoch (from 1) of each value in :attr:`history`: every epoch, unless
        the model records only some of a long training's epochs."""
        return list(range(1, len(self.history.get("loss", ())) + 1))

    def weight_snapshots(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Each hidden layer's kernel at the start and at the end of the last fit,
        by layer name; empty for models without hidden layers of their own."""
        return {}
