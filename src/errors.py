"""Errors a user can cause and read: each carries one line that names the bad
value and what is allowed. The command-line entry points print that line and
exit non-zero instead of showing a traceback."""

from __future__ import annotations

import sys

ERROR_PREFIX = "mlplab: error: "


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
