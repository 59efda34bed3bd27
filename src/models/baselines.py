"""scikit-learn estimators (built by Hydra from ``conf/baselines``) as baselines."""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from src.data.dataset import DataSpec, InputScaling
from src.errors import ConfigError
from src.listeners import EpochListener
from src.models.base import Estimator
from src.progress import OutputProgress

# What scikit-learn's iteration-based estimators print with verbose on, an epoch at a time.
_MLP_ITERATION = re.compile(r"^Iteration (?P<epoch>\d+), loss = (?P<loss>[-+.\deE]+)")
_SGD_EPOCH = re.compile(r"^-- Epoch (?P<epoch>\d+)")


class SklearnBaseline(Estimator):
    """Wraps any scikit-learn estimator so the training loop needs no special case.

    ``conf/baselines`` configures the scikit-learn estimator itself; the training
    loop wraps each one it instantiates (see :func:`src.training.build_models`).

    Args:
        estimator: An unfitted scikit-learn estimator.

    Attributes:
        model_: The fitted model as logged: when ``fit`` is given an input scaling,
            a Pipeline of that scaling (fixed, not fitted) and a fitted clone of
            ``estimator``, fitted on a DataFrame of the named columns if the data
            names them (so such a DataFrame is what the logged model takes).
    """

    flavor = "sklearn"
    pip_packages = ("scikit-learn",)

    def __init__(self, estimator: Any) -> None:
        self.estimator = estimator

    def fit(
        self,
        x: np.ndarray,
        y: np.ndarray,
        *,
        spec: DataSpec | None = None,
        validation_data: tuple[np.ndarray, np.ndarray] | None = None,
        listeners: Sequence[EpochListener] = (),
    ) -> SklearnBaseline:
        import warnings

        from sklearn.base import clone
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.utils._param_validation import InvalidParameterError

        spec = self._start_fit(y, spec)
        self.estimator_ = clone(self.estimator)
        self.model_ = self.estimator_
        if spec.scaling is not None:
            from sklearn.frozen import FrozenEstimator
            from sklearn.pipeline import Pipeline

            scaler = FrozenEstimator(fitted_scaler(spec.scaling, spec.feature_names))
            self.model_ = Pipeline([("input_scaling", scaler), ("model", self.estimator_)])
        try:
            with warnings.catch_warnings(record=True) as caught, self._telling_progress(listeners), \
                    _ctrl_c_kept():
                warnings.simplefilter("always", ConvergenceWarning)
                self.model_.fit(self._frame(x), y)
        except InvalidParameterError as exc:
            raise ConfigError(f"bad baseline parameter: {exc}") from None
        self.fit_warnings_ = []
        for warning in caught:
            if issubclass(warning.category, ConvergenceWarning):
                self.fit_warnings_.append(f"ConvergenceWarning: {str(warning.message).splitlines()[0]}")
            else:
                warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
        curve = getattr(self.estimator_, "loss_curve_", None)
        if curve is not None:
            self.history_ = {"loss": [float(v) for v in curve]}
        return self

    def progress_epochs(self) -> int | None:
        return self.estimator.get_params().get("max_iter") if _progress_patterns(self.estimator) else None

    @contextlib.contextmanager
    def _telling_progress(self, listeners: Sequence[EpochListener]) -> Iterator[None]:
        """Turns the estimator's own progress output (``verbose``, on for the fit
        only) into the listeners' ``on_progress``, for the estimators that have one."""
        patterns = _progress_patterns(self.estimator_)
        listeners = [l for l in listeners if type(l).on_progress is not EpochListener.on_progress]
        if not patterns or not listeners:
            yield
            return
        verbose = self.estimator_.get_params()["verbose"]
        self.estimator_.set_params(verbose=1)
        # A one-vs-rest fit's joblib then reports its threads on stderr: those lines go.
        quiet_joblib = OutputProgress([], [], passing=sys.stderr, dropping=("[Parallel(",))
        try:
            with contextlib.redirect_stdout(OutputProgress(patterns, listeners)), \
                    contextlib.redirect_stderr(quiet_joblib):
                yield
        finally:
            quiet_joblib.close()
            self.estimator_.set_params(verbose=verbose)  # the logged model keeps its settings

    def _log_flavor(self, **kwargs: Any) -> None:
        import mlflow.sklearn
        import skops.io

        # MLflow 3 saves with skops, which loads only trusted types: we built these.
        trusted = skops.io.get_untrusted_types(data=skops.io.dumps(self.native))
        mlflow.sklearn.log_model(self.native, name="model", skops_trusted_types=trusted, **kwargs)

    def fit_warnings(self) -> list[str]:
        return list(getattr(self, "fit_warnings_", ()))

    def _frame(self, x: np.ndarray) -> Any:
        """``x`` as the fitted model takes it: a DataFrame of the named columns, if named."""
        feature_names = self.spec_.feature_names
        if not feature_names or not isinstance(x, np.ndarray):
            return x
        import pandas as pd

        return pd.DataFrame(x, columns=list(feature_names))

    def _fitted(self) -> Any:
        if getattr(self, "model_", None) is None:
            raise RuntimeError("SklearnBaseline is not fitted yet; call fit first")
        return self.model_

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self._fitted().predict(self._frame(x))

    def predict_proba(self, x: np.ndarray) -> np.ndarray | None:
        if self.task_ == "regression" or not hasattr(self.estimator, "predict_proba"):
            return None
        return self._fitted().predict_proba(self._frame(x))

    def serving_output(self, x: np.ndarray) -> np.ndarray:
        return self.predict(x)

    def evaluate_loss(self, x: np.ndarray, y: np.ndarray) -> float | None:
        """Log-loss for classifiers with probabilities; None otherwise (e.g. Perceptron)."""
        probabilities = self.predict_proba(x)
        if probabilities is None:
            return None
        from sklearn.metrics import log_loss

        return float(log_loss(y, probabilities, labels=self.estimator_.classes_))

    @property
    def native(self) -> Any:
        """The fitted model as logged: the estimator, after the input scaling if any."""
        return self._fitted()


