"""A trial's MLflow run as the study sees it.

The study is the source of truth; a trial's run is its picture in MLflow. When a
worker cannot keep the two in line (it was killed, or the tracking store failed
under it), they are brought back together from here: a dead worker's run is
closed, and :func:`reconcile` writes every finished trial's state, metrics and
tags into its run (or a run for it, when it has none), never twice.

These calls write runs no process has active, so they use ``MlflowClient``.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import optuna
from mlflow.exceptions import MlflowException
from optuna.trial import FrozenTrial, TrialState

from src.tracking import FAILURE_TAG

log = logging.getLogger("mlplab")

RUN_ID_ATTR = "mlflow_run_id"
WORKER_ATTR = "worker"
EPOCHS_ATTR = "epochs_trained"
FAIL_REASON_ATTR = "fail_reason"
LOST_TO_TRACKING_ATTR = "tracking_failed"
STATE_TAG = "optuna.state"
STUDY_TAG = "optuna.study"
TRIAL_TAG = "optuna.trial"
RECONCILED_TAG = "reconciled"
_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
_PAGE = 1000


def worker_id(pid: int | None = None) -> str:
    """``host:pid`` of a worker process (this one by default), as trials record it."""
    return f"{socket.gethostname()}:{os.getpid() if pid is None else pid}"


def worker_of(trial: FrozenTrial) -> tuple[str, int | None]:
    """The host and process id recorded by the worker that ran ``trial``."""
    host, _, pid = str(trial.user_attrs.get(WORKER_ATTR, "")).rpartition(":")
    return host, int(pid) if pid.isdigit() else None


def fail_reason(trial: FrozenTrial, retried_as: int | None = None) -> str:
    """Why a failed trial failed, and where it was queued again, if it was. A trial
    whose worker died records no reason itself; its retry says what happened."""
    reason = trial.user_attrs.get(FAIL_REASON_ATTR)
    if retried_as is None:
        return str(reason or "failed")
    return f"{reason or 'its worker stopped'}; queued again as #{retried_as}"


def retries(trials: list[FrozenTrial]) -> dict[int, int]:
    """Failed trial number -> the number of the trial that runs it again."""
    return {t.system_attrs["failed_trial"]: t.number for t in trials if "failed_trial" in t.system_attrs}


def close_trial_run(study: optuna.Study, trial: FrozenTrial, reason: str, status: str = "FAILED") -> None:
    """Ends the MLflow run of a trial whose worker can no longer end it.

    The run is found by the id the trial recorded or, for a worker killed between
    opening the run and recording its id, by the run's study and trial tags.
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    run_id = trial.user_attrs.get(RUN_ID_ATTR) or _find_trial_run(client, study, trial)
    if not run_id or client.get_run(run_id).info.status != "RUNNING":
        return
    client.set_tag(run_id, STATE_TAG, "FAIL")
    client.set_tag(run_id, FAILURE_TAG, reason)
    client.set_terminated(run_id, status)


def _find_trial_run(client: Any, study: optuna.Study, trial: FrozenTrial) -> str | None:
    """The run tagged with this study and trial, in the sweep run's experiment."""
    sweep_run_id = study.user_attrs.get(RUN_ID_ATTR)
    if not sweep_run_id:
        return None
    experiment_id = client.get_run(sweep_run_id).info.experiment_id
    found = _runs_of_trial(client, experiment_id, study.study_name, trial.number)
    return found[0].info.run_id if found else None


def on_stale_trial(study: optuna.Study, trial: FrozenTrial) -> None:
    """Heartbeat callback: the trial's worker stopped beating; close its run."""
    close_trial_run(
        study, trial, f"worker {trial.user_attrs.get(WORKER_ATTR, '?')} stopped (no heartbeat); trial retried"
    )


# ------------------------------------------------------------------ reconciling
@dataclass
class Reconciled:
    """What :func:`reconcile` changed, by trial number.

    Attributes:
        closed: Runs left RUNNING, or disagreeing with the study, now given their
            trial's state, metrics and tags.
        written: Runs written from the study's record for finished trials that had none.
        removed: Trials that had more than one run; the extra runs were deleted.
    """

    closed: list[int] = field(default_factory=list)
    written: list[int] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.closed or self.written or self.removed)

    def describe(self) -> str:
        parts = [
            f"{what} {_numbers(numbers)}"
            for what, numbers in (("closed", self.closed), ("written from the study", self.written),
                                  ("duplicate runs removed", self.removed))
            if numbers
        ]
        return "; ".join(parts)


