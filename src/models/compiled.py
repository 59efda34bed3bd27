"""Training a compiled Keras model with its epochs and batches inside one TensorFlow function.

``keras.Model.fit`` pays tens of milliseconds of Python and ``tf.data`` work per
epoch and about two per step, whatever the arithmetic costs: on XOR or Iris that is
nearly all of the time. :class:`CompiledLoop` keeps the data resident as tensors
and runs Keras's own ``train_step`` (and ``test_step`` for the validation split)
inside one ``tf.function`` that loops over the steps of an epoch and over a chunk
of epochs, optionally compiled with XLA. Per-epoch logs come back as one tensor per
metric and chunk, and are then handed to the usual Keras callbacks epoch by epoch,
so metric logging, early stopping, pruning and the divergence guard act as before,
at chunk boundaries.

Because the step is Keras's own, a full-batch run without XLA reproduces
``fit`` (the same weights and per-epoch losses: identical in the runs compared,
and tested to float32 rounding); with XLA, or with
several shuffled batches per epoch (whose order is drawn here, reproducibly, not
by ``tf.data``), results agree within float32 rounding or in distribution.

Tracing that function costs about 0.3 s, more than a whole XOR training, so the
traced program is kept per model structure (:func:`structure_key`, plus the
constants a trace holds, such as a Normalization layer's adapted mean) and reused
by later models of the same structure in the process, such as the trials of a sweep
that differ only in learning rate. It trains a private copy of the structure: the
model's state (weights, seeds, optimizer slots and learning rate) is copied in
before training and out after, so no two models ever share variables.
"""

from __future__ import annotations

import hashlib
import json
import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from src.models.backend import import_tensorflow

tf = import_tensorflow()  # first: in a command, TensorFlow's start-up lines go to its log file (backend.py)
import keras  # noqa: E402
import numpy as np  # noqa: E402

from src.models.base import CHECKPOINTS_PER_TRAINING, RecentlyUsed

STEPS_PER_CALL = 256
"""Steps one call aims at at most: enough that the call's own cost (~0.2 ms) is small."""
PROGRAM_CACHE_SIZE = 8
"""Traced programs kept per process (each holds a copy of its model structure)."""


@dataclass
class _Program:
    """A traced chunk function and the private model it trains."""

    runner: keras.Model
    function: Any
    keys: list[str]
    signature: tuple[tf.TensorSpec, tf.TensorSpec]
    """The inputs and targets of one row of the training data, with any number of rows."""
    holds: weakref.ref | None = None
    """The model whose state the runner holds: the last one trained, until the next."""
    score: Any = None
    """The traced scoring function of :meth:`CompiledLoop.scores`, made on first use."""


_programs: RecentlyUsed[_Program] = RecentlyUsed(PROGRAM_CACHE_SIZE)


