"""MLflow tracking: the store, runs that always end, batched metrics, models.

The store is opened once per process; runs are started through :func:`run`, which
ends them FINISHED, FAILED (with a ``failure_reason`` tag) or KILLED, never leaves
them RUNNING.

One API style: MLflow's fluent API, on the run this process has active. A run is
written only while it is the active run, the way MLflow's flavors (``log_model``)
and ``log_input`` need it, so every write of a run goes the same way. The one
exception is :class:`EpochMetricLogger`: the fluent API logs one step per call, so
per-epoch metrics are buffered and written many steps per ``MlflowClient.log_batch``.
Reading runs, closing runs that a dead process left open, and giving an experiment
made by an older mlplab its kind use ``MlflowClient`` (``src.sweeps``, ``src.report``,
``src.predict``, :func:`experiment_id`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit, urlunsplit

import mlflow
import yaml
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from src.errors import MlplabError, first_line, stop_behind
from src.listeners import EpochListener
from src.locks import creation_lock

log = logging.getLogger(__name__)

FAILURE_TAG = "failure_reason"


def _forget_inherited_connections() -> None:
    """In a forked child (a warm job's baselines' process or sweep workers): the
    store's pooled database connections are its parent's, and two processes on one
    SQLite connection break its locks ("database is locked", a run left RUNNING).
    As SQLAlchemy advises for fork, the child drops them unclosed and opens its own.
    The engines are MLflow's (``_engine_map``, private: a later MLflow without it
    has nothing here to drop)."""
    import sys

    for name in ("mlflow.store.tracking.sqlalchemy_store", "mlflow.store.model_registry.sqlalchemy_store"):
        store = getattr(sys.modules.get(name), "SqlAlchemyStore", None)
        for engine in list(getattr(store, "_engine_map", {}).values()):
            engine.dispose(close=False)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_inherited_connections)
_MAX_METRICS_PER_BATCH = 1000
_MAX_PARAMS_PER_BATCH = 100
_connected_uri: str | None = None


HTTP_DEFAULTS = {
    # MLflow's own defaults retry a failed request 7 times with a doubling backoff
    # and wait 120 s for an answer: minutes before a dead server is reported. A sweep
    # worker should say so within seconds. The environment still wins.
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


class TrackingError(MlplabError):
    """The tracking store cannot be reached or written.

    Attributes:
        metrics: Final metrics of the model whose logging failed, when training
            had finished (a sweep trial keeps them as its result).
    """

    def __init__(self, message: str, metrics: dict[str, float] | None = None) -> None:
        super().__init__(message)
        self.metrics = metrics


@contextlib.contextmanager
def store_errors(metrics: dict[str, float] | None = None) -> Iterator[None]:
    """Turns a failing MLflow call (a server gone, a database refusing) into one
    readable :class:`TrackingError`, carrying ``metrics`` if training is done."""
    try:
        yield
    except TrackingError:
        raise
    except (MlflowException, OSError) as exc:
        uri = mlflow.get_tracking_uri()
        raise TrackingError(f"the MLflow tracking store {redact(uri)} failed: {failure(exc, uri)}", metrics) from None


def failure(exc: BaseException, uri: str) -> str:
    """A failed store call in a few words (MLflow's own message for an HTTP
    failure runs to ~400 characters): the OS's reason or the HTTP status, and
    the API call; any password redacted."""
    text = redact_text(first_line(exc), uri)
    call = re.search(r"/api/2\.0/mlflow/([\w/-]+)", text)
    if call is None:  # not an HTTP call: the driver's own line says it best
        return text if len(text) <= 200 else text[:197] + "..."
    where = f" ({call.group(1)})"
    for pattern, say in (
        (r"\[Errno -?\d+\] ([^'\")\]]+)", "{0}"),
        (r"[Rr]ead timed out", "no answer in time"),
        (r"error code (\d+)", "HTTP {0}"),
    ):
        found = re.search(pattern, text)
        if found:
            return say.format(*found.groups()).strip() + where
    return text if len(text) <= 200 else text[:197] + "..."


# ------------------------------------------------------------------------ the store
def redact(uri: str) -> str:
    """The URI with any password replaced by ``***``, safe to log and print."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def redact_text(text: str, *uris: str) -> str:
    """``text`` with the password of each of ``uris`` replaced by ``***`` (for
    driver messages that may quote a connection string).

    Only where it stands alone (as in ``:s3cret@`` or ``password=s3cret``), in its
    URL-encoded form or as typed: a short password such as ``p`` would otherwise
    turn ``psycopg.OperationalError`` into ``***syco***g.O***erationalError``.
    """
    for uri in uris:
        password = urlsplit(uri).password
        if password:
            for form in {password, unquote(password)}:
                text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(form)}(?![A-Za-z0-9])", "***", text)
    return text