def reconcile(study: optuna.Study, experiment_id: str, sweep_run_id: str, objectives: list[str]) -> Reconciled:
    """Brings MLflow in line with the study for every finished trial.

    A run left RUNNING (its worker died, or the store failed under it), or one
    whose state tag disagrees with the study, gets the trial's state, metrics and
    tags and ends as the trial did. A finished trial without a run gets one,
    written from the study's record. Nothing is written twice: a run keeps the
    metrics it has, and when two commands reconcile at once and both write a run
    for one trial, both keep the same one (the worker's, else the smallest id)
    and the other is deleted. ``objectives`` names the metric of each of the
    trial's values (its run holds them as ``objective.<metric>``).
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    done = Reconciled()
    # Trials before runs: a trial's run ends before the trial is told, so every
    # trial finished in this snapshot has its run in the next one.
    trials = study.get_trials(deepcopy=False)
    retried_as = retries(trials)
    runs = _trial_runs(client, experiment_id, study.study_name)
    for trial in (t for t in trials if t.state in _FINISHED):
        tags = _record_tags(trial, retried_as.get(trial.number))
        found = runs.get(trial.number, [])
        try:
            if not found:
                _write_from_record(client, experiment_id, sweep_run_id, study.study_name, trial, objectives, tags)
                done.written.append(trial.number)
                found = _runs_of_trial(client, experiment_id, study.study_name, trial.number)
            keeper = _keeper(trial, found)
            extra = [r for r in found if r.info.run_id != keeper.info.run_id]
            for run in extra:
                client.delete_run(run.info.run_id)
            if extra and trial.number not in done.written:
                done.removed.append(trial.number)
            missing = _missing_metrics(trial, keeper.data.metrics, objectives)
            state = keeper.data.tags.get(STATE_TAG)
            if keeper.info.status != run_status(trial) or state != trial.state.name or missing:
                _close_from_record(client, trial, keeper, missing, tags)
                done.closed.append(trial.number)
        except MlflowException as exc:
            if not _deleted_under_us(exc):
                raise
            # Another command reconciling at once kept its own run for this trial and
            # deleted the one this command was writing; that run is the trial's.
            log.debug("trial %d: its run was deleted by another command reconciling at once", trial.number)
    return done


def _deleted_under_us(exc: MlflowException) -> bool:
    """Whether MLflow refused a write because the run had been deleted meanwhile."""
    return exc.error_code == "INVALID_PARAMETER_VALUE" and "Current state is deleted" in exc.message


def run_status(trial: FrozenTrial) -> str:
    """The MLflow status of a finished trial's run."""
    if trial.state != TrialState.FAIL:
        return "FINISHED"
    return "KILLED" if str(trial.user_attrs.get(FAIL_REASON_ATTR, "")).startswith("interrupted") else "FAILED"


def _trial_runs(client: Any, experiment_id: str, study_name: str) -> dict[int, list[Any]]:
    """The study's trial runs in the experiment, by trial number (every page)."""
    by_trial: dict[int, list[Any]] = {}
    token = None
    while True:
        page = client.search_runs([experiment_id], _runs_filter(study_name), max_results=_PAGE, page_token=token)
        for run in page:
            number = run.data.tags.get(TRIAL_TAG)
            if number is not None and number.isdigit():
                by_trial.setdefault(int(number), []).append(run)
        token = page.token
        if not token:
            return by_trial


def _runs_of_trial(client: Any, experiment_id: str, study_name: str, number: int) -> list[Any]:
    return client.search_runs([experiment_id], _runs_filter(study_name, number))


def _runs_filter(study_name: str, number: int | None = None) -> str:
    """MLflow's filter for the study's trial runs (of one trial, with ``number``)."""
    found = f"tags.`{STUDY_TAG}` = '{study_name}'"
    return found if number is None else f"{found} and tags.`{TRIAL_TAG}` = '{number}'"


def _keeper(trial: FrozenTrial, runs: list[Any]) -> Any:
    """The one run a trial keeps: the one its worker recorded, else the smallest id
    (the same choice in every process)."""
    recorded = trial.user_attrs.get(RUN_ID_ATTR)
    for run in runs:
        if run.info.run_id == recorded:
            return run
    return min(runs, key=lambda r: r.info.run_id)


def _record_metrics(trial: FrozenTrial, objectives: list[str]) -> dict[str, float]:
    """The final metrics the study holds for a trial (none for a pruned or failed one)."""
    metrics = {k: float(v) for k, v in trial.user_attrs.get("metrics", {}).items()}
    if trial.state == TrialState.COMPLETE:
        metrics.update({f"objective.{n}": float(v) for n, v in zip(objectives, trial.values or [])})
    return metrics


