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
unless set), except absl's, which ignore it: the one seen, ``E0000 ... NodeDef
mentions attribute use_unbounded_threadpool``, comes when MLflow checks a logged
Keras model by predicting with it, with no Python error; that call runs inside
:func:`tensorflow_log` too. A real failure raises in Python.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from types import ModuleType

from src.errors import TENSORFLOW_LOG_ENV


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
