"""TensorFlow and Keras, imported once per process; in a command, without their
start-up noise.

TensorFlow's C++ libraries write their start-up notices (absl's "All log messages
before absl::InitializeLog() ...", oneDNN's and the CPU features' ``I0000`` lines)
straight to file descriptor 2 while they load; ``TF_CPP_MIN_LOG_LEVEL`` does not
reach them. A user reads them as failures. In a command (and its sweep workers,
which inherit the setting) they go to the file ``MLPLAB_TENSORFLOW_LOG`` names,
``mlruns/logs/tensorflow.log`` (see :func:`src.errors.run_command`); anything
Python raises still reaches the terminal. Code that uses mlplab as a library (the
tests, a notebook) sets nothing and sees TensorFlow as it is.

Later C++ lines are TensorFlow's to filter (``TF_CPP_MIN_LOG_LEVEL``, 3 in a command
unless set), except absl's, which ignore it: one seen, ``E0000 ... NodeDef mentions
attribute use_unbounded_threadpool``, came when MLflow checked a logged Keras model
by predicting with it (a check now left out, see ``Estimator.log_model``); logging a
Keras model still runs inside :func:`tensorflow_log`. A real failure raises in Python.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from types import ModuleType

from src.errors import TENSORFLOW_LOG_ENV


_TENSORFLOW_SEED: list[int] = []
"""The seed TensorFlow's global seed was last set to in this process."""


def seed_everything(seed: int) -> None:
    """Seeds Python, NumPy, Keras and TensorFlow, and makes TensorFlow ops
    deterministic, as ``keras.utils.set_random_seed`` after
    ``keras.backend.clear_session`` does.

    Both of those also clear TensorFlow's kernel cache (to reset stateful random
    kernels), which makes every traced program instantiate again: about 70 ms for
    the compiled training loop, more than a whole XOR trial trains, in every trial
    of a long-lived sweep worker. Nothing here keeps state in such kernels: Keras 3
    and the compiled loop draw their random numbers statelessly from seeds, and
    ``fit`` shuffles in a tf.data pipeline built anew per call, seeded from the
    global seed. So once TensorFlow's global seed is ``seed``, only Python's,
    NumPy's and Keras's seeds are reset; the same numbers follow (tested by
    training each engine again and again in one process).
    """
    import random

    import keras
    import numpy as np
    import tensorflow as tf

    if _TENSORFLOW_SEED == [seed]:
        # keras.utils.set_random_seed without tf.random.set_seed: Keras's global
        # seed, and the generator drawn from it rebuilt (Keras's private global state).
        from keras.src.backend.common import global_state
        from keras.src.random.seed_generator import GLOBAL_SEED_GENERATOR
        from keras.src.utils.rng_utils import GLOBAL_RANDOM_SEED

        global_state.set_global_attribute(GLOBAL_RANDOM_SEED, seed)
        global_state.set_global_attribute(GLOBAL_SEED_GENERATOR, None)
        random.seed(seed)
        np.random.seed(seed)
        return
    keras.backend.clear_session(free_memory=False)  # without gc: 0.3 s per call in a sweep worker
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    _TENSORFLOW_SEED[:] = [seed]


def import_tensorflow() -> ModuleType:
    """Imports TensorFlow and Keras (once) and returns ``tensorflow``."""
    if "tensorflow" not in sys.modules:
        with tensorflow_log():
            import keras  # noqa: F401
            import tensorflow  # noqa: F401
    return sys.modules["tensorflow"]


@contextlib.contextmanager
def tensorflow_log() -> Iterator[None]:
    """Sends what is written to file descriptor 2 inside the block (TensorFlow's C++
    lines) to the file ``MLPLAB_TENSORFLOW_LOG`` names; nothing changes when it is
    unset or ``terminal``. Python's errors leave the block first and still reach
    the terminal."""
    destination = os.environ.get(TENSORFLOW_LOG_ENV, "terminal")
    if destination == "terminal":
        yield
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        os.makedirs(os.path.dirname(destination) or ".", exist_ok=True)
        sink = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError:  # an unwritable folder: the lines are dropped, not the command
        sink = os.open(os.devnull, os.O_WRONLY)
    os.dup2(sink, 2)
    os.close(sink)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
