"""Long-lived worker processes that share one study, and the parent that watches them.

Workers are started first thing: they import TensorFlow (several seconds) while
the parent opens the study and the MLflow run and trains the baselines, then each
receives its :class:`WorkerJob` through a pipe. One worker is spawned and imports
for itself (the command starts it before it checks the sweep file; it imports
TensorFlow once released, see :class:`Worker`); several are forked from one server
process that imports for all of them (:func:`start_workers`). A worker keeps its
Hydra composer and loaded code for the whole sweep, and runs trials until the study
holds ``n_trials``.
TensorFlow's threads are split between the workers so they do not fight over the
cores.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import socket
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from src.errors import ConfigError, MlplabError, between_statements, clean_up_at_exit, exit_now, first_line, report
from src.sweeps.definition import SweepSpec

if TYPE_CHECKING:  # Optuna is imported where it is used: a command starts its worker before (0.2 s)
    import optuna

log = logging.getLogger("mlplab")


@dataclass(frozen=True)
class WorkerJob:
    """What a started worker is sent once the sweep is set up (picklable)."""

    spec: SweepSpec
    tracking_uri: str
    sweep_run_id: str
    epochs: int
    index: int
    deadline: float | None


@dataclass(frozen=True)
class WorkerStopped:
    """What a worker that stops on an error tells the parent (picklable): the
    error's line, and whether it was the tracking store that failed."""

    message: str
    tracking: bool


@dataclass
class Worker:
    """A worker process and the parent's end of the pipe its job goes through (and
    its :class:`WorkerStopped`, if it stops on an error). A forked worker's process
    starts when it is sent its job; until then ``child_end`` holds the pipe's other end.

    A spawned worker imports what a trial needs but TensorFlow, then waits to be
    released (:meth:`release`, once the sweep is checked) with the file its output
    goes to, and imports TensorFlow, whose start-up lines go to ``mlruns/logs``: a
    sweep file found bad leaves no trace in the folder.
    """

    process: multiprocessing.process.BaseProcess
    connection: Connection
    child_end: Connection | None = None
    log_path: Path | None = None
    released: bool = False
    has_job: bool = False
    stopped: WorkerStopped | None = None
    died: str | None = None
    """How it ended, once the parent's watch found it ended with an error."""

    @property
    def started(self) -> bool:
        return self.process.pid is not None

    def start(self) -> None:
        """Starts the process (a forked one waits until the fork server has imported)."""
        self.process.start()
        assert self.child_end is not None
        self.child_end.close()
        self.child_end = None
        if self.released:
            self.send(self.log_path)

    def release(self, log_path: Path | None) -> None:
        """Lets the worker go on to import TensorFlow and wait for its job, its
        output going to ``log_path`` (None: the command's terminal)."""
        self.log_path, self.released = log_path, True
        if self.started:
            self.send(log_path)

    def send(self, message: object) -> bool:
        """Sends ``message``; False if the worker has died (the parent's watch
        reports it, with the line it left, if any)."""
        try:
            self.connection.send(message)
        except OSError:  # BrokenPipeError: it died importing
            return False
        return True

    def receive_stop(self) -> WorkerStopped | None:
        """The worker's stop message, once it has exited (None if it sent none)."""
        if self.stopped is None and not self.connection.closed:
            with contextlib.suppress(EOFError, OSError):
                if self.connection.poll():
                    self.stopped = self.connection.recv()
            self.connection.close()
        return self.stopped


