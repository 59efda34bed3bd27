"""Errors a user can cause and read: each carries one line that names the bad
value and what is allowed. The command-line entry points print that line and
exit non-zero instead of showing a traceback."""

from __future__ import annotations


class MlplabError(Exception):
    """Base class of the errors reported to the user as a single line."""

    exit_code = 1


class ConfigError(MlplabError):
    """The composed configuration is invalid (bad option, key, type or range)."""

    exit_code = 2


class NonFiniteLossError(MlplabError):
    """Training produced a NaN or infinite loss and was stopped."""

    def __init__(self, epoch: int, value: float) -> None:
        self.epoch = epoch
        self.value = value
        super().__init__(
            f"training stopped: loss became {value} at epoch {epoch}; "
            "try a lower optimizer.learning_rate or another initializer"
        )


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name if it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
