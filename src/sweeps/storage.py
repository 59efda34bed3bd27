"""Where a study lives: a local journal file by default, any Optuna RDB URL to share.

SQLite is unsafe with parallel writers, so the local default is Optuna's
``JournalFileBackend`` under ``mlruns/optuna/``.

A trial whose worker died (SIGKILL, power loss) is failed and queued again with
the same params, by one mechanism per storage kind:

- a journal is local, so each of its workers is a process on this machine: the
  trial is recovered when its worker's process is seen gone (by the sweep command
  that started it, or by the next one; :func:`recovers_by_heartbeat` is False);
- an RDB study is shared by machines, which cannot see each other's processes:
  Optuna's own heartbeat (public ``RDBStorage`` API) fails a trial whose beat is
  older than the grace period and passes it to ``RetryFailedTrialCallback``.
"""

from __future__ import annotations

import random
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.trial import FrozenTrial

from src.errors import MlplabError, first_line
from src.locks import creation_lock
from src.tracking import redact, redact_text

LOCAL_DIR = Path("mlruns") / "optuna"
SCHEMA_ATTEMPTS = 5

StaleCallback = Callable[[optuna.Study, FrozenTrial], None]


class StorageError(MlplabError):
    """The study storage cannot be opened."""


def open_storage(
    url: str | None,
    study_name: str,
    *,
    heartbeat_interval: int,
    heartbeat_grace: int,
    on_stale: StaleCallback | None = None,
) -> BaseStorage:
    """The study's storage: ``url`` (an Optuna RDB URL or a journal file path) or
    the local journal ``mlruns/optuna/<study_name>.journal``.

    An RDB storage beats every ``heartbeat_interval`` seconds; a trial whose beat
    is older than ``heartbeat_grace`` is passed to ``on_stale`` (to close its MLflow
    run), then retried. A journal's trials are recovered by their workers' process
    ids instead (see the module's docstring).
    """
    retry = retry_callback()

    def stale(study: optuna.Study, trial: FrozenTrial) -> None:
        if on_stale is not None:
            on_stale(study, trial)
        retry(study, trial)

    path = journal_path(url, study_name)
    if path is not None:
        with creation_lock(path):
            backend = JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path)))
        return JournalStorage(backend)
    for attempt in range(SCHEMA_ATTEMPTS):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(
                    url,
                    heartbeat_interval=heartbeat_interval,
                    grace_period=heartbeat_grace,
                    heartbeat_stale_trial_callback=stale,
                    engine_kwargs=_engine_options(url),
                )
        except Exception as exc:  # driver errors vary: name the URL, hide the password
            if attempt + 1 < SCHEMA_ATTEMPTS and _schema_race(exc):
                time.sleep(0.5 + random.random())
                continue
            raise StorageError(
                f"cannot open study storage {redact(url)}: {redact_text(first_line(exc), url)}"
            ) from None
    raise AssertionError("unreachable")


def _schema_race(exc: Exception) -> bool:
    """Whether ``exc`` is another process creating Optuna's tables in an empty
    database at the same moment (machines started together): the tables then
    exist, and opening again succeeds."""
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    return isinstance(exc, IntegrityError | ProgrammingError) and (
        "already exists" in str(exc) or "duplicate key" in str(exc)
    )


def _engine_options(url: str) -> dict | None:
    """SQLAlchemy options for a server database: connections checked before use
    (a restarted server), and a bounded wait for an unreachable host."""
    if url.startswith("sqlite"):
        return None
    options: dict = {"pool_pre_ping": True}
    if url.startswith("postgresql"):
        options["connect_args"] = {"connect_timeout": 10}
    return options


def recovers_by_heartbeat(url: str | None) -> bool:
    """Whether dead workers' trials in the storage at ``url`` are recovered by Optuna's
    heartbeat (an RDB study, shared by machines) rather than by their process ids (a
    journal)."""
    return journal_path(url, "") is None


def retry_callback() -> StaleCallback:
    """Optuna's callback that queues a failed trial again with the same params."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RetryHeartbeatStaleTrialCallback(max_retry=3)


def journal_path(url: str | None, study_name: str) -> Path | None:
    """The journal file of a local study (``url`` a path, or the default), None for an RDB URL."""
    if url and "://" in url:
        return None
    return Path(url) if url else LOCAL_DIR / f"{study_name}.journal"


def describe(url: str | None, study_name: str) -> str:
    """The storage as shown to users (password redacted)."""
    path = journal_path(url, study_name)
    return redact(url) if path is None else str(path)