def open_study(spec: SweepSpec, epochs: int, *, worker: int = 0, create: bool = False) -> tuple[optuna.Study, bool]:
    """Opens the sweep's study in its storage (creating it if ``create``), with its
    pruner and a sampler seeded for this worker; trials found stale are closed and
    retried.

    Returns the study and whether this call created it. Of several processes (or
    machines) starting one sweep at once, exactly one creates the study: storages
    refuse a second study of the same name. That one opens the sweep's MLflow run.
    """
    import optuna

    from src.sweeps.storage import open_storage
    from src.sweeps.study import make_pruner, make_sampler
    from src.sweeps.trial_runs import on_stale_trial, worker_id

    storage = open_storage(
        spec.storage,
        spec.study_name,
        heartbeat_interval=spec.heartbeat_interval,
        heartbeat_grace=spec.heartbeat_grace,
        on_stale=on_stale_trial,
    )
    pruner = make_pruner(spec, epochs)
    created = False
    if create:
        try:
            study = optuna.create_study(
                study_name=spec.study_name, storage=storage, directions=spec.directions, pruner=pruner,
            )
            created = True
        except optuna.exceptions.DuplicatedStudyError:
            pass
        except ValueError as exc:
            raise ConfigError(f"study {spec.study_name}: {first_line(exc)}") from None
    if not created:
        study = optuna.load_study(study_name=spec.study_name, storage=storage, pruner=pruner)
    if created:
        # Shown by optuna-dashboard and Optuna's plots instead of "Objective 0".
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([o.metric for o in spec.objectives])
    shared = spec.storage is not None and "://" in spec.storage
    study.sampler = make_sampler(
        spec, worker, trials_before=len(study.get_trials(deepcopy=False)), machine=worker_id() if shared else ""
    )
    return study, created


def _ctrl_c_once(signum: int, frame: object) -> None:
    # A terminal's Ctrl-C reaches a worker twice: from the process group, and
    # from the parent stopping its workers. The second must not cut short what
    # the first started: the trial's MLflow run ending KILLED.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def import_for_trials() -> ModuleType:
    """Imports what a worker needs before its job arrives (:func:`import_libraries`,
    then TensorFlow and Keras) and returns ``tensorflow``. TensorFlow's runtime is
    not started: its thread counts can still be set."""
    from src.models.backend import import_tensorflow

    import_libraries()
    return import_tensorflow()


def import_libraries() -> None:
    """Imports the trial's code and the libraries it uses but TensorFlow and Keras
    (MLflow and its SQL store, Optuna, Hydra, scikit-learn): about 2.5 s, and none
    of it writes a file."""
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401  (tracking.connect's, for a SQLite store)

    import src.sweeps.trial  # noqa: F401


def worker_main(connection: Connection, threads: int) -> None:
    """Entry point of a worker process: import, wait to be released (see
    :class:`Worker`), import TensorFlow, then wait for the job and run it."""
    signal.signal(signal.SIGINT, between_statements(_ctrl_c_once))
    log_path = None
    try:
        try:
            import_libraries()  # no-ops in a worker forked from the fork server
            import_failure = None
        except Exception as exc:  # told once the worker's output goes to its log
            import_failure = exc
        try:
            log_path = connection.recv()
        except EOFError:  # the parent gave up before releasing it
            return
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            sink = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(sink, 1)
            os.dup2(sink, 2)
        if import_failure is not None:
            raise import_failure
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        tf = import_for_trials()  # TensorFlow's import, or a no-op when forked
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)

        try:
            job = connection.recv()
        except EOFError:  # the parent gave up before sending a job
            return
        _optimize(job)
    except KeyboardInterrupt:
        pass
    except MlplabError as exc:
        from src.tracking import TrackingError

        # The parent prints the error once for the command; the worker's log keeps it too.
        if log_path is not None:
            report(exc)
        with contextlib.suppress(OSError):
            connection.send(WorkerStopped(str(exc), isinstance(exc, TrackingError)))
        exit_now(exc.exit_code)
    except Exception as exc:
        # Not a user's mistake (a broken install, a bug): the traceback goes to the
        # worker's log, its line to the parent, which names both.
        traceback.print_exc()
        with contextlib.suppress(OSError):
            connection.send(WorkerStopped(f"{type(exc).__name__}: {first_line(exc)}", tracking=False))
        exit_now(1)
    exit_now(0)  # the worker's last act: no interpreter teardown to wait for (see exit_now)


