"""Where a study lives: a local journal file by default, any Optuna RDB URL to share.

SQLite is unsafe with parallel writers, so the local default is Optuna's
``JournalFileBackend`` under ``mlruns/optuna/``. Both storages get Optuna's
heartbeat: a trial whose worker died (SIGKILL, power loss) is failed once its
heartbeat is stale, and :class:`optuna.storages.RetryFailedTrialCallback` queues it
again, so rerunning the sweep finishes the study.
"""

from __future__ import annotations

import random
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.trial import FrozenTrial, TrialState

from src.errors import MlplabError, first_line
from src.locks import creation_lock
from src.tracking import redact, redact_text

LOCAL_DIR = Path("mlruns") / "optuna"
HEARTBEAT_ATTR = "heartbeat"
SCHEMA_ATTEMPTS = 5

StaleCallback = Callable[[optuna.Study, FrozenTrial], None]


class StorageError(MlplabError):
    """The study storage cannot be opened."""


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """A journal storage with Optuna's heartbeat protocol.

    Each running trial writes its time into a system attribute every ``interval``
    seconds; ``study.optimize`` fails trials whose last beat is older than
    ``grace`` seconds and passes them to ``stale_callback``.
    """

    def __init__(
        self,
        backend: JournalFileBackend,
        interval: int,
        grace: int,
        stale_callback: StaleCallback | None,
    ) -> None:
        super().__init__(backend)
        self._interval = interval
        self._grace = grace
        self._stale_callback = stale_callback

    def record_heartbeat(self, trial_id: int) -> None:
        self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        stale = []
        for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            beat = trial.system_attrs.get(HEARTBEAT_ATTR)
            if beat is None and trial.datetime_start is not None:
                beat = trial.datetime_start.timestamp()
            if beat is not None and now - beat > self._grace:
                stale.append(trial._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self._interval

    def get_heartbeat_stale_trial_callback(self) -> StaleCallback | None:
        return self._stale_callback


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

    A trial found stale is passed to ``on_stale`` (to close its MLflow run), then
    retried.
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
        return HeartbeatJournalStorage(backend, heartbeat_interval, heartbeat_grace, stale)
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
