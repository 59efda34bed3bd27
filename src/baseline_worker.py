"""The baselines trained in a second process while the command's own process
imports TensorFlow and trains the network.

A command pays for TensorFlow's import (several seconds, most of it holding the
GIL) before the network can train, and the scikit-learn baselines need none of
it, only MLflow, scikit-learn and skops (seconds more of imports). On a machine
with a core to spare, :func:`src.training.run` therefore starts this worker first
thing, with the function that readies it (``setup``, from :mod:`src.training`):
the worker imports and loads the data while the command imports TensorFlow, then
trains and logs each baseline in its child run of the command's parent run, as
the command would have. The command relays its log lines after its own model's,
so the output reads as it did, and takes back the metrics, run ids and fitted
baselines for its table and its side-by-side figure.

In a job of a warm process (``src/warm.py``), which has imported everything,
the worker is forked from the job instead: it starts at once, so it gains even
on a busy machine, and trains the baselines while the command trains the network.

This module is the process and its pipe, not the training: it imports nothing of
``src`` but the errors (and, when choosing how to start, the warm process's
light module), so :mod:`src.training` can use it without a cycle.

The worker ignores the terminal's Ctrl-C (it runs in a session of its own) and
stops only as the command tells it: SIGINT when the command was interrupted (its
runs end KILLED), SIGTERM when the command failed (its runs end FAILED, saying
why). A command that dies closes the pipe, and the worker's next line ends it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import multiprocessing
import os
import queue
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from src.errors import (
    MlplabError, between_statements, drop_held_stop, exit_now, first_line, stop_behind,
)

if TYPE_CHECKING:
    from multiprocessing.context import BaseContext

log = logging.getLogger("mlplab")

_STOP_WAIT = 60.0
"""Seconds a stopped worker gets to end its runs before it is killed."""


class WorkerFailed(MlplabError):
    """The worker stopped on an error: its line, and the exit code it asks for."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class CommandEnded(BaseException):
    """Raised in the worker when the command it serves failed (SIGTERM) or is gone.

    A BaseException, as KeyboardInterrupt is: it may land anywhere, and a library's
    ``except Exception`` must not turn it into an error of its own (MLflow reports
    any failure inside skops's save as an unsupported model) or swallow it (a
    figure that fails is skipped). The model's run ends FAILED with its message.
    """


@dataclass(frozen=True)
class Job:
    """What the worker is sent once the command's parent run exists (picklable):
    the models to train by child-run name (:class:`src.training.ModelRun`)."""

    experiment: str
    parent_run_id: str
    models: dict[str, Any]


@dataclass(frozen=True)
class Trained:
    """What the worker sends back: each baseline's metrics, run id and fitted model."""

    metrics: dict[str, dict[str, float]]
    run_ids: dict[str, str]
    models: dict[str, Any]


Setup = Callable[[dict[str, Any]], Callable[[Job], Trained]]
"""Readies the worker for a config (imports, data, tracking store) and returns
what trains a :class:`Job`; a module-level function, so it pickles by name."""


WORKER_ENV = "MLPLAB_BASELINE_WORKER"
"""``1`` always trains the baselines in the worker, ``0`` never; unset, it is chosen."""


def start_method() -> BaseContext | None:
    """How the baselines' process starts, or None to train the baselines in the
    command's own: forked, in a job of a warm process that can fork (nothing to
    import); spawned, elsewhere, when :func:`has_a_core_to_spare`.
    ``MLPLAB_BASELINE_WORKER=0`` keeps them in the command's process."""
    from src.warm import fork_context

    if os.environ.get(WORKER_ENV, "") == "0":
        return None
    forked = fork_context()
    if forked is not None:
        return forked
    return multiprocessing.get_context("spawn") if has_a_core_to_spare() else None


