"""Errors a user can cause and read: each carries one line that names the bad
value and what is allowed. The command-line entry points print that line and
exit non-zero instead of showing a traceback."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

ERROR_PREFIX = "mlplab: error: "
TENSORFLOW_LOG_ENV = "MLPLAB_TENSORFLOW_LOG"


class MlplabError(Exception):
    """Base class of the errors reported to the user as a single line."""

    exit_code = 1


class ConfigError(MlplabError):
    """The composed configuration is invalid (bad option, key, type or range)."""

    exit_code = 2


class DivergenceError(MlplabError):
    """Training diverged (a NaN, infinite or exploding loss, or non-finite
    weights) and was stopped at ``epoch``.

    Attributes:
        epoch: The epoch (from 1) at which divergence was seen.
        value: The loss at that epoch (None when the weights gave it away).
    """

    HINT = "try a lower optimizer.learning_rate or another initializer"

    def __init__(self, epoch: int, value: float | None, what: str, limit: str = "") -> None:
        self.epoch = epoch
        self.value = value
        super().__init__(f"training stopped: {what} at epoch {epoch}{limit}; {self.HINT}")


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name if it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def report(exc: MlplabError) -> int:
    """Prints the one line a user reads for ``exc`` on stderr; returns its exit code.

    Every command ends a user's mistake through here, so the line always reads
    ``mlplab: error: ...``.
    """
    print(f"{ERROR_PREFIX}{exc}", file=sys.stderr)
    return exc.exit_code


_CLEAN_UPS_AT_EXIT: list[Callable[[], None]] = []
if hasattr(os, "register_at_fork"):  # a clean-up is its process's: a forked child skips its parent's
    os.register_at_fork(after_in_child=_CLEAN_UPS_AT_EXIT.clear)


def clean_up_at_exit(action: Callable[[], None]) -> None:
    """Has :func:`exit_now` run ``action``: a clean-up that the teardown it skips
    would have done (``atexit``), such as removing a temporary folder."""
    _CLEAN_UPS_AT_EXIT.append(action)


def exit_now(code: int | str | None = 0) -> None:
    """Ends a command's process with ``code`` once its output is flushed, without
    the interpreter's teardown.

    With TensorFlow, MLflow and matplotlib loaded, the teardown takes about a
    second after the last printed line and does nothing a command needs: its runs
    are ended, its metrics written and its files closed before it returns. Only
    called where a process ends (a ``__main__`` block, a worker's last line),
    never from a function a test calls in-process.
    """
    import logging

    if isinstance(code, str):  # sys.exit("message") prints it and exits 1
        print(code, file=sys.stderr)
        code = 1
    for action in _CLEAN_UPS_AT_EXIT:
        try:
            action()
        except Exception:  # noqa: BLE001  (a clean-up must not change how the command ends)
            pass
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code or 0)


@contextmanager
def ctrl_c_held() -> Iterator[None]:
    """Holds a Ctrl-C that comes during the block until the block has ended.

    A KeyboardInterrupt raised inside TensorFlow's import leaves it half done, and
    it then fails as some other error (a model that "cannot be built"); held, the
    Ctrl-C arrives a few seconds later as itself, and the runs end KILLED. Only
    the main thread can take signals: elsewhere the block runs as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pressed: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pressed.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pressed and callable(previous):
        previous(signal.SIGINT, None)


def stop_behind(exc: BaseException) -> BaseException | None:
    """The stop (Ctrl-C, a command's SIGTERM: not an ``Exception``) that ``exc`` was
    raised while handling, or ``exc`` itself if it is one. A stop that lands in a
    library's clean-up can come out as that library's error: CI saw a zip file's
    ``close`` raise "Can't close the ZIP file while there is an open writing
    handle" over a stop that had landed inside its member's ``close``."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if not isinstance(current, Exception):
            return current
        seen.add(id(current))
        current = current.__context__
    return None


SignalHandler = Callable[[int, FrameType | None], Any]
# The code a stop must not interrupt: a database driver's call, and SQLAlchemy's
# handling of its connection around it.
_STATEMENT_MODULES = ("sqlalchemy.", "sqlite3", "psycopg")


def between_statements(handler: SignalHandler) -> SignalHandler:
    """Wraps a signal handler that raises (a stop: Ctrl-C, a command's SIGTERM) so
    that it does not raise inside a database statement, but right after it.

    A stop raised while SQLite runs a statement leaves the statement unfinished.
    SQLAlchemy then drops the connection, but SQLite keeps it open, with its write
    lock, until the statement is garbage collected, and the stop's own traceback
    keeps it alive. The process's next write (its run ending KILLED or FAILED)
    then waits 20 s for its own lock, fails, and leaves the run RUNNING.

    Inside SQLAlchemy, the handler runs at the next Python call made from outside
    it: a trace function (this thread's only, set until then) watches the calls.
    """

    def held(signum: int, frame: FrameType | None) -> Any:
        if _held_stop:  # one stop is enough: a second (Ctrl-C twice, SIGTERM too) is dropped
            return None
        if not _inside_statement(frame):
            return handler(signum, frame)
        previous = sys.gettrace()

        def at_next_call_outside(called: FrameType, event: str, arg: Any) -> None:
            if event == "call" and not _inside_statement(called.f_back):
                sys.settrace(previous)
                _held_stop.clear()
                handler(signum, called.f_back)  # raised here, the stop comes out of this call
            return None

        _held_stop.append(signum)
        sys.settrace(at_next_call_outside)
        return None

    return held


_held_stop: list[int] = []
"""The signal of the stop :func:`between_statements` holds, if any (one at a time)."""


def drop_held_stop() -> None:
    """Forgets a stop :func:`between_statements` holds (for a process that is ending anyway)."""
    if _held_stop:
        _held_stop.clear()
        sys.settrace(None)


def _inside_statement(frame: FrameType | None) -> bool:
    while frame is not None:
        if str(frame.f_globals.get("__name__", "")).startswith(_STATEMENT_MODULES):
            return True
        frame = frame.f_back
    return False


def run_command(main: Callable[[], object]) -> None:
    """Runs a command's ``main`` as its process's whole life: its return value
    or ``sys.exit`` code becomes the exit code (see :func:`exit_now`). An error
    that is not the user's still ends with Python's traceback.

    A command keeps TensorFlow's C++ lines off the terminal, in
    ``mlruns/logs/tensorflow.log`` unless ``MLPLAB_TENSORFLOW_LOG`` says otherwise
    (``terminal``, or another file); its sweep workers inherit the setting (see
    ``src/models/backend.py``).
    """
    os.environ.setdefault(TENSORFLOW_LOG_ENV, "mlruns/logs/tensorflow.log")
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not where Ctrl-C is ignored
        signal.signal(signal.SIGINT, between_statements(signal.default_int_handler))
    try:
        code = main()
    except SystemExit as exc:
        code = exc.code
    exit_now(code if isinstance(code, (int, str)) or code is None else 0)

