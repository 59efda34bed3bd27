"""Long-lived worker processes that share one study, and the parent that watches them.

Each worker imports TensorFlow once, keeps its Hydra composer and loaded code for
the whole sweep, and runs trials until the study holds ``n_trials``. TensorFlow's
threads are split between the workers so they do not fight over the cores.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import TrialState

from src.errors import ConfigError, MlplabError, first_line
from src.sweeps.spec import SweepSpec

log = logging.getLogger("mlplab")


@dataclass(frozen=True)
class WorkerJob:
    """What a worker process needs; picklable for the ``spawn`` start method."""

    spec: SweepSpec
    storage_url: str | None
    tracking_uri: str
    sweep_run_id: str
    epochs: int
    index: int
    threads: int
    deadline: float | None
    log_path: Path | None


def open_study(
    spec: SweepSpec, storage_url: str | None, epochs: int, *, worker: int = 0, create: bool = False
) -> optuna.Study:
    """Opens the sweep's study (creating it if ``create``), with its pruner and a
    sampler seeded for this worker; trials found stale are closed and retried."""
    from src.sweeps.storage import open_storage
    from src.sweeps.study import make_pruner, make_sampler
    from src.sweeps.trial import on_stale_trial

    storage = open_storage(
        storage_url,
        spec.study_name,
        heartbeat_interval=spec.heartbeat_interval,
        heartbeat_grace=spec.heartbeat_grace,
        on_stale=on_stale_trial,
    )
    pruner = make_pruner(spec, epochs)
    if create:
        try:
            study = optuna.create_study(
                study_name=spec.study_name, storage=storage, directions=spec.directions,
                pruner=pruner, load_if_exists=True,
            )
        except ValueError as exc:
            raise ConfigError(f"study {spec.study_name}: {first_line(exc)}") from None
    else:
        study = optuna.load_study(study_name=spec.study_name, storage=storage, pruner=pruner)
    study.sampler = make_sampler(spec, worker, trials_before=len(study.get_trials(deepcopy=False)))
    return study


def worker_main(job: WorkerJob) -> None:
    """Entry point of a worker process."""
    if job.log_path is not None:
        job.log_path.parent.mkdir(parents=True, exist_ok=True)
        sink = os.open(job.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(sink, 1)
        os.dup2(sink, 2)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        _optimize(job)
    except KeyboardInterrupt:
        pass
    except MlplabError as exc:
        print(f"mlplab: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)


def _optimize(job: WorkerJob) -> None:
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(job.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)

    from src import tracking
    from src.config import Composer
    from src.sweeps.study import StopWhenDone
    from src.sweeps.trial import TrialObjective

    tracking.connect(job.tracking_uri)
    study = open_study(job.spec, job.storage_url, job.epochs, worker=job.index)
    stop = StopWhenDone(job.spec.n_trials)
    if stop.done(study):
        return
    timeout = None if job.deadline is None else max(1.0, job.deadline - time.time())
    with Composer() as composer:
        study.optimize(
            TrialObjective(job.spec, job.sweep_run_id, composer),
            timeout=timeout,
            callbacks=[stop],
            catch=(MlplabError,),
        )


# ------------------------------------------------------------------- the parent
def run_workers(
    jobs: list[WorkerJob],
    study: optuna.Study,
    on_progress: Callable[[], None],
    poll_seconds: float = 1.0,
) -> None:
    """Starts one process per job, reports progress while they run, and fails
    (and re-queues) the trial of any worker that dies.

    On Ctrl-C the workers are interrupted too, their trials end as failed and
    their MLflow runs as KILLED; then KeyboardInterrupt is raised again.
    """
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=worker_main, args=(job,), name=f"worker-{job.index}") for job in jobs]
    for process in processes:
        process.start()
    reported: set[int] = set()
    try:
        while any(p.is_alive() for p in processes):
            time.sleep(poll_seconds)
            on_progress()
            for process in processes:
                if not process.is_alive() and process.exitcode and process.pid not in reported:
                    reported.add(process.pid)
                    _worker_died(study, process, jobs[processes.index(process)])
    except KeyboardInterrupt:
        _stop(processes)
        for process in processes:
            fail_trials_of(study, process.pid, "interrupted (Ctrl-C)", retry=False, status="KILLED")
        raise
    finally:
        on_progress()


def _stop(processes: list[multiprocessing.process.BaseProcess]) -> None:
    for process in processes:
        if process.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGINT)
    deadline = time.time() + 60
    for process in processes:
        process.join(max(0.1, deadline - time.time()))
        if process.is_alive():
            process.terminate()
            process.join(5)


def _worker_died(study: optuna.Study, process: multiprocessing.process.BaseProcess, job: WorkerJob) -> None:
    code = process.exitcode
    how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
    where = f"; see {job.log_path}" if job.log_path else ""
    failed = fail_trials_of(study, process.pid, f"worker {how}", retry=True)
    requeued = f"; trial {', '.join(map(str, failed))} failed and queued again" if failed else ""
    log.warning("worker %d %s%s%s", job.index, how, requeued, where)


def fail_trials_of(
    study: optuna.Study, pid: int | None, reason: str, *, retry: bool, status: str = "FAILED"
) -> list[int]:
    """Fails the running trials of a dead worker on this host and closes their runs.

    Returns the numbers of the trials it failed.
    """
    from src.sweeps.storage import retry_callback
    from src.sweeps.trial import WORKER_ATTR, close_trial_run

    worker = f"{socket.gethostname()}:{pid}"
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.user_attrs.get(WORKER_ATTR) != worker:
            continue
        with contextlib.suppress(Exception):  # another process may have failed it first
            study.tell(trial.number, state=TrialState.FAIL)
            failed.append(trial.number)
            close_trial_run(trial, reason, status)
            if retry:
                retry_callback()(study, study.trials[trial.number])
    return failed


def recover_orphans(study: optuna.Study) -> list[int]:
    """Fails and re-queues running trials whose worker on this host is gone
    (killed with SIGKILL in an earlier run of the sweep)."""
    from src.sweeps.trial import WORKER_ATTR

    host = socket.gethostname()
    recovered = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker_host, _, pid = str(trial.user_attrs.get(WORKER_ATTR, "")).rpartition(":")
        if worker_host == host and pid.isdigit() and not _alive(int(pid)):
            recovered += fail_trials_of(study, int(pid), "worker died before the trial ended; trial retried", retry=True)
    return recovered


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