def has_a_core_to_spare() -> bool:
    """Whether a second process gains: TensorFlow is not imported yet here (a
    fresh command, not a test or notebook that has it), and a core is idle (the
    last minute's load average is below the cores less half of one). On a busy
    machine (two commands at once, a test suite) the worker would only compete
    with this command's own imports. ``MLPLAB_BASELINE_WORKER`` decides instead."""
    if "tensorflow" in sys.modules or not hasattr(os, "setsid"):  # (Windows has no sessions)
        return False
    forced = os.environ.get(WORKER_ENV, "")
    if forced in ("0", "1"):
        return forced == "1"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return hasattr(os, "getloadavg") and os.getloadavg()[0] < cores - 0.5


class BaselineWorker:
    """The command's handle on the worker process.

    Args:
        setup: Readies the worker; it runs there as soon as the process starts.
        plain: The validated config the command runs.
        context: How the process starts (:func:`start_method`).
    """

    def __init__(self, setup: Setup, plain: Mapping[str, Any], context: BaseContext) -> None:
        self.connection, child_end = context.Pipe()
        # A forked worker inherits the command's end of the pipe too, and closes it
        # first: else the command closing its end (no job after all) is never seen there.
        commands_end = self.connection if context.get_start_method() == "fork" else None
        self.process = context.Process(
            target=worker_main, args=(child_end, setup, dict(plain), commands_end), name="mlplab-baselines"
        )
        self.process.start()
        child_end.close()
        self.messages: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.reader: threading.Thread | None = None
        self.names: list[str] = []

    def send(self, job: Job) -> None:
        """Hands the worker its models; its messages are read from now on (and
        held until :meth:`result`), so a worker that logs much never waits on the pipe."""
        self.names = list(job.models)
        self.connection.send(job)
        self.reader = threading.Thread(target=self._read, name="mlplab-baselines-reader", daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                message = self.connection.recv()
            except (EOFError, OSError):
                self.messages.put(("gone", None))
                return
            self.messages.put(message)
            if message[0] != "log":
                return

    def result(self) -> Trained:
        """Relays the worker's log lines (those held, then as they come) until it
        sends its results.

        Raises:
            WorkerFailed: The worker stopped on an error, or died.
        """
        while True:
            kind, body = self.messages.get()
            if kind == "log":
                _emit(body)
                continue
            self.process.join(_STOP_WAIT)
            if kind == "trained":
                return body
            if kind == "error":
                raise WorkerFailed(*body)
            code = self.process.exitcode
            how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with code {code}"
            raise WorkerFailed(f"the process training {', '.join(self.names)} {how}")

    def stop(self, interrupted: bool) -> None:
        """Stops a worker that is still running, and waits until its runs have
        ended: KILLED when ``interrupted`` (Ctrl-C), FAILED otherwise. A worker
        still readying itself or waiting for its job has no run: SIGTERM ends it
        where it is, not after its imports (seconds the command's error would wait)."""
        if self.process.is_alive():
            stop = signal.SIGINT if interrupted and self.reader is not None else signal.SIGTERM
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, stop)
            self.process.join(_STOP_WAIT)
            if self.process.is_alive():
                self.process.kill()
                self.process.join(5)
        if self.reader is not None:  # its lines so far still reach the log, as the runs' ends
            while not self.messages.empty():
                kind, body = self.messages.get_nowait()
                if kind == "log":
                    _emit(body)


def _emit(body: dict[str, Any]) -> None:
    """Prints a log line of the worker's through the command's own handlers."""
    record = logging.makeLogRecord(body)
    logging.getLogger(record.name).handle(record)


# ------------------------------------------------------------------- the worker
class _Relay(logging.Handler):
    """Sends the worker's ``mlplab`` log records to the command, which prints them."""

    def __init__(self, connection: Connection) -> None:
        super().__init__(logging.INFO)
        self.connection = connection
        self.sending = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        body = {
            "name": record.name, "levelno": record.levelno, "levelname": record.levelname,
            "msg": record.getMessage(), "args": None, "created": record.created, "msecs": record.msecs,
        }
        try:
            with self.sending:
                self.connection.send(("log", body))
        except OSError:  # the command was killed: nobody reads, so end the runs and the worker
            raise CommandEnded("stopped: the command ended before this model's training did") from None