def _optimize(job: WorkerJob) -> None:
    from src import tracking
    from src.config import Composer
    from src.sweeps.study import StopWhenDone
    from src.sweeps.trial import TrialObjective

    tracking.connect(job.tracking_uri)
    study, _ = open_study(job.spec, job.epochs, worker=job.index)
    stop = StopWhenDone(job.spec.n_trials)
    if stop.done(study):
        return
    timeout = None if job.deadline is None else max(1.0, job.deadline - time.time())
    with Composer() as composer:
        objective = TrialObjective(job.spec, job.sweep_run_id, composer)
        study.optimize(objective, timeout=timeout, callbacks=[stop, objective.requeue_lost], catch=(MlplabError,))
    if objective.tracking_failure is not None:
        raise objective.tracking_failure


# ------------------------------------------------------------------- the parent
PRELOAD_MODULE = "src.sweeps.preload"


def start_workers(count: int, log_paths: list[Path | None] | None = None) -> list[Worker]:
    """Starts ``count`` worker processes, which import TensorFlow and then wait for
    :func:`send_jobs`; the caller goes on meanwhile. With ``log_paths`` (their output's
    files, None for the terminal) they are released at once; without, the caller
    releases them (:meth:`Worker.release`).

    One worker is spawned at once and imports for itself. Several are forked from
    multiprocessing's fork server, which starts here and imports what they need
    once (:mod:`src.sweeps.preload`): each further worker would import TensorFlow,
    MLflow and the rest again, seconds of CPU that two workers on two cores wait
    for. They are forked by :func:`send_jobs`, from a server that has finished its
    imports (the sending waits for that). Where the server cannot run, all are spawned.
    In a job of a warm process, which has imported everything, all are forked from
    the job at once.
    """
    from src.warm import fork_context

    here = fork_context()
    server = _fork_server() if count > 1 and here is None else None
    context = here or server or multiprocessing.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // count)
    workers = []
    for index in range(count):
        parent_end, child_end = context.Pipe()
        process = context.Process(target=worker_main, args=(child_end, threads), name=f"worker-{index}")
        workers.append(Worker(process, parent_end, child_end))
        if server is None:
            workers[-1].start()
        if log_paths is not None:
            workers[-1].release(log_paths[index])
    return workers


