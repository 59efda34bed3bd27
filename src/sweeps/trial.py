"""One Optuna trial: sample, compose, train through ``src.training.run``, report."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from src import tracking
from src.config import CheckedConfig, Composer, validate
from src.errors import MlplabError, first_line
from src.listeners import EpochListener
from src.models.base import CHECKPOINTS_PER_TRAINING, disposable_models
from src.sweeps.definition import SweepSpec
from src.sweeps.storage import retry_callback
from src.sweeps.study import FAILED_FOR_GOOD, suggest
from src.sweeps.trial_runs import (
    EPOCHS_ATTR, FAIL_REASON_ATTR, LOST_TO_TRACKING_ATTR, RUN_ID_ATTR, STATE_TAG, STUDY_TAG, TRIAL_TAG, WORKER_ATTR,
    worker_id,
)
from src.training import main_model_name, run

# Trials train the Keras model only (baselines are trained once per sweep) and log
# no model files or plots (the sweep run has Optuna's) and register nothing; the best
# config, re-run through src.train, logs all of them and registers its model. A trial
# prints no progress: the sweep shows its own.
TRIAL_OVERRIDES = (
    "baselines=none", "tracking.log_models=false", "tracking.plots=false", "tracking.register=false",
    "trainer.verbose=0",
)


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
        self._lost_to_tracking: set[int] = set()
        self._experiment_ids: dict[tuple[str, str], str] = {}

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        values = {param.key: suggest(trial, param) for param in self.spec.params}
        trial.set_user_attr(WORKER_ATTR, worker_id())
        for copied in (LOST_TO_TRACKING_ATTR, FAIL_REASON_ATTR, RUN_ID_ATTR):  # a retry starts with its trial's attrs
            if trial.user_attrs.get(copied) is not None:
                trial.set_user_attr(copied, None)
        try:
            cfg = self.composer.compose([*self.spec.trial_overrides(values), *TRIAL_OVERRIDES])
            plain = validate(cfg)
        except MlplabError as exc:
            _failed_for_good(trial, exc)
            raise
        try:
            return self._tracked(trial, plain, values)
        except tracking.TrackingError as exc:
            # The store is gone: no later trial could be logged either. Keep this
            # trial's result if training finished, and stop this worker.
            self.tracking_failure = exc
            trial.study.stop()
            trial.set_user_attr(LOST_TO_TRACKING_ATTR, str(exc))
            if exc.metrics is None:
                trial.set_user_attr(FAIL_REASON_ATTR, f"tracking failed: {exc}")
                self._lost_to_tracking.add(trial.number)
                raise
            objective = self._objective(trial, exc.metrics)
            return objective if self.spec.multi_objective else objective[0]

    def _tracked(self, trial: optuna.Trial, plain: CheckedConfig, values: dict[str, Any]) -> Any:
        experiment = self._experiment(plain)
        tags = {STUDY_TAG: self.spec.study_name, TRIAL_TAG: trial.number, STATE_TAG: "RUNNING"}
        reporter = PruningReporter(trial, self.spec.objectives[0].report, self.prune, plain["trainer"]["epochs"])
        with tracking.store_errors(), tracking.run(
            f"trial-{trial.number}",
            experiment=experiment,
            parent_run_id=self.sweep_run_id,
            tags=tags,
            finish_on=(optuna.TrialPruned,),
            reconciled=True,
        ) as tracked:
            trial.set_user_attr(RUN_ID_ATTR, tracked.run_id)
            sampled = {f"sampled.{k}": v for k, v in values.items()}
            try:
                with disposable_models():  # a trial's model is dropped when it ends
                    result = run(plain, into=tracked, listeners=[reporter], params=sampled)
                metrics = result.metrics[main_model_name(plain)]
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
                trial.set_user_attr(FAIL_REASON_ATTR, reason)
                tracked.set_tags({STATE_TAG: "FAIL"})
                raise
            trial.set_user_attr(EPOCHS_ATTR, reporter.epoch)
            objective = self._objective(trial, metrics)
            tracked.log_metrics(
                {f"objective.{o.metric}": v for o, v in zip(self.spec.objectives, objective)},
                tags={STATE_TAG: "COMPLETE"},
            )
        return objective if self.spec.multi_objective else objective[0]

    def _experiment(self, plain: dict[str, Any]) -> str:
        """The id of the trial's MLflow experiment, looked up once per worker. (An
        experiment deleted mid-sweep fails the next trial's run either way.)"""
        key = (plain["experiment_name"], plain["tracking"]["uri"])
        if key not in self._experiment_ids:
            with tracking.store_errors():
                self._experiment_ids[key] = tracking.open_experiment(plain["experiment_name"], plain["tracking"])
        return self._experiment_ids[key]

    def requeue_lost(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Optuna callback: a trial that failed only because tracking failed is
        queued again with the same params, as a dead worker's trial is; the failed
        one stays FAIL with its reason."""
        if trial.number in self._lost_to_tracking and trial.state == TrialState.FAIL:
            retry_callback()(study, trial)

    def _objective(self, trial: optuna.Trial, metrics: dict[str, float]) -> list[float]:
        """Records the trial's final metrics and returns its objective values."""
        trial.set_user_attr("metrics", {k: float(v) for k, v in metrics.items()})
        return [float(metrics[o.metric]) for o in self.spec.objectives]


def _failed_for_good(trial: optuna.Trial, exc: BaseException) -> None:
    trial.set_user_attr(FAIL_REASON_ATTR, first_line(exc))
    trial.set_user_attr(FAILED_FOR_GOOD, True)
