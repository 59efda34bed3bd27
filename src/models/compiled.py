"""Training a compiled Keras model with its epochs and batches inside one TensorFlow function.

``keras.Model.fit`` pays tens of milliseconds of Python and ``tf.data`` work per
epoch and about two per step, whatever the arithmetic costs: on XOR or Iris that is
nearly all of the time. :class:`CompiledLoop` keeps the data resident as tensors
and runs Keras's own ``train_step`` (and ``test_step`` for the validation split)
inside one ``tf.function`` that loops over the steps of an epoch and over a chunk
of epochs, optionally compiled with XLA. Per-epoch logs come back as one tensor per
metric and chunk, and are then handed to the usual Keras callbacks epoch by epoch,
so metric logging, early stopping, pruning and the non-finite guard act as before,
at chunk boundaries.

Because the step is Keras's own, a full-batch run without XLA reproduces
``fit`` bit for bit (same weights, same per-epoch losses); with XLA, or with
several shuffled batches per epoch (whose order is drawn here, reproducibly, not
by ``tf.data``), results agree within float32 rounding or in distribution.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

STEPS_PER_CALL = 256
"""Steps one call aims at: enough that the call's own cost (~0.2 ms) is small,
few enough that per-epoch listeners (pruning) hear back soon."""


class CompiledLoop:
    """Trains an already compiled Keras model on in-memory arrays.

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
        chunk_epochs: Epochs per call; None picks about ``STEPS_PER_CALL`` steps
            per call (one epoch per call when ``epoch_by_epoch``).
    """

    def __init__(
        self,
        model: keras.Model,
        *,
        batch_size: int | None,
        shuffle: bool,
        seed: int,
        jit_compile: bool,
        chunk_epochs: int | None = None,
    ) -> None:
        self.model = model
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.jit_compile = jit_compile
        self.chunk_epochs = chunk_epochs

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
        model = self.model
        n = len(x)
        batch = n if not self.batch_size or self.batch_size >= n else self.batch_size
        steps_per_epoch = math.ceil(n / batch)
        chunk = 1 if epoch_by_epoch else self.chunk_epochs or math.ceil(STEPS_PER_CALL / steps_per_epoch)
        chunk = max(1, min(chunk, epochs))

        x_t, y_t = tf.constant(x), tf.constant(y)
        validation = None if validation_data is None else tuple(map(tf.constant, validation_data))
        model._symbolic_build(data_batch=(x_t[:batch], y_t[:batch], None))
        model.stop_training = False
        train_keys = list(model.get_metrics_result())
        keys = train_keys + ([f"val_{k}" for k in train_keys] if validation is not None else [])
        run_chunk = tf.function(
            self._chunk_function(x_t, y_t, validation, batch, keys, chunk),
            jit_compile=self.jit_compile,
        )

        callback_list = keras.callbacks.CallbackList(list(callbacks), model=model)
        history: dict[str, list[float]] = {k: [] for k in keys}
        callback_list.on_train_begin()
        epoch = 0
        while epoch < epochs and not model.stop_training:
            count = min(chunk, epochs - epoch)
            logs = {k: v.numpy() for k, v in run_chunk(tf.constant(epoch), tf.constant(count)).items()}
            for i in range(count):
                epoch_logs = {k: float(logs[k][i]) for k in keys}
                for k, value in epoch_logs.items():
                    history[k].append(value)
                callback_list.on_epoch_end(epoch, epoch_logs)
                epoch += 1
                if model.stop_training:
                    break
        model.optimizer.finalize_variable_values(model.trainable_weights)
        callback_list.on_train_end(logs={k: v[-1] for k, v in history.items() if v})
        return history

    def _chunk_function(
        self,
        x: tf.Tensor,
        y: tf.Tensor,
        validation: tuple[tf.Tensor, tf.Tensor] | None,
        batch: int,
        keys: list[str],
        chunk: int,
    ) -> Any:
        """The function that trains ``count`` epochs from ``start`` and returns their logs."""
        model = self.model
        n = int(x.shape[0])
        full_steps, tail = divmod(n, batch)
        seed = tf.constant(self.seed % 2**31, tf.int64)

        def epoch_logs(epoch: tf.Tensor) -> list[tf.Tensor]:
            model.reset_metrics()
            if full_steps == 1 and tail == 0:
                model.train_step((x, y))
            else:
                order = self._order(n, seed, epoch)

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
            if validation is not None:
                model.reset_metrics()
                model.test_step(validation)
                values += [tf.cast(v, tf.float32) for v in model.get_metrics_result().values()]
            return values

        def run_chunk(start: tf.Tensor, count: tf.Tensor) -> dict[str, tf.Tensor]:
            def body(i: tf.Tensor, arrays: tuple[tf.TensorArray, ...]) -> tuple[Any, ...]:
                values = epoch_logs(tf.cast(start + i, tf.int64))
                return i + 1, tuple(a.write(i, v) for a, v in zip(arrays, values))

            arrays = tuple(tf.TensorArray(tf.float32, size=chunk) for _ in keys)
            _, arrays = tf.while_loop(lambda i, _: i < count, body, (tf.constant(0), arrays))
            return {k: a.stack() for k, a in zip(keys, arrays)}

        return run_chunk

    def _order(self, n: int, seed: tf.Tensor, epoch: tf.Tensor) -> tf.Tensor:
        if not self.shuffle:
            return tf.range(n)
        noise = tf.random.stateless_uniform([n], seed=tf.stack([seed, epoch]))
        return tf.argsort(noise)