class CompiledLoop:
    """Trains an already compiled Keras model on in-memory arrays.

    A call trains at most ``STEPS_PER_CALL`` steps and at most a tenth of the
    epochs (``CHECKPOINTS_PER_TRAINING``), or one epoch when ``epoch_by_epoch``.

    Args:
        model: A compiled ``keras.Model``; its optimizer, loss and metrics are used
            as they are.
        batch_size: Rows per step; None or at least the number of rows trains
            full batch.
        shuffle: Reshuffle the rows every epoch. Ignored for a full batch, where
            the order would only change the order of a sum.
        seed: Seeds the per-epoch shuffles (stateless, so the same seed gives the
            same orders).
        jit_compile: Compile the loop with XLA.
    """

    def __init__(
        self,
        model: keras.Model,
        *,
        batch_size: int | None,
        shuffle: bool,
        seed: int,
        jit_compile: bool,
    ) -> None:
        self.model = model
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.jit_compile = jit_compile
        self.program: _Program | None = None
        """The program that trained the model, once ``fit`` ran."""

    def fit(
        self,
        x: np.ndarray,
        y: np.ndarray,
        *,
        epochs: int,
        validation_data: tuple[np.ndarray, np.ndarray] | None = None,
        callbacks: Sequence[keras.callbacks.Callback] = (),
        epoch_by_epoch: bool = False,
    ) -> dict[str, list[float]]:
        """Trains for ``epochs`` epochs, or until a callback stops training.

        Args:
            epoch_by_epoch: Return to Python after every epoch, for callbacks that
                read or set the weights at their epoch (EarlyStopping).

        Returns:
            The per-epoch logs, as ``keras.Model.fit``'s ``history.history``.
        """
        n = len(x)
        batch = n if not self.batch_size or self.batch_size >= n else self.batch_size
        steps_per_epoch = math.ceil(n / batch)
        if epoch_by_epoch:
            chunk = 1
        else:
            chunk = min(math.ceil(STEPS_PER_CALL / steps_per_epoch), math.ceil(epochs / CHECKPOINTS_PER_TRAINING))
        data = (tf.constant(x), tf.constant(y))
        validation = () if validation_data is None else tuple(map(tf.constant, validation_data))
        if self.model.built:
            # Only its optimizer's slots are needed, to take the trained state; the
            # compiled loss and metrics are the runner's (a symbolic build of the
            # model's own costs three times as much, on every model trained).
            if not self.model.optimizer.built:
                self.model.optimizer.build(self.model.trainable_variables)
        else:
            build_for_training(self.model, (data[0][:batch], data[1][:batch], None))

        program = self._program(data, validation, batch, chunk)
        runner = program.runner
        program.holds = None
        copy_state(self.model, runner)
        try:
            history = self._train(program, data, validation, epochs, chunk, callbacks)
        finally:
            copy_state(runner, self.model)
            program.holds = weakref.ref(self.model)
        self.program = program
        return history

    def scores(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float] | None:
        """The trained model's outputs for ``x`` and its loss against ``y`` (targets
        in the form it trained on), as ``model(x, training=False)`` and
        ``compute_loss`` give them, from one call of a function traced once per
        program: an eager call of a small model costs milliseconds of Keras's Python.

        Valid while the model's weights are the ones training left, as they are
        right after ``fit``.

        Returns:
            None when the runner no longer holds this model's state (a model of the
            same structure trained since) or for inputs unlike the training data;
            score the model itself then.
        """
        program = self.program
        if program is None or program.holds is None or program.holds() is not self.model:
            return None
        x_spec, y_spec = program.signature
        if not (_fits(x_spec, x) and _fits(y_spec, y)):
            return None
        if program.score is None:
            runner = program.runner

            def score(x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
                output = runner(x, training=False)
                return output, runner.compute_loss(y=y, y_pred=output, training=False)

            program.score = tf.function(score, input_signature=program.signature, autograph=False)
        output, loss = program.score(x, y)
        return output.numpy(), float(loss)

    def _train(
        self,
        program: _Program,
        data: tuple[tf.Tensor, tf.Tensor],
        validation: tuple[tf.Tensor, ...],
        epochs: int,
        chunk: int,
        callbacks: Sequence[keras.callbacks.Callback],
    ) -> dict[str, list[float]]:
        runner, keys = program.runner, program.keys
        runner.stop_training = False
        callback_list = keras.callbacks.CallbackList(list(callbacks), model=runner)
        history: dict[str, list[float]] = {k: [] for k in keys}
        ordered = sorted(keys)
        seed = tf.constant(self.seed % 2**31, tf.int64)
        callback_list.on_train_begin()
        epoch = 0
        while epoch < epochs and not runner.stop_training:
            count = min(chunk, epochs - epoch)
            logs = program.function(data, validation, seed, tf.constant(epoch), tf.constant(count))
            logs = {k: v.numpy().tolist() for k, v in logs.items()}
            for i in range(count):
                # Python floats in sorted order, as CallbackList.on_epoch_end would
                # hand them on: called directly, the callbacks skip its conversion
                # of every value (a tensor check costing ~15 us, most of a callback
                # round on XOR).
                epoch_logs = {k: logs[k][i] for k in ordered}
                for k, value in epoch_logs.items():
                    history[k].append(value)
                for callback in callback_list.callbacks:
                    callback.on_epoch_end(epoch, epoch_logs)
                epoch += 1
                if runner.stop_training:
                    break
        runner.optimizer.finalize_variable_values(runner.trainable_weights)
        callback_list.on_train_end(logs={k: v[-1] for k, v in history.items() if v})
        return history

    def _program(
        self, data: tuple[tf.Tensor, tf.Tensor], validation: tuple[tf.Tensor, ...], batch: int, chunk: int
    ) -> _Program:
        """The cached program for this model structure and these shapes, or a new one."""
        key = json.dumps(
            {
                "model": structure_key(self.model),
                "constants": _constants_digest(self.model),
                "data": [(t.shape.as_list(), t.dtype.name) for t in (*data, *validation)],
                "loop": [batch, chunk, self.shuffle, self.jit_compile],
            },
            sort_keys=True,
        )
        program = _programs.get(key)
        if program is not None:
            return program
        runner = _blank_copy(self.model, (data[0][:batch], data[1][:batch], None), xla=self.jit_compile)
        train_keys = list(runner.get_metrics_result())
        keys = train_keys + ([f"val_{k}" for k in train_keys] if validation else [])
        # Without AutoGraph: the loops are tf.while_loop already and every `if` is on
        # a Python value, as in Keras's own steps (do_not_convert); converting the
        # source took about 0.6 s of each process's first trace.
        function = tf.function(
            self._chunk_function(runner, batch, keys, chunk), jit_compile=self.jit_compile, autograph=False
        )
        signature = tuple(tf.TensorSpec([None, *t.shape[1:]], t.dtype) for t in data)
        return _programs.put(key, _Program(runner, function, keys, signature))

    def _chunk_function(self, model: keras.Model, batch: int, keys: list[str], chunk: int) -> Any:
        """The function that trains ``count`` epochs from ``start`` and returns their logs."""
        shuffle = self.shuffle

        def epoch_logs(
            data: tuple[tf.Tensor, tf.Tensor], validation: tuple[tf.Tensor, ...], seed: tf.Tensor, epoch: tf.Tensor
        ) -> list[tf.Tensor]:
            x, y = data
            n = int(x.shape[0])
            full_steps, tail = divmod(n, batch)
            model.reset_metrics()
            if full_steps == 1 and tail == 0:
                model.train_step((x, y))
            else:
                order = _order(n, seed, epoch) if shuffle else tf.range(n)

                def rows(start: tf.Tensor | int, size: int) -> tuple[tf.Tensor, tf.Tensor]:
                    index = tf.slice(order, [start], [size])
                    return tf.gather(x, index), tf.gather(y, index)

                def step(s: tf.Tensor) -> tf.Tensor:
                    model.train_step(rows(s * batch, batch))
                    return s + 1

                tf.while_loop(lambda s: s < full_steps, step, [tf.constant(0)])
                if tail:
                    model.train_step(rows(full_steps * batch, tail))
            values = [tf.cast(v, tf.float32) for v in model.get_metrics_result().values()]
            if validation:
                model.reset_metrics()
                model.test_step(validation)
                values += [tf.cast(v, tf.float32) for v in model.get_metrics_result().values()]
            return values

        def run_chunk(
            data: tuple[tf.Tensor, tf.Tensor],
            validation: tuple[tf.Tensor, ...],
            seed: tf.Tensor,
            start: tf.Tensor,
            count: tf.Tensor,
        ) -> dict[str, tf.Tensor]:
            def body(i: tf.Tensor, arrays: tuple[tf.TensorArray, ...]) -> tuple[Any, ...]:
                values = epoch_logs(data, validation, seed, tf.cast(start + i, tf.int64))
                return i + 1, tuple(a.write(i, v) for a, v in zip(arrays, values, strict=True))

            arrays = tuple(tf.TensorArray(tf.float32, size=chunk) for _ in keys)
            _, arrays = tf.while_loop(lambda i, _: i < count, body, (tf.constant(0), arrays))
            return {k: a.stack() for k, a in zip(keys, arrays, strict=True)}

        return run_chunk


def _fits(spec: tf.TensorSpec, array: np.ndarray) -> bool:
    return array.dtype == spec.dtype.as_numpy_dtype and spec.shape.is_compatible_with(array.shape)


def _order(n: int, seed: tf.Tensor, epoch: tf.Tensor) -> tf.Tensor:
    """A permutation of ``n`` rows, fixed by the seed and the epoch."""
    return tf.argsort(tf.random.stateless_uniform([n], seed=tf.stack([seed, epoch])))


def build_for_training(model: keras.Model, data_batch: tuple[Any, ...]) -> None:
    """Creates a compiled model's optimizer and metric variables for a batch like
    ``data_batch``, as ``fit`` does before its first step.

    Keras has no public call for this: it is ``keras.Model._symbolic_build``, one
    of the two private Keras APIs this project uses (the other: Keras's global seed
    state, in :func:`src.models.backend.seed_everything`), each kept in one place and
    checked on the Keras minor version pinned in pyproject.toml.
    """
    model._symbolic_build(data_batch=data_batch)


def structure_key(model: keras.Model) -> Any:
    """What a traced training step depends on: the layers' configs and the compile
    config, without names and without the learning rate (a variable, copied in)."""

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k != "name"}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    compiled = model.get_compile_config()
    optimizer = {k: v for k, v in compiled["optimizer"]["config"].items() if k != "learning_rate"}
    compiled = {**compiled, "optimizer": {**compiled["optimizer"], "config": optimizer}}
    return json.loads(json.dumps(strip({"layers": model.get_config(), "compile": compiled}), default=str))


