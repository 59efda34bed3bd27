"""Progress of long work on the terminal, and quiet for short work.

A training's progress (:class:`TrainingProgress`, a per-epoch listener) shows once
the training has run for :data:`SHOW_AFTER` seconds, so XOR and Iris stay as quiet
as ever while MNIST moves. On a terminal it redraws one line, as Keras and tqdm do;
in a log or a pipe it logs plain lines, at most one every :data:`LINE_EVERY`
seconds, and always the last epoch's. ``trainer.verbose`` forces it on (1: from the
first epoch; 2: a plain line for every epoch) or off (0).

A step that is not training (loading a dataset, logging a model, drawing plots,
opening a store) says what it is doing once it has taken :data:`SHOW_AFTER` seconds,
and how long it took (:func:`announced`).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TextIO

from src.listeners import EpochListener

log = logging.getLogger("mlplab")

SHOW_AFTER = 3.0
"""Seconds of work before its progress shows (``MLPLAB_PROGRESS_AFTER`` changes it)."""
SHOW_AFTER_ENV = "MLPLAB_PROGRESS_AFTER"
LINE_EVERY = 5.0
"""Seconds between plain progress lines in a log or a pipe."""
REDRAW_EVERY = 0.1
"""Seconds between redraws of a terminal's progress line."""

AUTO, OFF, ON, EVERY_EPOCH = None, 0, 1, 2
"""``trainer.verbose``: null (auto), 0, 1 or 2."""


def show_after() -> float:
    """Seconds before progress shows: :data:`SHOW_AFTER`, or the environment's."""
    try:
        return max(0.0, float(os.environ.get(SHOW_AFTER_ENV, SHOW_AFTER)))
    except ValueError:
        return SHOW_AFTER


class TrainingProgress(EpochListener):
    """One model's training, epoch by epoch: its metrics and the time per epoch.

    On a terminal it redraws one line; otherwise its lines go through the
    ``mlplab`` logger, as the other lines of a run do.

    Args:
        name: The model's name, which starts every line.
        epochs: How many epochs the training runs (at most).
        verbose: ``trainer.verbose``: None (auto), 1 (on), 2 (a line per epoch).
        terminal: The stream to redraw on if it is a terminal (default: standard
            output as it is now).
        clock: Seconds, monotonic (tests pass their own).
    """

    def __init__(
        self,
        name: str,
        epochs: int,
        verbose: int | None = AUTO,
        terminal: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.epochs = epochs
        stream = terminal or sys.stdout
        self.terminal = stream if verbose != EVERY_EPOCH and _is_terminal(stream) else None
        self.delay = show_after() if verbose is AUTO else 0.0
        self.every_epoch = verbose == EVERY_EPOCH
        self.clock = clock
        self.started = clock()
        self.shown_at: float | None = None
        self.open_line = False

    def on_epoch_end(self, epoch: int, logs: Mapping[str, float]) -> None:
        now = self.clock()
        elapsed = now - self.started
        last = epoch >= self.epochs
        if elapsed < self.delay and not (last and self.shown_at is not None):
            return
        wait = REDRAW_EVERY if self.terminal else LINE_EVERY
        if self.shown_at is not None and not last and not self.every_epoch and now - self.shown_at < wait:
            return
        self.shown_at = now
        line = self.line(epoch, logs, elapsed / epoch)
        if self.terminal is None:
            log.info("%s", line)
            return
        self.terminal.write(f"\r{line}\x1b[K")
        self.terminal.flush()
        self.open_line = True

    def on_progress(self, epoch: int, logs: Mapping[str, float]) -> None:
        self.on_epoch_end(epoch, logs)

    def line(self, epoch: int, logs: Mapping[str, float], seconds_per_epoch: float) -> str:
        """``name: epoch 3/10 - loss 0.1234 - accuracy 0.9612 - 0.37 s/epoch``."""
        width = len(str(self.epochs))
        values = "".join(f" - {key} {_number(value)}" for key, value in logs.items())
        return f"{self.name}: epoch {epoch:>{width}}/{self.epochs}{values} - {seconds_per_epoch:.2f} s/epoch"

    def on_train_end(self) -> None:
        self.close()

    def close(self) -> None:
        """Ends a redrawn line, so what follows starts on a line of its own."""
        if self.open_line and self.terminal is not None:
            self.terminal.write("\n")
            self.terminal.flush()
            self.open_line = False


def _number(value: float) -> str:
    return f"{value:.4f}" if 1e-3 <= abs(value) < 1e4 or value == 0 else f"{value:.3g}"


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


@contextmanager
def announced(what: str, after: float | None = None) -> Iterator[None]:
    """Says ``what ...`` if the step inside takes longer than ``after`` seconds
    (default: :func:`show_after`), and then how long it took; says nothing otherwise."""
    said = threading.Event()

    def say() -> None:
        said.set()
        log.info("%s ...", what)

    timer = threading.Timer(show_after() if after is None else after, say)
    timer.daemon = True
    started = time.perf_counter()
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
    if said.is_set():
        log.info("%s: done in %.1f s", what, time.perf_counter() - started)


class OutputProgress:
    """A stream for what an estimator prints while it fits (scikit-learn's
    ``verbose`` output): lines that tell an epoch become listeners'
    :meth:`~EpochListener.on_progress`; the others are dropped, or passed on.

    Args:
        patterns: Regular expressions with a named group ``epoch`` and, optionally,
            ``loss``; a line matching one reports that epoch (and loss).
        listeners: Who hears it.
        passing: Where lines that tell no epoch go (default: nowhere).
        dropping: Starts of lines that never pass.
    """

    def __init__(
        self,
        patterns: list[Any],
        listeners: list[EpochListener],
        passing: TextIO | None = None,
        dropping: tuple[str, ...] = (),
    ) -> None:
        self.patterns = patterns
        self.listeners = listeners
        self.passing = passing
        self.dropping = dropping
        self.pending = ""
        self.epoch = 0
        self.lock = threading.Lock()  # one-vs-rest fits print from several threads

    def write(self, text: str) -> int:
        with self.lock:
            self.pending += text
            *lines, self.pending = self.pending.split("\n")
            for line in lines:
                self._read(line)
        return len(text)

    def flush(self) -> None:
        if self.passing is not None:
            self.passing.flush()

    def close(self) -> None:
        """Reads what is left of an unfinished line."""
        with self.lock:
            if self.pending:
                self._read(self.pending)
            self.pending = ""

    def _read(self, line: str) -> None:
        for pattern in self.patterns:
            match = pattern.search(line)
            if match is None:
                continue
            epoch = int(match.group("epoch"))
            if epoch <= self.epoch:  # one-vs-rest: each class counts its own epochs
                return
            self.epoch = epoch
            loss = match.groupdict().get("loss")
            logs = {"loss": float(loss)} if loss is not None else {}
            for listener in self.listeners:
                listener.on_progress(epoch, logs)
            return
        if self.passing is not None and not line.startswith(self.dropping):
            self.passing.write(line + "\n")
