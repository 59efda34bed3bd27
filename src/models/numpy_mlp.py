"""A from-scratch NumPy MLP: the ground truth the Keras path is checked against.

Forward pass, backpropagation and plain SGD (per sample or in batches), written
out so every number can be followed by hand. Loss is ``0.5 * (y - t)^2`` summed
over outputs and averaged over the batch (the textbook squared error), or binary
cross-entropy with a sigmoid output.

Backpropagation multiplies the error arriving at a hidden layer by the derivative
of *that layer's own* activation at its pre-activation. A widely copied solution
of the 2-3-1 ReLU exercise instead multiplies the output error by relu'(z1) of the
hidden layer before forming the output weights' gradient, and so reports
W2 = [-0.034, 0.166, 0.566] after one step; the correct values are
[-0.034, 0.0658, 0.6328] (see tests/test_numpy_mlp.py).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from src.data.dataset import DataSpec
from src.errors import ConfigError
from src.listeners import EpochListener
from src.models.base import Estimator
from src.models.numpy_activations import activate, derivative

class NumpyMLP(Estimator):
    """Dense layers trained with plain SGD, in NumPy (float64).

    Args:
        hidden_units: Units of each hidden layer.
        activation: Hidden activation: linear, sigmoid, tanh or relu.
        output_activation: sigmoid for binary tasks unless set; linear for regression.
        learning_rate, epochs: Plain SGD settings.
        batch_size: 1 for per-sample updates, None for full batch.
        loss: ``mse`` (0.5 * squared error) or ``binary_crossentropy`` (None:
            the task's, see :func:`src.schema.resolve_loss`).
        use_bias: Whether layers have biases.
        seed: Seed of the initial weights (Glorot uniform) and the sample order.
        shuffle: Visit samples in a new random order each epoch.

    Attributes:
        weights_, biases_: Each layer's weights and biases (set by ``fit``,
            ``initialize`` or ``set_weights``).
    """

    flavor = "pyfunc"
    pip_packages = ("numpy",)

    def __init__(
        self,
        hidden_units: Sequence[int] = (4,),
        activation: str = "sigmoid",
        output_activation: str | None = None,
        *,
        learning_rate: float = 0.1,
        epochs: int = 100,
        batch_size: int | None = 1,
        loss: str | None = "mse",
        use_bias: bool = True,
        seed: int = 0,
        shuffle: bool = False,
    ) -> None:
        self.hidden_units = hidden_units
        self.activation = activation
        self.output_activation = output_activation
        self.learning_rate = learning_rate
        self.epochs = epochs
        self.batch_size = batch_size
        self.loss = loss
        self.use_bias = use_bias
        self.seed = seed
        self.shuffle = shuffle

    @property
    def output_activation_(self) -> str:
        """The output layer's activation: as set, else the task's (sigmoid before a fit)."""
        regression = getattr(self, "spec_", None) is not None and self.spec_.task == "regression"
        return self.output_activation or ("linear" if regression else "sigmoid")

    @property
    def loss_(self) -> str:
        """The loss used: as set, else the task's."""
        from src.schema import resolve_loss

        spec = getattr(self, "spec_", None)
        return resolve_loss(self.loss, spec.task if spec is not None else "binary")

    # ------------------------------------------------------------------ maths
    def initialize(self, n_features: int) -> NumpyMLP:
        """Glorot-uniform weights and zero biases, from ``seed``."""
        rng = np.random.default_rng(self.seed)
        sizes = [n_features, *self.hidden_units, 1]
        self.weights_ = []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            limit = np.sqrt(6.0 / (fan_in + fan_out))
            self.weights_.append(rng.uniform(-limit, limit, (fan_in, fan_out)))
        self.biases_ = [np.zeros(size) for size in sizes[1:]]
        return self

    def set_weights(self, weights: Sequence[np.ndarray], biases: Sequence[np.ndarray] | None = None) -> NumpyMLP:
        """Starts from given weights (e.g. a textbook example); biases default to zero."""
        self.weights_ = [np.array(w, dtype=np.float64) for w in weights]
        self.biases_ = [
            np.array(b, dtype=np.float64) for b in (biases or [np.zeros(w.shape[1]) for w in self.weights_])
        ]
        return self

    def _layer_activations(self) -> list[str]:
        """Each layer's activation: the hidden layers', then the output layer's."""
        return [self.activation] * (len(self.weights_) - 1) + [self.output_activation_]

    def forward(self, x: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Pre-activations ``z`` and activations ``a`` of every layer (``a[0]`` is the input)."""
        return self._forward(x, self._layer_activations())

    def _forward(self, x: np.ndarray, names: list[str]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        zs, activations = [], [np.asarray(x, dtype=np.float64)]
        for w, b, name in zip(self.weights_, self.biases_, names):
            z = activations[-1] @ w + (b if self.use_bias else 0.0)
            zs.append(z)
            activations.append(activate(name, z))
        return zs, activations

    def loss_value(self, output: np.ndarray, target: np.ndarray) -> float:
        target = target.reshape(output.shape)
        if self.loss_ == "binary_crossentropy":
            p = np.clip(output, 1e-12, 1 - 1e-12)
            return float(-np.mean(target * np.log(p) + (1 - target) * np.log(1 - p)))
        return float(np.mean(0.5 * np.sum((output - target) ** 2, axis=1)))

    def gradients(self, x: np.ndarray, t: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """d loss / d weights and d loss / d biases for the batch ``x, t`` (backpropagation)."""
        # Looked up once per step, not per use: a textbook run takes 360,000 steps.
        names, loss = self._layer_activations(), self.loss_
        zs, activations = self._forward(x, names)
        output = activations[-1]
        t = np.asarray(t, dtype=np.float64).reshape(output.shape)
        n = len(x)
        if loss == "binary_crossentropy" and names[-1] == "sigmoid":
            delta = (output - t) / n  # the sigmoid's derivative cancels against the log
        elif loss == "binary_crossentropy":
            p = np.clip(output, 1e-12, 1 - 1e-12)
            delta = (p - t) / (p * (1 - p)) * derivative(names[-1], zs[-1], output) / n
        else:
            delta = (output - t) * derivative(names[-1], zs[-1], output) / n
        grad_w: list[np.ndarray] = [np.empty(0)] * len(self.weights_)
        grad_b: list[np.ndarray] = [np.empty(0)] * len(self.weights_)
        for layer in range(len(self.weights_) - 1, -1, -1):
            grad_w[layer] = activations[layer].T @ delta
            grad_b[layer] = delta.sum(axis=0)
            if layer:
                # the error reaching layer-1's outputs, times *its own* activation's slope
                below = layer - 1
                delta = (delta @ self.weights_[layer].T) * derivative(names[below], zs[below], activations[layer])
        return grad_w, grad_b

    def step(self, x: np.ndarray, t: np.ndarray) -> None:
        grad_w, grad_b = self.gradients(x, t)
        for weights, biases, dw, db in zip(self.weights_, self.biases_, grad_w, grad_b):
            weights -= self.learning_rate * dw
            if self.use_bias:
                biases -= self.learning_rate * db

    # -------------------------------------------------------------- estimator
    def fit(
        self,
        x: np.ndarray,
        y: np.ndarray,
        *,
        spec: DataSpec | None = None,
        validation_data: tuple[np.ndarray, np.ndarray] | None = None,
        listeners: Sequence[EpochListener] = (),
    ) -> NumpyMLP:
        spec = self._start_fit(y, spec)
        if spec.task == "multiclass" or self.loss_ not in ("mse", "binary_crossentropy"):
            raise ConfigError(
                f"model=numpy_mlp has one output unit and the loss mse or binary_crossentropy; "
                f"the data is {spec.task} with loss {self.loss_}"
            )
        raw = x
        x = self._scaled(x)
        t = np.asarray(y, dtype=np.float64).reshape(-1, 1)
        if not getattr(self, "weights_", None):
            self.initialize(x.shape[1])
        self.initial_weights_ = [w.copy() for w in self.weights_]
        rng = np.random.default_rng(self.seed)
        batch = self.batch_size or len(x)
        # Long textbook runs (90,000 epochs) record every k-th epoch: at most ~1,000 points.
        every = max(1, self.epochs // 1000)
        self.history_ = {"loss": []}
        self.recorded_epochs_ = []
        # Without shuffling, every epoch takes the same batches: they are cut once.
        fixed = None if self.shuffle else list(_batches(x, t, np.arange(len(x)), batch))
        for epoch in range(1, self.epochs + 1):
            batches = fixed if fixed is not None else _batches(x, t, rng.permutation(len(x)), batch)
            for x_batch, t_batch in batches:
                self.step(x_batch, t_batch)
            if epoch % every and epoch != self.epochs:
                continue
            self.recorded_epochs_.append(epoch)
            logs = {"loss": self.evaluate_loss(raw, y)}
            if validation_data is not None:
                logs["val_loss"] = self.evaluate_loss(*validation_data)
            for key, value in logs.items():
                self.history_.setdefault(key, []).append(value)
            for listener in listeners:
                listener.on_epoch_end(epoch, logs)
        for listener in listeners:
            listener.on_train_end()
        return self

    def _scaled(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        spec = getattr(self, "spec_", None)
        return x if spec is None or spec.scaling is None else spec.scaling.apply(x)

    def serving_output(self, x: np.ndarray) -> np.ndarray:
        """The output unit for raw inputs ``x`` (scaled here, as the logged model does)."""
        return self.forward(self._scaled(x))[1][-1]

    def predict_proba(self, x: np.ndarray) -> np.ndarray | None:
        if self.task_ == "regression" or self.output_activation_ != "sigmoid":
            return None
        output = self.serving_output(x)
        return np.hstack([1 - output, output])

    def predict(self, x: np.ndarray) -> np.ndarray:
        output = self.serving_output(x).ravel()
        return output if self.task_ == "regression" else (output >= 0.5).astype(np.int64)

    def evaluate_loss(self, x: np.ndarray, y: np.ndarray) -> float:
        return self.loss_value(self.serving_output(x), np.asarray(y, dtype=np.float64))

    @property
    def native(self) -> NumpyMLP:
        return self

    def progress_epochs(self) -> int:
        return self.epochs

    def history_epochs(self) -> list[int]:
        return list(self.recorded_epochs_)

    def weight_snapshots(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        start = self.initial_weights_
        return {f"hidden_{i + 1}": (start[i], self.weights_[i]) for i in range(len(start) - 1)}

    def _log_flavor(self, **kwargs: Any) -> None:
        import logging

        import mlflow.pyfunc

        # MLflow says, as a warning line, that it pickles the serving object with
        # CloudPickle: true of every Python model, and nothing a user can act on.
        def not_cloudpickle(record: logging.LogRecord) -> bool:
            return "CloudPickle" not in record.getMessage()

        pyfunc_log = logging.getLogger("mlflow.pyfunc")
        pyfunc_log.addFilter(not_cloudpickle)
        try:
            mlflow.pyfunc.log_model(name="model", python_model=_serving_model(self), **kwargs)
        finally:
            pyfunc_log.removeFilter(not_cloudpickle)

    def parameters_finite(self) -> bool:
        return all(np.isfinite(a).all() for a in (*self.weights_, *self.biases_))

    def summary_metrics(self) -> dict[str, float]:
        n_biases = sum(b.size for b in self.biases_) if self.use_bias else 0
        return {"n_params": int(sum(w.size for w in self.weights_) + n_biases)}


def _batches(x: np.ndarray, t: np.ndarray, order: np.ndarray, size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The rows of ``x`` and ``t`` in ``order``, cut into batches of ``size`` (each copied
    when it is reached: a shuffled epoch never holds a second copy of the data)."""
    for start in range(0, len(x), size):
        rows = order[start : start + size]
        yield x[rows], t[rows]


def _serving_model(model: NumpyMLP) -> Any:
    """The NumPy MLP as an MLflow pyfunc model, taking raw input rows (defined on
    first use: MLflow is imported only then)."""
    import mlflow.pyfunc

    class ServingModel(mlflow.pyfunc.PythonModel):
        def __init__(self, model):  # noqa: ANN001
            self.model = model

        # The input's type hint is one MLflow takes as it is (no schema inferred from
        # it, no validation added); without one MLflow warns on every definition. The
        # logged signature describes the input.
        def predict(self, context, model_input: np.ndarray, params=None):  # noqa: ANN001, ANN201
            return self.model.serving_output(np.asarray(model_input, dtype=np.float64))

    return ServingModel(model)