def sqlite_path(uri: str) -> Path | None:
    """The file of a SQLite store's URI (without SQLAlchemy's ``?query`` options)."""
    match = re.match(r"sqlite:///([^?]+)", uri)
    return Path(match.group(1)) if match else None


def connect(uri: str) -> None:
    """Points MLflow at ``uri`` (once per process), creating a local SQLite store.

    MLflow creates and migrates a SQLite store on first use, in many steps that
    are not safe to run from several processes at once: commands started together
    on a fresh folder each saw another one's half-made schema, and left it broken.
    The first open of a SQLite store therefore happens under a file lock beside it,
    so one command creates it and the others find it ready.
    """
    global _connected_uri
    if uri == _connected_uri:
        return
    for noisy in ("alembic", "mlflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Its "Retrying ..." lines for each attempt; a request that fails for good is reported once, by us.
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    if uri.startswith(("http://", "https://")):
        for name, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(name, value)
    mlflow.set_tracking_uri(uri)
    db_path = sqlite_path(uri)
    try:
        if db_path is None:
            mlflow.search_experiments(max_results=1)
        else:
            with creation_lock(db_path):
                if not db_path.exists():
                    copy_empty_store(db_path)
                try:
                    mlflow.search_experiments(max_results=1)
                except Exception:
                    broken = broken_store_reason(db_path)
                    if broken:
                        raise TrackingError(broken) from None
                    raise
                write_ahead_log(db_path)
    except MlplabError:
        raise
    except Exception as exc:  # any driver or HTTP error means: not usable
        raise TrackingError(f"cannot open the MLflow tracking store {redact(uri)}: {failure(exc, uri)}") from None
    _connected_uri = uri


def copy_empty_store(db_path: Path) -> None:
    """Creates a new SQLite store at ``db_path`` as a copy of an empty one, made
    once per MLflow version in ``$XDG_CACHE_HOME/mlplab/mlflow/``.

    MLflow makes a store by running its schema migrations one by one: 1.0-1.2 s in
    a process that has imported MLflow already, paid by the first command in every
    new folder (and by nearly every test); a copied store opens in about 40 ms. The
    template holds the schema only, made by the function MLflow's store runs on an
    empty database; MLflow then adds the default experiment, whose artifact
    location depends on the folder, as it does for any new store. On any failure
    MLflow creates the store as ever.
    """
    import shutil

    template = _empty_store_template()
    if template is None:
        return
    partial = db_path.with_name(f".{db_path.name}.{os.getpid()}.partial")
    try:
        shutil.copyfile(template, partial)
        os.link(partial, db_path)  # whole or not at all, and never over a store that appeared meanwhile
    except OSError as exc:
        log.debug("MLflow creates the store %s itself: %s", db_path, first_line(exc))
    finally:
        with contextlib.suppress(OSError):
            partial.unlink()


def _empty_store_template() -> Path | None:
    """The empty store of this MLflow version, made now if it is missing (None if it cannot be)."""
    from src.data.files import user_cache_dir

    template = user_cache_dir() / "mlflow" / f"empty-store-{mlflow.__version__}.db"
    if template.is_file():
        return template
    partial = template.with_name(f".{template.name}.{os.getpid()}.partial")
    try:
        import sqlalchemy
        from mlflow.store.db.utils import _initialize_tables

        template.parent.mkdir(parents=True, exist_ok=True)
        engine = sqlalchemy.create_engine(f"sqlite:///{partial}")
        try:
            _initialize_tables(engine)
        finally:
            engine.dispose()
        os.replace(partial, template)  # two commands making it at once each write a whole one
    except Exception as exc:  # noqa: BLE001  (a cache: without it MLflow migrates the store itself)
        log.debug("no empty MLflow store to copy: %s", first_line(exc))
        with contextlib.suppress(OSError):
            partial.unlink()
        return None
    return template


def write_ahead_log(db_path: Path) -> None:
    """Switches the SQLite store to write-ahead logging, once (SQLite keeps the mode
    in the file).

    In SQLite's default rollback-journal mode every commit syncs the disk several
    times; a sweep trial makes about ten commits, and they cost about 30% of its
    time. With a write-ahead log a commit is one append, and readers (the MLflow UI)
    no longer block writers. Committed data survives a killed process as before.
    A store that another process holds busy is left as it is, for the next command.
    """
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(db_path, timeout=1)) as db:
            if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                db.execute("PRAGMA journal_mode=WAL")
    except sqlite3.Error as exc:
        log.debug("the store %s stays in its journal mode: %s", db_path, first_line(exc))


