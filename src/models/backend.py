"""TensorFlow and Keras, imported once per process without their start-up noise.

TensorFlow's C++ libraries write their start-up notices (absl's "All log messages
before absl::InitializeLog() ...", oneDNN's and the CPU features' ``I0000`` lines)
straight to file descriptor 2 while they load; ``TF_CPP_MIN_LOG_LEVEL`` does not
reach them. A user reads them as failures. They go to ``mlruns/logs/tensorflow.log``
instead; anything Python raises during the import still reaches the terminal.

Later C++ lines are TensorFlow's to filter (``TF_CPP_MIN_LOG_LEVEL``, 3 unless set),
except absl's, which ignore it: the one seen, ``E0000 ... NodeDef mentions attribute
use_unbounded_threadpool``, comes when MLflow checks a logged Keras model by
predicting with it, with no Python error; that call runs inside
:func:`tensorflow_log` too. A real failure raises in Python.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

LOG_PATH = Path("mlruns") / "logs" / "tensorflow.log"


def import_tensorflow() -> ModuleType:
    """Imports TensorFlow and Keras (once) and returns ``tensorflow``.

    Set ``MLPLAB_TENSORFLOW_LOG=terminal`` to see TensorFlow's own lines.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with tensorflow_log():
        import keras  # noqa: F401
        import tensorflow
    return tensorflow


@contextlib.contextmanager
def tensorflow_log() -> Iterator[None]:
    """Sends what is written to file descriptor 2 inside the block (TensorFlow's C++
    lines) to ``mlruns/logs/tensorflow.log``; Python's errors leave the block first
    and still reach the terminal."""
    if os.environ.get("MLPLAB_TENSORFLOW_LOG") == "terminal":
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        LOG_PATH.parent.mkdir(parents=True, exist_ok=True)
        sink = os.open(LOG_PATH, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
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
