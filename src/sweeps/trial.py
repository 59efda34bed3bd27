"""One Optuna trial: sample, compose, train through ``src.training.run``, report."""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Mapping
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from src import tracking
from src.config import Composer, validate
from src.errors import MlplabError, first_line
from src.listeners import EpochListener
from src.models.base import CHECKPOINTS_PER_TRAINING
from src.sweeps.definition import SweepSpec
from src.sweeps.study import FAILED_FOR_GOOD, suggest
from src.training import main_model_name, run

# Trials train the Keras model only (baselines are trained once per sweep) and log
# no model files or plots (the sweep run has Optuna's); the best config, re-run
# through src.train, logs all of them.
TRIAL_OVERRIDES = ("baselines=none", "tracking.log_models=false", "tracking.plots=false")
RUN_ID_ATTR = "mlflow_run_id"
WORKER_ATTR = "worker"
EPOCHS_ATTR = "epochs_trained"
STATE_TAG = "optuna.state"


def worker_id(pid: int | None = None) -> str:
    """``host:pid`` of a worker process (this one by default), as trials record it."""
    return f"{socket.gethostname()}:{os.getpid() if pid is None else pid}"


def worker_of(trial: FrozenTrial) -> tuple[str, int | None]:
    """The host and process id recorded by the worker that ran ``trial``."""
    host, _, pid = str(trial.user_attrs.get(WORKER_ATTR, "")).rpartition(":")
    return host, int(pid) if pid.isdigit() else None