def _missing_metrics(trial: FrozenTrial, logged: dict[str, float], objectives: list[str]) -> dict[str, float]:
    return {k: v for k, v in _record_metrics(trial, objectives).items() if k not in logged}


def _record_tags(trial: FrozenTrial, retried_as: int | None) -> dict[str, str]:
    tags = {STATE_TAG: trial.state.name}
    if trial.state == TrialState.FAIL:
        tags[FAILURE_TAG] = fail_reason(trial, retried_as)
    if trial.state == TrialState.PRUNED and EPOCHS_ATTR in trial.user_attrs:
        tags["pruned_at_epoch"] = str(trial.user_attrs[EPOCHS_ATTR])
    return tags


def _close_from_record(
    client: Any, trial: FrozenTrial, run: Any, missing: dict[str, float], tags: dict[str, str]
) -> None:
    """Gives ``run`` its trial's state and tags, and the ``missing`` metrics."""
    from mlflow.entities import Metric, RunTag

    run_id = run.info.run_id
    step = int(trial.user_attrs.get(EPOCHS_ATTR, 0))
    stamp = _millis(trial.datetime_complete)
    metrics = [Metric(k, v, stamp, step) for k, v in missing.items()]
    written = {**tags, RECONCILED_TAG: "closed from the study"}
    client.log_batch(run_id, metrics=metrics, tags=[RunTag(k, v) for k, v in written.items()])
    client.set_terminated(run_id, run_status(trial), end_time=stamp)


def _write_from_record(
    client: Any,
    experiment_id: str,
    sweep_run_id: str,
    study_name: str,
    trial: FrozenTrial,
    objectives: list[str],
    tags: dict[str, str],
) -> None:
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    stamp = _millis(trial.datetime_complete)
    run = client.create_run(
        experiment_id,
        start_time=_millis(trial.datetime_start or trial.datetime_complete),
        run_name=f"trial-{trial.number}",
        tags={MLFLOW_PARENT_RUN_ID: sweep_run_id, STUDY_TAG: study_name, TRIAL_TAG: str(trial.number),
              RECONCILED_TAG: "written from the study"},
    )
    step = int(trial.user_attrs.get(EPOCHS_ATTR, 0))
    client.log_batch(
        run.info.run_id,
        metrics=[Metric(k, v, stamp, step) for k, v in _record_metrics(trial, objectives).items()],
        params=[Param(f"sampled.{k}", str(v)) for k, v in trial.params.items()],
        tags=[RunTag(k, v) for k, v in tags.items()],
    )
    client.set_terminated(run.info.run_id, run_status(trial), end_time=stamp)


def _millis(moment: Any) -> int:
    return int((moment.timestamp() if moment is not None else time.time()) * 1000)


def _numbers(numbers: list[int]) -> str:
    shown = ", ".join(f"#{n}" for n in sorted(numbers)[:10])
    return shown + (f" and {len(numbers) - 10} more" if len(numbers) > 10 else "")


class Reconciler:
    """Keeps MLflow in line with the study while a sweep command runs: at its start,
    once a trial was lost to a tracking failure (tried again every ``every``
    seconds until the store answers), and at its end.

    Attributes:
        pending: A tracking failure was seen and MLflow has not been reconciled since.
    """

    def __init__(
        self, study: optuna.Study, experiment_id: str, sweep_run_id: str, objectives: list[str], every: float = 10.0
    ) -> None:
        self.study = study
        self.experiment_id = experiment_id
        self.sweep_run_id = sweep_run_id
        self.objectives = objectives
        self.every = every
        self.pending = False
        self._next_try = 0.0

    def now(self) -> Reconciled:
        """Reconciles; a store that fails raises :class:`~src.tracking.TrackingError`."""
        from src.tracking import store_errors

        with store_errors():
            done = reconcile(self.study, self.experiment_id, self.sweep_run_id, self.objectives)
        self.pending = False
        return done

    def when_due(self) -> Reconciled | None:
        """Reconciles if a failure is pending and the last try is ``every`` seconds
        old; None when it did not (or the store still fails)."""
        from src.tracking import TrackingError

        if not self.pending:
            self._next_try = time.monotonic() + self.every  # a store that just failed is given time
            return None
        if time.monotonic() < self._next_try:
            return None
        self._next_try = time.monotonic() + self.every
        try:
            return self.now()
        except TrackingError:
            return None