def broken_store_reason(db_path: Path) -> str | None:
    """Why the SQLite store at ``db_path`` cannot be used, if an interrupted schema
    migration left it half done (the file is only read, never changed)."""
    import sqlite3

    if not db_path.is_file():
        return None
    try:
        with contextlib.closing(sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            tables = {row[0] for row in db.execute("select name from sqlite_master where type = 'table'")}
            leftovers = sorted(t for t in tables if t.startswith("_alembic_tmp_"))
            versions = db.execute("select count(*) from alembic_version").fetchone()[0] if "alembic_version" in tables else None
    except sqlite3.Error:
        return None
    if leftovers:
        what = f"an interrupted schema migration left the table {leftovers[0]} behind"
    elif versions is not None and versions != 1:
        what = f"its schema version table holds {versions} rows instead of 1"
    else:
        return None
    backup = db_path.with_name(db_path.name + ".broken")
    return (
        f"the MLflow store {db_path} is damaged: {what}. Nothing was deleted. To start a new "
        f"store, move it aside (mv {db_path} {backup}); its artifacts stay where they are"
    )


DATASET_CONTEXTS = {"train": "training", "val": "validation", "test": "test"}
"""The MLflow input context of each split."""
_DATASET_ATTEMPTS = 3
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
"""The kind MLflow 3's UI calls "Machine learning" (the other: GenAI): it then shows
an experiment as model training (runs, metrics, models), not as traces."""


def experiment_id(name: str, uri: str, artifact_location: str | None = None) -> str:
    """The id of the MLflow experiment ``name``, created on first use, of MLflow's
    model-training kind (an experiment without a kind gets it).

    A local SQLite store keeps each experiment's artifacts in ``artifacts/<name>``
    beside the database file unless ``artifact_location`` says otherwise; a
    tracking server chooses for itself.
    """
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        if EXPERIMENT_KIND_TAG not in found.tags:  # made before mlplab tagged its experiments
            MlflowClient().set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
        return found.experiment_id
    db_path = sqlite_path(uri)
    if artifact_location is None and db_path is not None:
        folder = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
        artifact_location = str(db_path.parent / "artifacts" / folder)
    if artifact_location is not None and "://" not in artifact_location:
        artifact_location = Path(artifact_location).resolve().as_uri()
    try:
        return mlflow.create_experiment(
            name, artifact_location=artifact_location, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND}
        )
    except MlflowException:
        # Another process created it between our lookup and create.
        found = mlflow.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def open_experiment(name: str, settings: Mapping[str, Any]) -> str:
    """Connects to ``settings["uri"]`` (a ``tracking`` config node) and returns the
    id of the MLflow experiment ``name``."""
    connect(settings["uri"])
    return experiment_id(name, settings["uri"], settings.get("artifact_location"))


# --------------------------------------------------------------- model registry
CHAMPION_ALIAS = "champion"


