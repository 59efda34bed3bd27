"""The Keras multi-layer perceptron, wrapped as an estimator."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from src.models.backend import import_tensorflow, tensorflow_log

import_tensorflow()  # first: in a command, TensorFlow's start-up lines go to its log file (backend.py)
import keras  # noqa: E402
import numpy as np  # noqa: E402

from src.data.dataset import DataSpec, InputScaling
from src.listeners import EpochListener
from src.models.base import Estimator, RecentlyUsed, models_are_disposable, prediction_metrics

_PREDICT_BATCH = 4096
INPUT_SCALING_LAYER = "input_scaling"
COMPILED_MAX_BYTES = 1 << 30
"""Largest training input the ``auto`` engine keeps resident for the compiled loop."""
KEPT_MODELS = 8
"""Networks kept for reuse inside ``disposable_models``, one per recipe, newest first."""
XLA_MIN_STEPS = 5000
"""Training steps from which ``jit_compile=auto`` uses XLA. XLA's compile takes
about 0.5-1 s per model and then saves about 0.5 ms per small step (an MNIST epoch
at batch 32, dropout included: 1.3 s without XLA, 0.4 s with), so below a few
thousand steps (XOR, Iris) it costs more than it saves."""


class KerasMLP(Estimator):
    """Dense layers with optional dropout, built for the data at ``fit`` time.

    ``hydra.utils.instantiate(cfg.model)`` builds it whole: ``conf/model/mlp.yaml``
    interpolates the optimizer, initializer, regularizer, dropout and trainer
    settings from their own config groups.

    Not ``keras.wrappers.SKLearnClassifier``/``SKLearnRegressor``: those train with
    ``keras.Model.fit`` only and one-hot encode a classifier's targets themselves,
    while this one class serves every task (inferred in ``fit``), trains with the
    compiled engine when it pays, takes sparse labels and tells framework-neutral
    listeners (MLflow, a pruner, the divergence guard) about every epoch.

    Args:
        hidden_units: Units of each hidden layer; empty for a single output unit.
        activation: Activation of the hidden layers.
        output_activation: Activation of the output layer (None: sigmoid for
            binary, softmax for multi-class, linear for regression).
        optimizer: Makes a fresh Keras optimizer (a partial from the config;
            None: Adam's defaults).
        kernel_initializer: Makes a fresh initializer; one per layer, since a
            Keras 3 initializer instance returns the same values on every call
            (None: Glorot uniform).
        kernel_regularizer: Penalty on every kernel, or None.
        dropout_rate: Dropout after each hidden layer (0: none).
        loss: Keras loss name (None: the task's, see :func:`src.schema.resolve_loss`).
        epochs, batch_size, shuffle, verbose: As in ``keras.Model.fit``;
            ``batch_size=None`` trains full batch.
        early_stopping: The ``trainer.early_stopping`` settings.
        engine: ``fit`` trains with ``keras.Model.fit``; ``compiled`` with
            :class:`~src.models.compiled.CompiledLoop` (epochs and batches inside
            one TensorFlow function); ``auto`` picks compiled unless the training
            inputs are too large to keep resident as one tensor.
        jit_compile: Compile the loop with XLA: ``auto`` does so when the run has
            enough steps to repay XLA's compile time and no dropout (compiled
            engine only; see ``XLA_MIN_STEPS``).
        normalize: Start with a Normalization layer adapted to the training
            inputs (their mean and variance, nothing from held-out rows).

    Attributes:
        model_: The fitted ``keras.Model``; its first layer applies the data's
            input scaling, so it takes inputs in their own units.
        loss_, output_activation_: The loss and output activation used.
        initial_kernels_: Each hidden kernel as initialized, by layer name.
    """

    flavor = "keras"
    pip_packages = ("tensorflow", "keras")
    names_columns = False

    def __init__(
        self,
        hidden_units: Sequence[int] = (8,),
        activation: str = "tanh",
        output_activation: str | None = None,
        *,
        optimizer: Callable[[], keras.optimizers.Optimizer] | None = None,
        kernel_initializer: Callable[[], keras.initializers.Initializer] | None = None,
        kernel_regularizer: keras.regularizers.Regularizer | None = None,
        dropout_rate: float = 0.0,
        loss: str | None = None,
        epochs: int = 100,
        batch_size: int | None = None,
        shuffle: bool = True,
        early_stopping: Mapping[str, Any] | None = None,
        engine: str = "auto",
        jit_compile: bool | str = "auto",
        normalize: bool = False,
    ) -> None:
        self.hidden_units = hidden_units
        self.activation = activation
        self.output_activation = output_activation
        self.optimizer = optimizer
        self.kernel_initializer = kernel_initializer
        self.kernel_regularizer = kernel_regularizer
        self.dropout_rate = dropout_rate
        self.loss = loss
        self.epochs = epochs
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.early_stopping = early_stopping
        self.engine = engine
        self.jit_compile = jit_compile
        self.normalize = normalize

    # ----------------------------------------------------------------- building
    def build(self, x: np.ndarray) -> keras.Model:
        """The compiled network for inputs like ``x`` (which a Normalization layer
        adapts to), for the data ``fit`` was told about.

        Inside :func:`~src.models.base.disposable_models` (a sweep's trials), the
        network of the last build of the same recipe is returned instead, set to
        the state this build would have given it: the same layers are made (their
        initializers and dropout seeds drawn as a build draws them) and their
        initial state copied in. Building and compiling, and the optimizer's
        variables, took ~20 ms of a ~150 ms XOR trial.
        """
        layers = self._layers(x)
        optimizer = self.optimizer() if self.optimizer is not None else keras.optimizers.Adam()
        recipe = self._recipe(x, optimizer) if models_are_disposable() else None
        kept = _kept_models.get(recipe) if recipe is not None else None
        if kept is not None:
            kept.reset(layers, optimizer.get_config()["learning_rate"])
            return kept.model
        model = keras.Sequential(layers, name="mlp")
        model.compile(optimizer=optimizer, loss=self.loss_, metrics=[self._metric()])
        if recipe is not None:
            _kept_models.put(recipe, _KeptModel.of(model))
        return model

    def _layers(self, x: np.ndarray) -> list[Any]:
        """The network's input and layers, unbuilt but for the input scaling and
        normalization; making them draws the seeds of their initial state."""
        spec = self.spec_
        layers: list[Any] = [keras.Input(shape=(x.shape[1],))]
        if spec.scaling is not None:
            layers.append(fixed_normalization(spec.scaling))
        if self.normalize:
            normalization = keras.layers.Normalization()
            normalization.adapt(x if spec.scaling is None else spec.scaling.apply(x))
            layers.append(normalization)
        for units in self.hidden_units:
            layers.append(self._dense(units, self.activation))
            if self.dropout_rate > 0:
                layers.append(keras.layers.Dropout(self.dropout_rate))
        n_outputs = spec.n_classes if spec.task == "multiclass" else 1
        layers.append(self._dense(n_outputs, self.output_activation_))
        return layers

    def _recipe(self, x: np.ndarray, optimizer: keras.optimizers.Optimizer) -> str | None:
        """Everything the built network depends on but its initial state and a
        constant learning rate, or None if a setting has no config to compare by."""
        optimizer_config = optimizer.get_config()
        del optimizer_config["name"]
        if isinstance(optimizer_config["learning_rate"], (int, float)):
            del optimizer_config["learning_rate"]  # a variable, set by _KeptModel.reset
        try:
            return json.dumps(
                {
                    "data": [int(x.shape[1]), self.spec_.task, self.spec_.n_classes, self.spec_.scaling is not None],
                    "layers": [list(self.hidden_units), self.activation, self.output_activation_,
                               self.dropout_rate, self.normalize],
                    "loss": self.loss_,
                    "optimizer": [type(optimizer).__qualname__, optimizer_config],
                    "kernel_initializer": _described(self.kernel_initializer),
                    "kernel_regularizer": _described(self.kernel_regularizer),
                },
                sort_keys=True,
            )
        except (TypeError, ValueError):
            return None

    def _dense(self, units: int, activation: str) -> keras.layers.Dense:
        initializer = self.kernel_initializer() if self.kernel_initializer is not None else "glorot_uniform"
        return keras.layers.Dense(
            units,
            activation=activation,
            kernel_initializer=initializer,
            kernel_regularizer=self.kernel_regularizer,
        )

    def _metric(self) -> keras.metrics.Metric:
        if self.task_ == "regression":
            return keras.metrics.MeanAbsoluteError(name="mae")
        if self.task_ == "binary":
            return keras.metrics.BinaryAccuracy(name="accuracy")
        if self.loss_ == "sparse_categorical_crossentropy":
            return keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        return keras.metrics.CategoricalAccuracy(name="accuracy")

    def _targets(self, y: np.ndarray) -> np.ndarray:
        """Labels in the form the loss expects (one-hot for dense multi-class losses)."""
        if self.task_ == "multiclass" and self.loss_ != "sparse_categorical_crossentropy":
            return keras.utils.to_categorical(y, self.spec_.n_classes).astype(np.float32)
        if self.task_ == "multiclass":
            return y
        return y.astype(np.float32).reshape(-1, 1)

    # ----------------------------------------------------------------- training
    def fit(
        self,
        x: np.ndarray,
        y: np.ndarray,
        *,
        spec: DataSpec | None = None,
        validation_data: tuple[np.ndarray, np.ndarray] | None = None,
        listeners: Sequence[EpochListener] = (),
    ) -> KerasMLP:
        from src.schema import resolve_loss

        spec = self._start_fit(y, spec)
        self.loss_ = resolve_loss(self.loss, spec.task)
        self.output_activation_ = self.output_activation or default_output_activation(spec.task)
        self.model_ = self.build(x)
        self.initial_kernels_ = self._hidden_kernels()
        callbacks: list[keras.callbacks.Callback] = [_ListenerBridge(listeners)]
        early_stopping = (self.early_stopping or {}).get("enabled")
        if early_stopping:
            callbacks.insert(0, self._early_stopping(validation_data is not None))
        targets = self._targets(y)
        validation = None
        if validation_data is not None:
            validation = (validation_data[0], self._targets(validation_data[1]))
        batch_size = min(self.batch_size or len(x), len(x))
        # One batch holds every row, so a shuffle would only reorder a sum (and move
        # dropout masks between rows): both engines skip it and agree exactly.
        shuffle = self.shuffle and batch_size < len(x)
        self._compiled_loop = None
        if self.resolved_engine(x) == "compiled":
            from src.models.compiled import CompiledLoop

            loop = CompiledLoop(
                self.model_,
                batch_size=batch_size,
                shuffle=shuffle,
                seed=int(np.random.randint(2**31)),  # from the run's seed (seed_everything)
                jit_compile=self.resolved_jit_compile(len(x), batch_size),
            )
            self._compiled_loop = loop
            history = loop.fit(
                x,
                targets,
                epochs=self.epochs,
                validation_data=validation,
                callbacks=callbacks,
                epoch_by_epoch=bool(early_stopping),
            )
        else:
            history = self.model_.fit(
                x,
                targets,
                epochs=self.epochs,
                batch_size=batch_size,
                shuffle=shuffle,
                validation_data=validation,
                callbacks=callbacks,
                verbose=0,  # progress is a listener's, whichever engine trains
            ).history
        self.history_ = {k: [float(v) for v in values] for k, values in history.items()}
        return self

    def progress_epochs(self) -> int:
        return self.epochs

    def resolved_engine(self, x: np.ndarray) -> str:
        """``fit`` or ``compiled``: what ``engine`` means for training inputs like ``x``."""
        if self.engine != "auto":
            return self.engine
        return "compiled" if x.nbytes <= COMPILED_MAX_BYTES else "fit"

    def resolved_jit_compile(self, n_rows: int, batch_size: int) -> bool:
        """Whether the compiled loop uses XLA for ``n_rows`` rows in batches of ``batch_size``."""
        if self.jit_compile != "auto":
            return bool(self.jit_compile)
        steps = self.epochs * -(-n_rows // batch_size)
        return steps >= XLA_MIN_STEPS

    def _early_stopping(self, has_validation: bool) -> keras.callbacks.EarlyStopping:
        settings = self.early_stopping or {}
        monitor = settings.get("monitor") or ("val_loss" if has_validation else "loss")
        return keras.callbacks.EarlyStopping(
            monitor=monitor,
            patience=settings.get("patience", 10),
            min_delta=settings.get("min_delta", 0.0),
            restore_best_weights=settings.get("restore_best_weights", True),
        )

    # ---------------------------------------------------------------- inference
    def _fitted(self) -> keras.Model:
        if getattr(self, "model_", None) is None:
            raise RuntimeError("KerasMLP is not fitted yet; call fit first")
        return self.model_

    def serving_output(self, x: np.ndarray) -> np.ndarray:
        # Direct calls, not `predict`: no tf.function to trace for every new model
        # and input size, which dominated small-data evaluation.
        model = self._fitted()
        return np.concatenate(
            [
                keras.ops.convert_to_numpy(model(x[start : start + _PREDICT_BATCH], training=False))
                for start in range(0, len(x), _PREDICT_BATCH)
            ]
        )

    def predict_proba(self, x: np.ndarray) -> np.ndarray | None:
        if self.task_ == "regression":
            return None
        output = self.serving_output(x)
        if self.task_ == "binary":
            return np.hstack([1 - output, output])
        return output

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self._predicted(self.serving_output(x))

    def evaluate_loss(self, x: np.ndarray, y: np.ndarray) -> float:
        return self._scored(x, y)[1]

    def split_metrics(self, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
        output, loss = self._scored(x, y)
        return {**prediction_metrics(self.task_, y, self._predicted(output)), "loss": loss}

    def _scored(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
        """The outputs for ``x`` and the loss against ``y``, from one call of the
        model: an eager call of a small model costs far more than its arithmetic,
        so right after a compiled training a traced one scores it."""
        targets = self._targets(y)
        loop = getattr(self, "_compiled_loop", None)
        scored = loop.scores(x, targets) if loop is not None else None
        if scored is not None:
            return scored
        output = self.serving_output(x)
        return output, self._loss_of(output, targets)

    def _predicted(self, output: np.ndarray) -> np.ndarray:
        if self.task_ == "regression":
            return output.ravel()
        if self.task_ == "binary":
            return (output.ravel() >= 0.5).astype(np.int64)
        return output.argmax(axis=1)

    def _loss_of(self, output: np.ndarray, targets: np.ndarray) -> float:
        # As `evaluate` computes it (compiled loss plus regularization), without
        # tracing a test function for every new model.
        loss = self._fitted().compute_loss(y=targets, y_pred=output, training=False)
        return float(keras.ops.convert_to_numpy(loss))

    @property
    def native(self) -> keras.Model:
        return self._fitted()

    def _log_flavor(self, **kwargs: Any) -> None:
        from mlflow.models import Model

        # Without MLflow's check of the input example (it loads the logged model back,
        # predicts, and only warns on a failure): 0.3 s per run, and the tests load
        # every logged model family back and compare its predictions.
        with tensorflow_log():  # any C++ line saving the model writes (see src/models/backend.py)
            Model.log(artifact_path=None, name="model", flavor=_KerasFlavor, model=self.native,
                      validate_serving_input=False, **kwargs)

    def parameters_finite(self) -> bool:
        return all(np.isfinite(keras.ops.convert_to_numpy(w)).all() for w in self._fitted().weights)

    def summary_metrics(self) -> dict[str, float]:
        # The network's own parameters: the input scaling is the dataset's units, not the model's.
        layers = [layer for layer in self._fitted().layers if layer.name != INPUT_SCALING_LAYER]
        return {"n_params": sum(layer.count_params() for layer in layers)}

    def _hidden_kernels(self) -> dict[str, np.ndarray]:
        dense = [layer for layer in self._fitted().layers if isinstance(layer, keras.layers.Dense)]
        return {layer.name: keras.ops.convert_to_numpy(layer.kernel) for layer in dense[:-1]}

    def weight_snapshots(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        end = self._hidden_kernels() if getattr(self, "model_", None) is not None else {}
        return {name: (self.initial_kernels_[name], end[name]) for name in end if name in self.initial_kernels_}


@dataclass
class _KeptModel:
    """A network built inside ``disposable_models``, and its optimizer's
    variables as built (zero moments, Adagrad's initial accumulators)."""

    model: keras.Model
    optimizer_start: list[np.ndarray]

    @classmethod
    def of(cls, model: keras.Model) -> _KeptModel:
        model.optimizer.build(model.trainable_variables)
        return cls(model, [keras.ops.convert_to_numpy(v) for v in model.optimizer.variables])

    def reset(self, layers: Sequence[Any], learning_rate: Any) -> None:
        """Gives the network the state of one built from ``layers`` (as
        :meth:`KerasMLP._layers` made them) and compiled with an optimizer of
        the recipe's config and ``learning_rate`` (as its config gives it)."""
        made = [layer for layer in layers if isinstance(layer, keras.layers.Layer)]  # not the keras.Input
        for new, kept in zip(made, self.model.layers, strict=True):
            if isinstance(new, keras.layers.Dense):
                # What Dense.build's add_weight does with the new layer's initializers.
                kept.kernel.assign(new.kernel_initializer(kept.kernel.shape, kept.kernel.dtype))
                kept.bias.assign(new.bias_initializer(kept.bias.shape, kept.bias.dtype))
            elif isinstance(new, keras.layers.Dropout):
                kept.seed_generator.state.assign(new.seed_generator.state)
            elif isinstance(new, keras.layers.Normalization):
                for source, target in zip(new.variables, kept.variables, strict=True):
                    target.assign(source)
                kept.finalize_state()
            else:
                raise TypeError(f"no state to reset for a {type(new).__name__} layer")
        for variable, start in zip(self.model.optimizer.variables, self.optimizer_start, strict=True):
            variable.assign(start)
        if isinstance(learning_rate, (int, float)):  # else a schedule, of the same config (the recipe's)
            self.model.optimizer.learning_rate = learning_rate


_kept_models: RecentlyUsed[_KeptModel] = RecentlyUsed(KEPT_MODELS)


def _described(setting: Any) -> Any:
    """A JSON-able description of a model setting made by Hydra (a partial or an
    object with a Keras config); TypeError for one that has none."""
    if setting is None or isinstance(setting, (str, int, float, bool)):
        return setting
    if isinstance(setting, (list, tuple)):
        return [_described(v) for v in setting]
    if isinstance(setting, dict):
        return {str(k): _described(v) for k, v in setting.items()}
    if isinstance(setting, functools.partial):
        function = f"{setting.func.__module__}.{setting.func.__qualname__}"
        return [function, [_described(a) for a in setting.args], {k: _described(v) for k, v in setting.keywords.items()}]
    if hasattr(setting, "get_config"):
        return [f"{type(setting).__module__}.{type(setting).__qualname__}", setting.get_config()]
    raise TypeError(f"no config for {setting!r}")


def fixed_normalization(scaling: InputScaling) -> keras.layers.Normalization:
    """A Normalization layer computing ``(x - offset) / scale``.

    Its statistics are set as an adapted layer's variables rather than passed as
    ``mean=``/``variance=``: those become constants of a traced program, which
    the compiled engine reuses across models of one structure.
    """
    layer = keras.layers.Normalization(name=INPUT_SCALING_LAYER)
    layer.build((None, len(scaling.offset)))
    layer.adapt_mean.assign(scaling.offset.astype(np.float32))
    layer.adapt_variance.assign(np.square(scaling.scale).astype(np.float32))
    layer.finalize_state()
    return layer


def default_output_activation(task: str) -> str:
    return {"binary": "sigmoid", "multiclass": "softmax", "regression": "linear"}[task]


class _ListenerBridge(keras.callbacks.Callback):
    """Forwards Keras epoch ends to framework-neutral listeners (epochs from 1)."""

    def __init__(self, listeners: Sequence[EpochListener]) -> None:
        super().__init__()
        self.listeners = list(listeners)

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        values = {k: float(v) for k, v in (logs or {}).items()}
        for listener in self.listeners:
            listener.on_epoch_end(epoch + 1, values)

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        for listener in self.listeners:
            listener.on_train_end()


class _KerasFlavor:
    """``mlflow.keras`` with the model folder made before its ``save_model`` runs.

    Given an input example, ``mlflow.keras.save_model`` writes it before creating
    the folder and fails (mlflow/mlflow#16183, open in MLflow 3.17).
    """

    __name__ = "mlflow.keras"

    @staticmethod
    def save_model(path: str, **kwargs: Any) -> None:
        from pathlib import Path

        import mlflow.keras

        Path(path).mkdir(parents=True, exist_ok=True)
        kwargs.pop("validate_serving_input", None)  # Model.log's own option, passed to every flavor
        mlflow.keras.save_model(path=path, **kwargs)