def _fork_server() -> multiprocessing.context.BaseContext | None:
    """multiprocessing's fork server, started and importing what a worker needs;
    None where it cannot run: a platform without one (Windows), or a temp folder
    whose path is too long for the server's Unix socket (its workers are then spawned)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return None
    from multiprocessing import forkserver, util

    # The server's socket is in a folder multiprocessing removes at exit, which a
    # command skips (exit_now).
    clean_up_at_exit(functools.partial(shutil.rmtree, util.get_temp_dir(), ignore_errors=True))
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([PRELOAD_MODULE])
    try:
        forkserver.ensure_running()
    except OSError as exc:
        log.debug("the workers are spawned: the fork server did not start (%s)", first_line(exc))
        return None
    return context


def send_jobs(workers: list[Worker], jobs: list[WorkerJob]) -> None:
    """Hands each worker its job, forking it first if it is not started yet."""
    for worker, job in zip(workers, jobs, strict=True):
        if not worker.started:
            worker.start()
        worker.has_job = worker.send(job)


def run_workers(
    workers: list[Worker],
    study: optuna.Study,
    on_progress: Callable[[], None],
    poll_seconds: float = 1.0,
    *,
    by_heartbeat: bool = False,
) -> None:
    """Watches the workers until they end, reports progress while they run, and
    reports any worker that dies (``worker.died`` says how). Its trial is failed
    and queued again here, or, ``by_heartbeat`` (an RDB study), by Optuna's
    heartbeat after the grace period.
    A worker that stopped because the tracking store failed has already failed and
    queued its trial; it is left in ``worker.stopped`` for the caller.

    On Ctrl-C the workers are interrupted too, their trials end as failed and
    their MLflow runs as KILLED; then KeyboardInterrupt is raised again.
    """
    reported: set[int] = set()
    try:
        while True:
            for index, worker in enumerate(workers):  # also those that died before the watch began
                process = worker.process
                if process.exitcode and process.pid not in reported:
                    reported.add(process.pid)
                    stopped = worker.receive_stop()
                    if stopped is None or not stopped.tracking:
                        _worker_died(study, index, worker, by_heartbeat)
            alive = [w.process.sentinel for w in workers if w.process.is_alive()]
            if not alive:
                break
            multiprocessing.connection.wait(alive, timeout=poll_seconds)  # returns early when one exits
            on_progress()
    except KeyboardInterrupt:
        interrupt_workers(workers, study)
        raise
    finally:
        on_progress()


def interrupt_workers(workers: list[Worker], study: optuna.Study, reason: str = "interrupted (Ctrl-C)") -> None:
    """Stops the workers; trials they leave running end failed, their MLflow runs KILLED."""
    stop_workers(workers)
    for process in (w.process for w in workers if w.started):
        fail_trials_of(study, process.pid, reason, retry=False, status="KILLED")


def stop_workers(workers: list[Worker]) -> None:
    """Stops the workers. One with a job is interrupted (SIGINT, so its trial and
    run are closed) and waited for; one still importing or waiting for its job has
    nothing to close and is killed at once (a SIGINT that lands inside TensorFlow's
    import can leave it hanging at exit)."""
    for worker in workers:
        if worker.process.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.process.pid, signal.SIGINT if worker.has_job else signal.SIGKILL)
    deadline = time.time() + 60
    for process in (w.process for w in workers if w.started):
        process.join(max(0.1, deadline - time.time()))
        if process.is_alive():
            process.terminate()
            process.join(5)


def _worker_died(study: optuna.Study, index: int, worker: Worker, by_heartbeat: bool) -> None:
    code = worker.process.exitcode
    how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
    where = f"; see {worker.log_path}" if worker.log_path else ""
    if worker.stopped is not None:
        how += f" ({worker.stopped.message})"
    if by_heartbeat:
        requeued = "; its running trial is queued again once its heartbeat is stale"
    else:
        failed = fail_trials_of(study, worker.process.pid, f"worker {how}", retry=True)
        requeued = f"; trial {', '.join(map(str, failed))} failed and queued again" if failed else ""
    worker.died = f"worker {index} {how}{where}"
    log.warning("worker %d %s%s%s", index, how, requeued, where)


def fail_trials_of(
    study: optuna.Study, pid: int | None, reason: str, *, retry: bool, status: str = "FAILED"
) -> list[int]:
    """Fails the running trials of a dead worker on this host and closes their runs.

    Returns the numbers of the trials it failed.
    """
    from optuna.trial import TrialState

    from src.sweeps.storage import retry_callback
    from src.sweeps.trial_runs import WORKER_ATTR, close_trial_run, worker_id

    worker = worker_id(pid)
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.user_attrs.get(WORKER_ATTR) != worker:
            continue
        try:
            study.tell(trial.number, state=TrialState.FAIL)
        except Exception:  # another process failed it first, and retried it
            continue
        failed.append(trial.number)
        if retry:  # before the run is closed: a tracking store that is down must not cost the retry
            retry_callback()(study, study.trials[trial.number])
        try:
            close_trial_run(study, trial, reason, status)
        except Exception as exc:
            log.warning("trial %d: its MLflow run could not be closed: %s", trial.number, first_line(exc))
    return failed


def recover_orphans(study: optuna.Study, by_heartbeat: bool = False) -> list[int]:
    """Fails and re-queues running trials whose worker on this host is gone
    (killed with SIGKILL in an earlier run of the sweep); none when ``by_heartbeat``
    (an RDB study, whose dead trials Optuna's heartbeat recovers)."""
    from optuna.trial import TrialState

    from src.sweeps.trial_runs import worker_of

    if by_heartbeat:
        return []
    host = socket.gethostname()
    recovered = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker_host, pid = worker_of(trial)
        if worker_host == host and pid is not None and not _alive(pid):
            recovered += fail_trials_of(study, pid, "worker died before the trial ended; trial retried", retry=True)
    return recovered


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs: a zombie does not (a killed worker whose new
    parent has not reaped it yet still answers ``kill(pid, 0)``)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as stat:  # "pid (comm) state ...", comm may hold spaces
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):  # no /proc (macOS): kill's answer stands
        return True