class PruningReporter(EpochListener):
    """Reports a per-epoch metric to the trial and stops it when the pruner says so.

    It reports every ``every``-th epoch (and the last), the points at which training
    hands its epochs over (``CHECKPOINTS_PER_TRAINING``), so the pruner judges a
    trial where stopping it still saves work, with a tenth of the storage writes.
    """

    def __init__(self, trial: optuna.Trial, metric: str | None, prune: bool, epochs: int) -> None:
        self.trial = trial
        self.metric = metric
        self.prune = prune
        self.epochs = epochs
        self.every = max(1, math.ceil(epochs / CHECKPOINTS_PER_TRAINING))
        self.epoch = 0

    def on_epoch_end(self, epoch: int, logs: Mapping[str, float]) -> None:
        self.epoch = epoch
        if not self.prune or self.metric is None:
            return
        if self.metric not in logs:
            raise MlplabError(
                f"the pruner watches {self.metric!r}, which training does not report "
                f"(it reports {', '.join(sorted(logs))})"
            )
        if epoch % self.every and epoch != self.epochs:
            return
        self.trial.report(logs[self.metric], epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {epoch}")


class TrialObjective:
    """The objective a worker optimizes: one MLflow child run per trial under the
    sweep's run, holding the sampled params, the full config and per-epoch metrics."""

    def __init__(self, spec: SweepSpec, sweep_run_id: str, composer: Composer) -> None:
        self.spec = spec
        self.sweep_run_id = sweep_run_id
        self.composer = composer
        self.prune = spec.pruner["name"] != "none"
        self.tracking_failure: tracking.TrackingError | None = None

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        values = {param.key: suggest(trial, param) for param in self.spec.params}
        trial.set_user_attr(WORKER_ATTR, worker_id())
        try:
            cfg = self.composer.compose([*self.spec.trial_overrides(values), *TRIAL_OVERRIDES])
            plain = validate(cfg)
        except MlplabError as exc:
            _failed_for_good(trial, exc)
            raise
        try:
            return self._tracked(trial, cfg, plain, values)
        except tracking.TrackingError as exc:
            # The store is gone: no later trial could be logged either. Keep this
            # trial's result if training finished, and stop this worker.
            self.tracking_failure = exc
            trial.study.stop()
            trial.set_user_attr("tracking_failed", str(exc))
            if exc.metrics is None:
                trial.set_user_attr("fail_reason", f"tracking failed: {exc}")
                raise
            objective = self._objective(trial, exc.metrics)
            return objective if self.spec.multi_objective else objective[0]

    def _tracked(self, trial: optuna.Trial, cfg: Any, plain: dict[str, Any], values: dict[str, Any]) -> Any:
        with tracking.store_errors():
            experiment = tracking.open_experiment(plain["experiment_name"], plain["tracking"])
        tags = {"optuna.study": self.spec.study_name, "optuna.trial": trial.number, STATE_TAG: "RUNNING"}
        reporter = PruningReporter(trial, self.spec.objectives[0].report, self.prune, plain["trainer"]["epochs"])
        with tracking.store_errors(), tracking.run(
            f"trial-{trial.number}",
            experiment=experiment,
            parent_run_id=self.sweep_run_id,
            tags=tags,
            finish_on=(optuna.TrialPruned,),
        ) as tracked:
            trial.set_user_attr(RUN_ID_ATTR, tracked.run_id)
            tracked.log_params({f"sampled.{k}": v for k, v in values.items()})
            try:
                metrics = run(cfg, into=tracked, listeners=[reporter]).metrics[main_model_name(plain)]
            except optuna.TrialPruned:
                trial.set_user_attr(EPOCHS_ATTR, reporter.epoch)
                tracked.set_tags({STATE_TAG: "PRUNED", "pruned_at_epoch": reporter.epoch})
                raise
            except tracking.TrackingError:
                trial.set_user_attr(EPOCHS_ATTR, reporter.epoch)
                raise
            except MlplabError as exc:
                trial.set_user_attr(EPOCHS_ATTR, reporter.epoch)
                _failed_for_good(trial, exc)
                tracked.set_tags({STATE_TAG: "FAIL"})
                raise
            except BaseException as exc:
                reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else type(exc).__name__
                trial.set_user_attr("fail_reason", reason)
                tracked.set_tags({STATE_TAG: "FAIL"})
                raise
            trial.set_user_attr(EPOCHS_ATTR, reporter.epoch)
            objective = self._objective(trial, metrics)
            tracked.set_tags({STATE_TAG: "COMPLETE"})
            tracked.log_metrics({f"objective.{o.metric}": v for o, v in zip(self.spec.objectives, objective)})
        return objective if self.spec.multi_objective else objective[0]

    def _objective(self, trial: optuna.Trial, metrics: dict[str, float]) -> list[float]:
        """Records the trial's final metrics and returns its objective values."""
        trial.set_user_attr("metrics", {k: float(v) for k, v in metrics.items()})
        return [float(metrics[o.metric]) for o in self.spec.objectives]


def _failed_for_good(trial: optuna.Trial, exc: BaseException) -> None:
    trial.set_user_attr("fail_reason", first_line(exc))
    trial.set_user_attr(FAILED_FOR_GOOD, True)


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
    client.set_tag(run_id, tracking.FAILURE_TAG, reason)
    client.set_terminated(run_id, status)


def _find_trial_run(client: Any, study: optuna.Study, trial: FrozenTrial) -> str | None:
    """The run tagged with this study and trial, in the sweep run's experiment."""
    sweep_run_id = study.user_attrs.get(RUN_ID_ATTR)
    if not sweep_run_id:
        return None
    experiment_id = client.get_run(sweep_run_id).info.experiment_id
    found = client.search_runs(
        [experiment_id],
        f"tags.`optuna.study` = '{study.study_name}' and tags.`optuna.trial` = '{trial.number}'",
        max_results=1,
    )
    return found[0].info.run_id if found else None


def on_stale_trial(study: optuna.Study, trial: FrozenTrial) -> None:
    """Heartbeat callback: the trial's worker stopped beating; close its run."""
    close_trial_run(
        study, trial, f"worker {trial.user_attrs.get(WORKER_ATTR, '?')} stopped (no heartbeat); trial retried"
    )