def fitted_scaler(scaling: InputScaling, feature_names: Sequence[str] = ()) -> Any:
    """A StandardScaler in the fitted state that computes ``scaling``.

    Its statistics are the dataset's (fitted on the training split, or fixed like
    255 for pixels), so it is set rather than fitted; FrozenEstimator keeps a
    Pipeline from fitting it again.
    """
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler(with_mean=bool(np.any(scaling.offset)))
    scaler.mean_ = np.asarray(scaling.offset, dtype=np.float64)
    scaler.scale_ = np.asarray(scaling.scale, dtype=np.float64)
    scaler.var_ = np.square(scaler.scale_)
    scaler.n_features_in_ = len(scaler.scale_)
    scaler.n_samples_seen_ = 1
    if feature_names:
        scaler.feature_names_in_ = np.asarray(feature_names, dtype=object)
    return scaler


@contextlib.contextmanager
def _ctrl_c_kept() -> Iterator[None]:
    """Raises KeyboardInterrupt after a fit that swallowed one.

    scikit-learn's MLP catches a Ctrl-C mid-fit, warns "Training interrupted by
    user." and returns the model as it is, so the command would go on logging it
    and training the next model. The interrupt is noted here (the handler in place
    still runs) and raised again once the fit returns: the command stops and its
    runs end KILLED. Only in the main thread, where signal handlers run.
    """
    import signal
    import threading

    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or not callable(previous):
        yield
        return
    interrupted = False

    def noted(signum: int, frame: Any) -> None:
        nonlocal interrupted
        interrupted = True
        previous(signum, frame)

    signal.signal(signal.SIGINT, noted)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if interrupted:
        raise KeyboardInterrupt


def _progress_patterns(estimator: Any) -> list[re.Pattern[str]]:
    """The lines that tell an epoch of ``estimator``'s fit, if it prints any."""
    from sklearn.linear_model import Perceptron, SGDClassifier, SGDRegressor
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    if isinstance(estimator, (MLPClassifier, MLPRegressor)):
        return [_MLP_ITERATION]
    if isinstance(estimator, (Perceptron, SGDClassifier, SGDRegressor)):
        return [_SGD_EPOCH]
    return []
