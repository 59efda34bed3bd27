"""One process at a time for what several commands may create at once: the local
MLflow store, a study's journal. Commands started together on a fresh folder
otherwise each create it half-way (MLflow's schema migrations are not safe to run
concurrently)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from src.errors import MlplabError

CREATION_TIMEOUT = 300.0
"""Seconds a command waits for another one to finish creating the same thing."""


@contextlib.contextmanager
def creation_lock(target: Path, timeout: float = CREATION_TIMEOUT) -> Iterator[None]:
    """Holds an inter-process lock on ``target`` (``<target>.create-lock`` beside it,
    its folder created first) while the block creates or upgrades it.

    Raises:
        MlplabError: another command held it for ``timeout`` seconds.
    """
    from filelock import FileLock, Timeout

    target.parent.mkdir(parents=True, exist_ok=True)
    lock_path = target.with_name(target.name + ".create-lock")
    try:
        with FileLock(lock_path, timeout=timeout):
            yield
    except Timeout:
        raise MlplabError(
            f"waited {timeout:.0f} s for another command to create or upgrade {target}; "
            f"if none is running, remove the stale lock file {lock_path}"
        ) from None
