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

from collections.abc import Sequence
from typing import Any

import numpy as np

from src.data.dataset import InputScaling
from src.listeners import EpochListener
from src.models.base import Estimator

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


class NumpyMLP(Estimator):
    """Dense layers trained with plain SGD, in NumPy (float64).

    Args:
        hidden_units: Units of each hidden layer.
        activation: Hidden activation: linear, sigmoid, tanh or relu.
        output_activation: sigmoid for binary tasks unless set; linear for regression.
        task: ``binary`` or ``regression`` (one output unit).
        learning_rate, epochs: Plain SGD settings.
        batch_size: 1 for per-sample updates, None for full batch.
        loss: ``mse`` (0.5 * squared error) or ``binary_crossentropy``.
        use_bias: Whether layers have biases.
        seed: Seed of the initial weights (Glorot uniform) and the sample order.
        shuffle: Visit samples in a new random order each epoch.
        input_scaling: The dataset's scaling, applied to the raw inputs that
            ``fit``, ``predict`` and the logged model are given.
    """

    flavor = "pyfunc"
    pip_packages = ("numpy",)

    def __init__(
        self,
        hidden_units: Sequence[int],
        activation: str = "sigmoid",
        output_activation: str | None = None,
        *,
        task: str = "binary",
        learning_rate: float = 0.1,
        epochs: int = 100,
        batch_size: int | None = 1,
        loss: str = "mse",
        use_bias: bool = True,
        seed: int = 0,
        shuffle: bool = False,
        input_scaling: InputScaling | None = None,
    ) -> None:
        if task not in ("binary", "regression"):
            raise ValueError(f"NumpyMLP has one output unit: task {task!r} is not binary or regression")
        self.hidden_units = list(hidden_units)
        self.activation = activation
        self.output_activation = output_activation or ("sigmoid" if task == "binary" else "linear")
        self.task = task
        self.learning_rate = learning_rate
        self.epochs = epochs
        self.batch_size = batch_size
        self.loss_name = loss
        self.use_bias = use_bias
        self.seed = seed
        self.shuffle = shuffle
        self.input_scaling = input_scaling
        self.weights: list[np.ndarray] = []
        self.biases: list[np.ndarray] = []
        self.history = {}
        self.recorded_epochs_: list[int] = []
        self.initial_weights_: list[np.ndarray] = []

    # ------------------------------------------------------------------ maths
    def initialize(self, n_features: int) -> NumpyMLP:
        """Glorot-uniform weights and zero biases, from ``seed``."""
        rng = np.random.default_rng(self.seed)
        sizes = [n_features, *self.hidden_units, 1]
        self.weights = []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            limit = np.sqrt(6.0 / (fan_in + fan_out))
            self.weights.append(rng.uniform(-limit, limit, (fan_in, fan_out)))
        self.biases = [np.zeros(size) for size in sizes[1:]]
        return self

    def set_weights(self, weights: Sequence[np.ndarray], biases: Sequence[np.ndarray] | None = None) -> NumpyMLP:
        """Starts from given weights (e.g. a textbook example); biases default to zero."""
        self.weights = [np.array(w, dtype=np.float64) for w in weights]
        self.biases = [
            np.array(b, dtype=np.float64) for b in (biases or [np.zeros(w.shape[1]) for w in self.weights])
        ]
        return self

    def _activations(self, layer: int) -> str:
        return self.output_activation if layer == len(self.weights) - 1 else self.activation

    def forward(self, x: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Pre-activations ``z`` and activations ``a`` of every layer (``a[0]`` is the input)."""
        zs, activations = [], [np.asarray(x, dtype=np.float64)]
        for layer, (w, b) in enumerate(zip(self.weights, self.biases)):
            z = activations[-1] @ w + (b if self.use_bias else 0.0)
            zs.append(z)
            activations.append(activate(self._activations(layer), z))
        return zs, activations

    def loss_value(self, output: np.ndarray, target: np.ndarray) -> float:
        target = target.reshape(output.shape)
        if self.loss_name == "binary_crossentropy":
            p = np.clip(output, 1e-12, 1 - 1e-12)
            return float(-np.mean(target * np.log(p) + (1 - target) * np.log(1 - p)))
        return float(np.mean(0.5 * np.sum((output - target) ** 2, axis=1)))

    def gradients(self, x: np.ndarray, t: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """d loss / d weights and d loss / d biases for the batch ``x, t`` (backpropagation)."""
        zs, activations = self.forward(x)
        output = activations[-1]
        t = np.asarray(t, dtype=np.float64).reshape(output.shape)
        n = len(x)
        if self.loss_name == "binary_crossentropy" and self.output_activation == "sigmoid":
            delta = (output - t) / n  # the sigmoid's derivative cancels against the log
        elif self.loss_name == "binary_crossentropy":
            p = np.clip(output, 1e-12, 1 - 1e-12)
            delta = (p - t) / (p * (1 - p)) * derivative(self.output_activation, zs[-1], output) / n
        else:
            delta = (output - t) * derivative(self.output_activation, zs[-1], output) / n
        grad_w: list[np.ndarray] = [np.empty(0)] * len(self.weights)
        grad_b: list[np.ndarray] = [np.empty(0)] * len(self.weights)
        for layer in range(len(self.weights) - 1, -1, -1):
            grad_w[layer] = activations[layer].T @ delta
            grad_b[layer] = delta.sum(axis=0)
            if layer:
                # the error reaching layer-1's outputs, times *its own* activation's slope
                below = layer - 1
                delta = (delta @ self.weights[layer].T) * derivative(
                    self._activations(below), zs[below], activations[layer]
                )
        return grad_w, grad_b

    def step(self, x: np.ndarray, t: np.ndarray) -> None:
        grad_w, grad_b = self.gradients(x, t)
        for weights, biases, dw, db in zip(self.weights, self.biases, grad_w, grad_b):
            weights -= self.learning_rate * dw
            if self.use_bias:
                biases -= self.learning_rate * db

    # -------------------------------------------------------------- estimator
    def fit(
        self,
        x: np.ndarray,
        y: np.ndarray,
        *,
        validation_data: tuple[np.ndarray, np.ndarray] | None = None,
        listeners: Sequence[EpochListener] = (),
    ) -> NumpyMLP:
        raw = x
        x = self._scaled(x)
        t = np.asarray(y, dtype=np.float64).reshape(-1, 1)
        if not self.weights:
            self.initialize(x.shape[1])
        self.initial_weights_ = [w.copy() for w in self.weights]
        rng = np.random.default_rng(self.seed)
        batch = self.batch_size or len(x)
        # Long textbook runs (90,000 epochs) record every k-th epoch: at most ~1,000 points.
        every = max(1, self.epochs // 1000)
        self.history = {"loss": []}
        self.recorded_epochs_ = []
        for epoch in range(1, self.epochs + 1):
            order = rng.permutation(len(x)) if self.shuffle else np.arange(len(x))
            for start in range(0, len(x), batch):
                rows = order[start : start + batch]
                self.step(x[rows], t[rows])
            if epoch % every and epoch != self.epochs:
                continue
            self.recorded_epochs_.append(epoch)
            logs = {"loss": self.loss(raw, y)}
            if validation_data is not None:
                logs["val_loss"] = self.loss(*validation_data)
            for key, value in logs.items():
                self.history.setdefault(key, []).append(value)
            for listener in listeners:
                listener.on_epoch_end(epoch, logs)
        for listener in listeners:
            listener.on_train_end()
        return self

    def _scaled(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        return x if self.input_scaling is None else self.input_scaling.apply(x)

    def serving_output(self, x: np.ndarray) -> np.ndarray:
        """The output unit for raw inputs ``x`` (scaled here, as the logged model does)."""
        return self.forward(self._scaled(x))[1][-1]

    def predict_proba(self, x: np.ndarray) -> np.ndarray | None:
        if self.task == "regression" or self.output_activation != "sigmoid":
            return None
        output = self.serving_output(x)
        return np.hstack([1 - output, output])

    def predict(self, x: np.ndarray) -> np.ndarray:
        output = self.serving_output(x).ravel()
        return output if self.task == "regression" else (output >= 0.5).astype(np.int64)

    def loss(self, x: np.ndarray, y: np.ndarray) -> float:
        return self.loss_value(self.serving_output(x), np.asarray(y, dtype=np.float64))

    @property
    def native(self) -> NumpyMLP:
        return self

    def history_epochs(self) -> list[int]:
        return list(self.recorded_epochs_)

    def weight_snapshots(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        start = self.initial_weights_
        return {f"hidden_{i + 1}": (start[i], self.weights[i]) for i in range(len(start) - 1)}

    def _log_flavor(self, **kwargs: Any) -> None:
        import mlflow.pyfunc

        mlflow.pyfunc.log_model(name="model", python_model=_serving_model(self), **kwargs)

    def parameters_finite(self) -> bool:
        return all(np.isfinite(a).all() for a in (*self.weights, *self.biases))

    def summary_metrics(self) -> dict[str, float]:
        return {"n_params": int(sum(w.size for w in self.weights) + (sum(b.size for b in self.biases) if self.use_bias else 0))}


def _serving_model(model: NumpyMLP) -> Any:
    """The NumPy MLP as an MLflow pyfunc model, taking raw input rows.

    Defined on first use, with MLflow's warnings about ``predict``'s type hints
    silenced: they would print at import time for every command.
    """
    import warnings

    import mlflow.pyfunc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)

        class ServingModel(mlflow.pyfunc.PythonModel):
            def __init__(self, model):  # noqa: ANN001
                self.model = model

            def predict(self, context, model_input, params=None):  # noqa: ANN001, ANN201
                return self.model.serving_output(np.asarray(model_input, dtype=np.float64))

    return ServingModel(model)