def _constants_digest(model: keras.Model) -> str:
    """A digest of the state a traced step holds as constants rather than reading
    from variables: an adapted Normalization layer's mean and variance."""
    digest = hashlib.sha256()
    for layer in model.layers:
        if isinstance(layer, keras.layers.Normalization):
            for variable in layer.variables:
                digest.update(np.asarray(variable).tobytes())
    return digest.hexdigest()


class ThreeFryDropout(keras.layers.Dropout):
    """Keras's ``Dropout``, its mask drawn with TensorFlow's ThreeFry generator.

    Keras leaves the algorithm to TensorFlow ("auto_select"), which XLA on CPU
    compiles into a slow generator: about 185 us for a 32x128 mask against 8 us
    with ThreeFry, which made an MNIST epoch with dropout slower under XLA than
    without it. Same rate, noise shape and seed generator state, so it trains a
    private copy of a model with ``Dropout`` layers (see :func:`_blank_copy`); the
    masks differ from ``Dropout``'s, as XLA's arithmetic already differs.
    """

    def call(self, inputs: Any, training: bool = False) -> Any:
        if not training or self.rate == 0:
            return inputs
        seed = tf.cast(tf.math.floormod(self.seed_generator.next(), tf.int32.max - 1), tf.int32)
        noise_shape = tf.shape(inputs)
        if self.noise_shape is not None:
            noise_shape = [noise_shape[i] if n is None else n for i, n in enumerate(self.noise_shape)]
        return tf.nn.experimental.stateless_dropout(
            inputs, rate=self.rate, noise_shape=noise_shape, seed=seed, rng_alg="threefry"
        )