def logged_model(client: MlflowClient, run: Any) -> Any:
    """The MLflow logged model ``run`` logged (its ``model_uri`` loads it), or None."""
    found = client.search_logged_models(
        [run.info.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'", max_results=1
    )
    return found[0] if found else None


def register_model(run_id: str, name: str, tags: Mapping[str, Any], champion: Mapping[str, str] | None) -> list[str]:
    """Registers the model ``run_id`` logged as a new version of the registered
    model ``name`` (created on first use), with ``tags``.

    With ``champion`` (``metric`` and ``direction``), the alias ``champion`` moves
    to the new version when its run beats the current champion's run on that
    metric, or when there is no champion yet. Returns the lines to print.
    Registry writes go through ``MlflowClient``: ``mlflow.register_model`` prints
    its own progress lines.
    """
    client = MlflowClient()
    run = client.get_run(run_id)
    value = None
    if champion is not None:  # checked before anything is registered
        value = run.data.metrics.get(champion["metric"])
        if value is None:
            raise MlplabError(
                f"tracking.champion.metric={champion['metric']!r}: the registered run logged no such metric "
                f"(it has {', '.join(sorted(run.data.metrics))})"
            )
    logged = logged_model(client, run)
    if logged is None:
        raise MlplabError(f"run {run_id} logged no model to register")
    with contextlib.suppress(MlflowException):  # it exists already (or another process just made it)
        client.create_registered_model(name)
    model_id = logged.model_id
    version = client.create_model_version(
        name, f"models:/{model_id}", run_id=run_id, model_id=model_id, tags={k: str(v) for k, v in tags.items()}
    )
    lines = [f"Registered model '{name}' version {version.version}: models:/{name}/{version.version}"]
    if champion is None:
        return lines
    metric, minimize = champion["metric"], champion["direction"] == "minimize"
    try:
        current = client.get_model_version_by_alias(name, CHAMPION_ALIAS)
        best = client.get_run(current.run_id).data.metrics.get(metric)
    except MlflowException:
        current, best = None, None
    if best is None or (value < best if minimize else value > best):
        client.set_registered_model_alias(name, CHAMPION_ALIAS, version.version)
        if current is None:
            was = "no champion before"
        else:
            was = f"version {current.version} has no {metric}" if best is None else f"beats {best:.6g} of version {current.version}"
        lines.append(f"Alias '{CHAMPION_ALIAS}' now on version {version.version}: {metric} {value:.6g} ({was})")
    else:
        lines.append(
            f"Alias '{CHAMPION_ALIAS}' stays on version {current.version}: {metric} {best:.6g} "
            f"(version {version.version} has {value:.6g})"
        )
    return lines


# ------------------------------------------------------------------------- runs
class TrackedRun:
    """Logging calls for one MLflow run, which must be the active run while it is
    written (:func:`run` makes it so; a nested run's parent is active again once
    the child has ended)."""

    def __init__(self, run_id: str, run_name: str, experiment_id: str, artifact_uri: str | None = None) -> None:
        self.run_id = run_id
        self.run_name = run_name
        self.experiment_id = experiment_id
        self.artifact_uri = artifact_uri

    def log_params(self, params: Mapping[str, Any], *, tags: Mapping[str, Any] | None = None) -> None:
        """Logs ``params``, and ``tags`` with them: one write to the store per 100 params."""
        entries = [Param(k, _param_value(v)) for k, v in params.items()]
        pending_tags = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
        run_id = self._active()
        client = MlflowClient()
        batches = [entries[i : i + _MAX_PARAMS_PER_BATCH] for i in range(0, len(entries), _MAX_PARAMS_PER_BATCH)]
        for batch in batches or ([[]] if pending_tags else []):
            client.log_batch(run_id, params=batch, tags=pending_tags)
            pending_tags = []

    def log_metrics(
        self, metrics: Mapping[str, float], step: int | None = None, *, tags: Mapping[str, Any] | None = None
    ) -> None:
        """Logs ``metrics`` at ``step``, and ``tags`` with them: one write to the store.

        Through the client rather than ``mlflow.log_metrics``, which reads the run
        back on every call to link the metrics to models the run has logged (a
        run's metrics are all logged before its model is).
        """
        timestamp = int(time.time() * 1000)
        MlflowClient().log_batch(
            self._active(),
            metrics=[Metric(k, float(v), timestamp, step or 0) for k, v in metrics.items()],
            tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()],
        )

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self._active()
        mlflow.set_tags({k: str(v) for k, v in tags.items()})

    def log_text(self, text: str, artifact_file: str) -> None:
        """Writes ``text`` as the artifact ``artifact_file``. Into a local artifact
        folder it is written directly: ``mlflow.log_text`` reads the whole run back
        first for its artifact location (every sweep trial logs its config.yaml)."""
        run_id = self._active()
        if self.artifact_uri is None or not self.artifact_uri.startswith("file:"):
            mlflow.log_text(text, artifact_file, run_id=run_id)
            return
        from mlflow.utils.file_utils import local_file_uri_to_path

        path = Path(local_file_uri_to_path(self.artifact_uri), artifact_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")

    def log_datasets(self, name: str, fingerprint: str, source: str, splits: Mapping[str, tuple[Any, Any]]) -> None:
        """Logs each split as one of this run's MLflow dataset inputs, so the UI's
        Dataset column and the run page show what it trained and was scored on.

        Args:
            name: The dataset's name (every split's).
            fingerprint: The data fingerprint runs tag (``data_fingerprint``); a
                split's digest is ``<fingerprint>-<split>``, since MLflow links one
                dataset (name and digest) to a run once, whatever its context.
            source: A file, folder or URL, or the loader that made the rows
                (``sklearn.datasets.load_iris``: a code source).
            splits: ``(features, targets)`` by split: ``train``, ``val``, ``test``,
                logged with the context ``training``, ``validation``, ``test``.
        """
        import mlflow.data
        from mlflow.data.code_dataset_source import CodeDatasetSource

        located = "://" in source or Path(source).is_absolute()
        where = source if located else CodeDatasetSource({"loader": source} if source else {})
        with warnings.catch_warnings():
            # A local path matches MLflow's two local-artifact sources (the "" and
            # "file" schemes), which are one class: MLflow warns, then picks it.
            warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted in multiple")
            datasets = [
                mlflow.data.from_numpy(x, targets=y, source=where, name=name, digest=f"{fingerprint}-{split}")
                for split, (x, y) in splits.items()
            ]
        self._active()
        for attempt in range(_DATASET_ATTEMPTS):
            try:
                mlflow.log_inputs(
                    datasets=datasets,
                    contexts=[DATASET_CONTEXTS[split] for split in splits],
                    tags_list=[None] * len(datasets),
                )
                return
            except MlflowException as exc:
                # MLflow's SQL store looks a dataset up and then inserts it, so workers
                # logging the same new dataset into one experiment at once collide on
                # its key (PostgreSQL's dataset_pk, SQLite's UNIQUE constraint), the
                # whole write rolled back. Again, the dataset is found and only linked.
                text = str(exc).lower()
                duplicate = "dataset" in text and ("unique" in text or "duplicate" in text)
                if not duplicate or attempt == _DATASET_ATTEMPTS - 1:
                    raise

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        mlflow.log_artifact(str(path), artifact_path, run_id=self._active())

    def log_figures(self, figures: Mapping[str, Callable[[], Any]], folder: str = "plots") -> list[str]:
        """Draws each figure and logs it as ``<folder>/<name>`` (PNG at 100 dpi).

        A figure that cannot be drawn or stored is skipped with a warning: a
        picture is never worth failing a run. Returns the artifact paths logged.
        """
        self._active()
        logged = []
        for name, draw in figures.items():
            artifact = f"{folder}/{name}"
            figure = None
            try:
                figure = draw()
                mlflow.log_figure(figure, artifact, save_kwargs=_save_kwargs(figure))
            except Exception as exc:
                log.warning("plot %s skipped: %s", artifact, first_line(exc))
            else:
                logged.append(artifact)
            finally:
                _close_figure(figure)
        return logged

    def epoch_logger(self, flush_every: int = 1000, flush_seconds: float = 5.0) -> EpochMetricLogger:
        """A per-epoch metric logger for this run. Batches go out every 5 s (what a
        user watching the UI needs) or 1000 epochs (to bound the buffer), not every
        N epochs of a fast training, whose last batch is best written after it."""
        return EpochMetricLogger(self.run_id, flush_every, flush_seconds)

    def log_model(self, model: LoggableModel, example: Any) -> None:
        """Logs a fitted model into this run, with its signature and input example
        (``example``: raw input rows). Each model family knows its MLflow flavor
        (``model.log_model``)."""
        self._active()
        model.log_model(example)

    def _active(self) -> str:
        """This run's id, once it is checked to be the active run (the fluent calls
        without a ``run_id`` write there)."""
        active = mlflow.active_run()
        if active is None or active.info.run_id != self.run_id:
            raise RuntimeError(f"run {self.run_id} is written while it is not the active MLflow run")
        return self.run_id


class LoggableModel(Protocol):
    """A fitted model that logs itself with its MLflow flavor into the active run."""

    def log_model(self, example: Any) -> None: ...


def _save_kwargs(figure: Any) -> dict[str, Any]:
    """How a figure is saved: PNG at 100 dpi, cropped to its content unless a
    layout engine already fits it to its canvas (mlplab's figures are constrained;
    Optuna's are not). Cropping draws the figure once more, for its extent: an XOR
    run's ten figures took 2.67 s to save cropped, 2.30 s as laid out
    (``bench/figures.py`` on the 2-core machine)."""
    if figure.get_layout_engine() is not None:
        return {"dpi": 100}
    return {"dpi": 100, "bbox_inches": "tight"}


def _close_figure(figure: Any) -> None:
    """Releases a figure pyplot keeps track of (Optuna's plots are made with pyplot;
    ours are not, and are freed with their last reference)."""
    if figure is not None and getattr(figure.canvas, "manager", None) is not None:
        import matplotlib.pyplot as plt

        plt.close(figure)


@contextlib.contextmanager
def run(
    name: str | None,
    *,
    experiment: str,
    parent_run_id: str | None = None,
    run_id: str | None = None,
    tags: Mapping[str, Any] | None = None,
    description: str | None = None,
    finish_on: tuple[type[BaseException], ...] = (),
    reconciled: bool = False,
) -> Iterator[TrackedRun]:
    """Starts (or with ``run_id``, resumes) an MLflow run that always ends.

    The run ends FINISHED when the block completes or raises one of ``finish_on``
    (an expected early stop, such as a pruned trial), KILLED on Ctrl-C, and FAILED
    on any other exception, with its message in the ``failure_reason`` tag.

    A ``reconciled`` run (a sweep's, whose study holds its truth) is left as it is
    when the tracking store fails under it: another call would only wait out the
    HTTP retries again, and the sweep's next start closes it from the study.
    """
    run_tags = {k: str(v) for k, v in (tags or {}).items()}
    current = mlflow.active_run()
    nested = current is not None
    if parent_run_id is not None and run_id is None:
        # Given the parent's id, MLflow reads the whole parent run back (for every
        # sweep trial and child run) only to check that it is not deleted. The
        # active run is the parent without that; elsewhere the tag makes it one.
        if current is None:
            run_tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
            parent_run_id = None
        elif current.info.run_id == parent_run_id:
            parent_run_id = None
    active = mlflow.start_run(
        run_id=run_id,
        experiment_id=None if run_id else experiment,
        run_name=None if run_id else name,
        nested=nested or parent_run_id is not None,
        parent_run_id=parent_run_id,
        tags=run_tags,
        description=description,
    )
    status: int | None = RunStatus.FINISHED
    in_flight = True  # an exception is leaving the block
    try:
        yield TrackedRun(active.info.run_id, active.info.run_name, active.info.experiment_id, active.info.artifact_uri)
        in_flight = False
    except finish_on:
        raise
    except BaseException as exc:
        if reconciled and isinstance(exc, (TrackingError, MlflowException)):  # the store failed
            status = None
            raise
        cause = stop_behind(exc) or exc
        interrupted = isinstance(cause, KeyboardInterrupt)
        status = RunStatus.KILLED if interrupted else RunStatus.FAILED
        with contextlib.suppress(Exception):
            mlflow.set_tag(FAILURE_TAG, "interrupted (Ctrl-C)" if interrupted else first_line(cause))
        raise
    finally:
        if status is None:
            log.debug("run %s left for the study to close", active.info.run_id)
        elif in_flight:
            # Keep the error on its way out (often the very store that cannot end the run).
            try:
                mlflow.end_run(status=RunStatus.to_string(status))
            except Exception as exc:
                log.debug("ending run %s failed too: %s", active.info.run_id, first_line(exc))
        else:
            with store_errors():
                mlflow.end_run(status=RunStatus.to_string(status))


def invocation_run(
    plain: Mapping[str, Any],
    experiment: str,
    parent_run_id: str | None = None,
    tags: Mapping[str, Any] | None = None,
) -> contextlib.AbstractContextManager[TrackedRun]:
    """The parent run of one invocation of a config, named after its experiment
    and the time (``xor-20261122-104551``), described by its ``description``."""
    from datetime import datetime

    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return run(
        f"{plain['experiment_name']}-{stamp}",
        experiment=experiment,
        parent_run_id=parent_run_id,
        description=plain["description"],
        tags=tags,
    )


def log_config(
    tracked: TrackedRun,
    config: Mapping[str, Any],
    *,
    more_params: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``config`` (a password in ``tracking.uri`` redacted) as dotted params and
    ``config.yaml``, with ``more_params`` (where a key is not the config's) and
    ``tags`` in the same write; returns the config's params."""
    logged = dict(config)
    if "tracking" in logged:
        logged["tracking"] = {**logged["tracking"], "uri": redact(logged["tracking"]["uri"])}
    flat = flatten(logged)
    tracked.log_params({**(more_params or {}), **flat}, tags=tags)
    # What OmegaConf.to_yaml writes for a resolved config, at a third of the cost
    # (every sweep trial logs one).
    text = yaml.dump(logged, Dumper=_ConfigDumper, sort_keys=False, allow_unicode=True, default_flow_style=False)
    tracked.log_text(text, "config.yaml")
    return flat


class _ConfigDumper(yaml.SafeDumper):
    """Writes a section used twice in the config (an interpolated one) out twice,
    as OmegaConf does, instead of as a YAML alias."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


class EpochMetricLogger(EpochListener):
    """Buffers per-epoch metrics and writes them with few ``log_batch`` calls, off
    the training thread.

    A batch goes to a background writer every ``flush_every`` epochs or
    ``flush_seconds`` seconds, so training does not wait for the store; after
    training, :meth:`flush` writes the rest, with the run's final metrics, and
    waits until every batch is stored (call it before the run ends, also when it
    ends early).

    The writer is a one-thread executor of our own rather than MLflow's
    ``synchronous=False``: MLflow shuts its async queue down when a run ends,
    which took about 0.4 s per run, more than a whole XOR training.
    """

    def __init__(self, run_id: str, flush_every: int, flush_seconds: float) -> None:
        self.client = MlflowClient()
        self.run_id = run_id
        self.flush_every = flush_every
        self.flush_seconds = flush_seconds
        self._buffer: list[Metric] = []
        self._epochs_buffered = 0
        self._last_flush = time.monotonic()
        self._pending: list[Future[None]] = []
        self.calls = 0

    def on_epoch_end(self, epoch: int, logs: Mapping[str, float]) -> None:
        timestamp = int(time.time() * 1000)
        self._buffer.extend(Metric(k, float(v), timestamp, epoch) for k, v in logs.items())
        self._epochs_buffered += 1
        if (
            self._epochs_buffered >= self.flush_every
            or time.monotonic() - self._last_flush >= self.flush_seconds
        ):
            self.send()

    def on_train_end(self) -> None:
        # Nothing here: the last batch is written by the run once the model is scored
        # (see flush), with the final metrics.
        pass

    def flush(self, final: Mapping[str, float] | None = None, step: int = 0) -> None:
        """Sends what is buffered and waits until everything sent is stored.

        Args:
            final: The run's final metrics, logged at ``step`` in the same write
                as the last epochs' (one store transaction fewer per run).
        """
        if final:
            timestamp = int(time.time() * 1000)
            self._buffer.extend(Metric(k, float(v), timestamp, step) for k, v in final.items())
        self.send()
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def send(self) -> None:
        """Hands what is buffered to the background writer, without waiting."""
        for start in range(0, len(self._buffer), _MAX_METRICS_PER_BATCH):
            chunk = self._buffer[start : start + _MAX_METRICS_PER_BATCH]
            self._pending.append(_metric_writer().submit(self.client.log_batch, self.run_id, metrics=chunk))
            self.calls += 1
        self._buffer.clear()
        self._epochs_buffered = 0
        self._last_flush = time.monotonic()


@functools.cache
def _metric_writer() -> ThreadPoolExecutor:
    """The process's one background thread for metric batches (joined at exit)."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlplab-metrics")


# ------------------------------------------------------------------------ helpers
def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level with dotted keys (``optimizer.learning_rate``)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def _param_value(value: Any) -> str:
    text = "null" if value is None else str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."
