"""The estimator interface shared by every model family.

Every model keeps scikit-learn's estimator contract: ``__init__`` only stores its
settings (so ``get_params`` and ``sklearn.base.clone`` work), ``fit`` learns the
task, classes and input scaling from its data and returns ``self``, and what it
learns ends in ``_``.
"""

from __future__ import annotations

import abc
import contextlib
from collections import OrderedDict
from collections.abc import Hashable, Iterator, Sequence
from typing import Any, Generic, TypeVar

import numpy as np
from sklearn.base import BaseEstimator

from src.data.dataset import DataSpec
from src.listeners import EpochListener


CHECKPOINTS_PER_TRAINING = 10
"""Times a training hands its epochs to the listeners while it runs, at least.

The compiled Keras engine runs a training in chunks of at most a tenth of its
epochs and calls the listeners after each chunk, so anything that acts on a
listener's word (early stopping, a pruner) acts within a tenth of the epochs. A
sweep's pruner is asked at these points only: asking in between would judge epochs
that have already run, and each report is a write to the study's storage."""


_Value = TypeVar("_Value")


class RecentlyUsed(Generic[_Value]):
    """At most ``size`` values by key, the one used least recently dropped first:
    what a process keeps of its trained structures (traced programs, networks)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._values: OrderedDict[Hashable, _Value] = OrderedDict()

    def get(self, key: Hashable) -> _Value | None:
        value = self._values.get(key)
        if value is not None:
            self._values.move_to_end(key)
        return value

    def put(self, key: Hashable, value: _Value) -> _Value:
        self._values[key] = value
        self._values.move_to_end(key)
        if len(self._values) > self.size:
            self._values.popitem(last=False)
        return value

    def newest(self) -> _Value | None:
        """The value put or got last."""
        return next(reversed(self._values.values()), None)


_disposable = False


@contextlib.contextmanager
def disposable_models() -> Iterator[None]:
    """Declares that every model fitted inside is dropped before the next one is
    fitted inside, as a sweep worker's trials are: an estimator may then train
    the native model of its last fit of the same structure again, re-initialized,
    instead of building one (see :class:`~src.models.keras_mlp.KerasMLP`). A
    model fitted inside must not be used once the next one is fitted."""
    global _disposable
    before, _disposable = _disposable, True
    try:
        yield
    finally:
        _disposable = before


def models_are_disposable() -> bool:
    """Whether the caller is inside :func:`disposable_models`."""
    return _disposable


class Estimator(BaseEstimator, abc.ABC):
    """A model that can be fit, asked for predictions and logged to MLflow.

    Attributes:
        flavor: Name of the MLflow flavor that logs :attr:`native` (``keras``,
            ``sklearn`` or ``pyfunc``), as the runs' ``flavor`` tag shows it.
        pip_packages: The packages the logged model needs, pinned at their
            installed versions in its requirements.
        names_columns: Whether the flavor's signature can name input columns
            (MLflow's Keras flavor takes array signatures only).
        spec_: What the last fit was told about its data (task, classes, scaling).
        history_: Per-epoch metrics of the last fit, by name (empty for models
            that are not trained epoch by epoch).
    """

    flavor: str
    pip_packages: tuple[str, ...]
    names_columns = True
    spec_: DataSpec
    history_: dict[str, list[float]]

    @abc.abstractmethod
    def fit(
        self,
        x: np.ndarray,
        y: np.ndarray,
        *,
        spec: DataSpec | None = None,
        validation_data: tuple[np.ndarray, np.ndarray] | None = None,
        listeners: Sequence[EpochListener] = (),
    ) -> Estimator:
        """Trains on raw inputs ``x`` and targets ``y``, and returns self.

        Args:
            spec: The task, classes and input scaling of the data (inferred
                from ``y`` when not given, with no scaling).
            validation_data: Held-out ``(x, y)`` scored every epoch, not trained on.
            listeners: Told of every epoch's metrics (logging, pruning, divergence).
        """

    def _start_fit(self, y: np.ndarray, spec: DataSpec | None) -> DataSpec:
        """Records what ``fit`` is told about its data, or what ``y`` shows."""
        self.spec_ = spec or DataSpec.inferred(y)
        self.history_ = {}
        return self.spec_

    @property
    def task_(self) -> str:
        """``binary``, ``multiclass`` or ``regression``, as learned by ``fit``."""
        return self.spec_.task

    @abc.abstractmethod
    def predict(self, x: np.ndarray) -> np.ndarray:
        """Class labels for classification, values for regression."""

    def score(self, x: np.ndarray, y: np.ndarray) -> float:
        """Accuracy for classification, R² for regression (as scikit-learn's ``score``)."""
        metrics = prediction_metrics(self.task_, y, self.predict(x))
        return metrics["r2" if self.task_ == "regression" else "accuracy"]

    @abc.abstractmethod
    def evaluate_loss(self, x: np.ndarray, y: np.ndarray) -> float | None:
        """The model's own training loss on ``x, y``, or None where it has none."""

    def split_metrics(self, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
        """The final metrics of one split, named alike for every model family:
        ``accuracy`` (classification) or ``mae``, ``mse`` and ``r2`` (regression),
        then ``loss`` where the model has one."""
        metrics = prediction_metrics(self.task_, y, self.predict(x))
        loss = self.evaluate_loss(x, y)
        return metrics if loss is None else {**metrics, "loss": loss}

    @property
    @abc.abstractmethod
    def native(self) -> Any:
        """The underlying library object, as logged by the MLflow flavor."""

    @abc.abstractmethod
    def serving_output(self, x: np.ndarray) -> np.ndarray:
        """What the logged model's ``predict`` returns for ``x`` (for its signature)."""

    def log_model(self, example: np.ndarray) -> None:
        """Logs the fitted model into the active MLflow run as ``model``, with its
        flavor, a signature and an input example of raw rows.

        Where the columns have names, the signature names them (the model then
        takes a DataFrame of them), or, for a flavor that takes arrays only, the
        metadata's ``feature_names`` does. The pip requirements are given, not
        inferred: inference re-imports the model's libraries in a subprocess,
        which costs seconds per model.
        """
        from mlflow.models import infer_signature

        feature_names = self.spec_.feature_names
        output = self.serving_output(example)
        model_input: Any = example
        if feature_names and self.names_columns:
            import pandas as pd

            model_input = pd.DataFrame(example, columns=list(feature_names))
        self._log_flavor(
            signature=infer_signature(model_input, output),
            input_example=model_input,
            metadata={"feature_names": list(feature_names)} if feature_names else None,
            pip_requirements=[f"{package}=={_installed_version(package)}" for package in self.pip_packages],
        )

    @abc.abstractmethod
    def _log_flavor(self, **kwargs: Any) -> None:
        """Logs :attr:`native` as ``model`` with this family's MLflow flavor
        (``kwargs``: signature, input example, metadata, pip requirements)."""

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

    def progress_epochs(self) -> int | None:
        """How many epochs a fit runs (at most), for its progress line; None for a
        model that tells no progress."""
        return None

    def history_epochs(self) -> list[int]:
        """The epoch (from 1) of each value in :attr:`history_`: every epoch, unless
        the model records only some of a long training's epochs."""
        return list(range(1, len(self.history_.get("loss", ())) + 1))

    def weight_snapshots(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Each hidden layer's kernel at the start and at the end of the last fit,
        by layer name; empty for models without hidden layers of their own."""
        return {}


def _installed_version(package: str) -> str:
    """The installed version of ``package``, or of its CPU build (``tensorflow-cpu``
    provides ``tensorflow``; a logged model asks for plain ``tensorflow``, which
    serves on any machine)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return version(f"{package}-cpu")


def prediction_metrics(task: str, y: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Accuracy of predicted labels, or the errors and R² of predicted values."""
    from sklearn.metrics import accuracy_score, mean_absolute_error, mean_squared_error, r2_score

    if task != "regression":
        return {"accuracy": float(accuracy_score(y, predicted))}
    return {
        "mae": float(mean_absolute_error(y, predicted)),
        "mse": float(mean_squared_error(y, predicted)),
        "r2": float(r2_score(y, predicted)),
    }