def _blank_copy(model: keras.Model, data_batch: tuple[Any, ...], *, xla: bool) -> keras.Model:
    """A compiled, built model of the same structure, drawing no random numbers
    (zeros and a fixed dropout seed: its state is always copied in before use).
    Under XLA its ``Dropout`` layers are :class:`ThreeFryDropout`."""

    def blank(layer: keras.layers.Layer) -> keras.layers.Layer:
        config = layer.get_config()
        for key in ("kernel_initializer", "bias_initializer"):
            if key in config:
                config[key] = "zeros"
        if isinstance(layer, keras.layers.Dropout):
            config["seed"] = 0
            if xla:
                return ThreeFryDropout.from_config(config)
        return layer.__class__.from_config(config)

    runner = keras.models.clone_model(model, clone_function=blank)
    runner.compile_from_config(model.get_compile_config())
    build_for_training(runner, data_batch)
    return runner


def copy_state(source: keras.Model, target: keras.Model) -> None:
    """Copies every variable of a model and its optimizer into another of the same structure."""
    pairs = [(source.variables, target.variables), (source.optimizer.variables, target.optimizer.variables)]
    for sources, targets in pairs:
        if len(sources) != len(targets):
            raise ValueError(f"models differ in structure: {len(sources)} vs {len(targets)} variables")
        for a, b in zip(sources, targets, strict=True):
            b.assign(a)
    for layer in target.layers:
        if isinstance(layer, keras.layers.Normalization):
            layer.finalize_state()  # its call uses tensors made from the variables, not them