class _LineStream(io.TextIOBase):
    """The worker's standard output: what a library prints still reaches the
    terminal (on stderr), and training progress, which redraws only on a
    terminal, logs its lines through the command instead: the command's own
    progress line is the one a terminal redraws."""

    def __init__(self, target: Any) -> None:
        self.target = target

    def write(self, text: str) -> int:
        return self.target.write(text)

    def flush(self) -> None:
        self.target.flush()

    def isatty(self) -> bool:
        return False


def _stops_are_raised_again(unraisable: Any, default: Callable[[Any], None] = sys.unraisablehook) -> None:
    """A stop that lands inside a garbage collector's callback (a weakref's, a
    ``__del__``) is swallowed there, with an "Exception ignored" traceback, and the
    worker would train on. Its signal is sent again a moment later, from a thread:
    sent from here, its handler would run, and be swallowed, here again."""
    stops = {CommandEnded: signal.SIGTERM, KeyboardInterrupt: signal.SIGINT}
    again = next((sent for stop, sent in stops.items() if isinstance(unraisable.exc_value, stop)), None)
    if again is None:
        default(unraisable)
        return
    timer = threading.Timer(0.01, os.kill, (os.getpid(), again))
    timer.daemon = True
    timer.start()


def _ending_anyway() -> None:
    """A worker that is already ending ignores any further stop: the command often
    fails on the same input at the same moment (data that will not load), and a
    stop raised inside this error's handling would print its traceback."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    drop_held_stop()


def worker_main(
    connection: Connection, setup: Setup, plain: dict[str, Any], commands_end: Connection | None = None
) -> None:
    """Entry point of the worker process (``commands_end``: the command's end of the
    pipe, which a forked worker holds too and closes)."""
    if commands_end is not None:
        commands_end.close()
    os.setsid()  # the terminal's Ctrl-C goes to the command, which stops the worker once
    # A forked worker has the command's handlers.
    signal.signal(signal.SIGINT, between_statements(signal.default_int_handler))
    sys.stdout = _LineStream(sys.stderr)
    for handler in list(log.handlers):  # and its log handlers: this worker's lines go through the command
        log.removeHandler(handler)
    relay = _Relay(connection)
    log.addHandler(relay)
    log.setLevel(logging.INFO)
    log.propagate = False

    def command_failed(signum: int, frame: Any) -> None:
        raise CommandEnded("stopped: the command failed before this model's training ended")

    signal.signal(signal.SIGTERM, between_statements(command_failed))
    sys.unraisablehook = _stops_are_raised_again
    try:
        train = setup(plain)
        try:
            job: Job = connection.recv()
        except EOFError:  # the command ended before its parent run began
            exit_now(0)
        trained = train(job)
        with relay.sending:
            connection.send(("trained", trained))
    except KeyboardInterrupt:
        _ending_anyway()
        exit_now(130)
    except CommandEnded:
        _ending_anyway()
        exit_now(1)
    except MlplabError as exc:
        _ending_anyway()
        with contextlib.suppress(OSError), relay.sending:
            connection.send(("error", (str(exc), exc.exit_code)))
        exit_now(exc.exit_code)
    except Exception as exc:  # not the user's: the command says so in one line, the traceback goes to stderr
        import traceback

        _ending_anyway()
        stop = stop_behind(exc)  # a library's error over a stop, which landed in its clean-up
        if stop is not None:
            exit_now(130 if isinstance(stop, KeyboardInterrupt) else 1)
        traceback.print_exc()
        with contextlib.suppress(OSError), relay.sending:
            connection.send(("error", (f"training the baselines failed: {first_line(exc)}", 1)))
        exit_now(1)
    exit_now(0)
