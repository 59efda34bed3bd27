"""Run (or resume) an Optuna sweep defined in ``sweeps/``.

    python -m src.sweep sweeps/xor_lr_activation.yaml [n_trials=N] [workers=W]
        [storage=URL] [study_name=S] [timeout=SECONDS] [verbose=true] [key=value ...]

Running the same command again resumes the study: finished trials are kept and
``n_trials`` is the total the study should reach. Any other ``key=value`` is a
config override applied to every trial. Every trial goes through
``src.training.run``, the same function as ``python -m src.train``.

``python -m src.train -m hparams_search=NAME`` runs the same sweep through Hydra
(``hydra_plugins/mlplab_sweeper``), on this module's :func:`run_sweep`.
"""

from __future__ import annotations

if __name__ == "__main__":  # a warm process, if one serves this checkout, runs the job (src/warm.py)
    from src.warm import hand_off

    hand_off("src.sweep")

import logging
import os
import shlex
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

from src.errors import ConfigError, MlplabError, report
from src.options import boolean, parse_options, positive_int, positive_seconds, text

if TYPE_CHECKING:
    import optuna
    from omegaconf import DictConfig

    from src.sweeps.definition import SweepSpec
    from src.sweeps.summary import SweepSummary
    from src.sweeps.trial_runs import Reconciled
    from src.sweeps.workers import Worker

log = logging.getLogger("mlplab")

BASELINES_ATTR = "baselines_run_id"


@dataclass
class SweepOptions:
    spec_path: str
    n_trials: int | None = None
    workers: int | None = None
    storage: str | None = None
    study_name: str | None = None
    timeout: float | None = None
    verbose: bool = False
    overrides: list[str] = field(default_factory=list)


@dataclass
class OpenedSweep:
    """A sweep ready to run: its checked definition and base config, its study,
    and its MLflow experiment.

    Attributes:
        created: Whether this command created the study (it then opens the
            sweep's MLflow run and trains the baselines).
        recovered: Trials of a dead worker this command failed and queued again.
    """

    spec: SweepSpec
    base_cfg: DictConfig
    plain: dict[str, Any]
    study: optuna.Study
    created: bool
    experiment: str
    recovered: list[int]


_USAGE = ("python -m src.sweep sweeps/<name>.yaml [n_trials=N] [workers=W] [storage=URL] [study_name=S] "
          "[timeout=SECONDS] [verbose=true] [key=value ...]")
_OPTIONS = {
    "n_trials": positive_int, "workers": positive_int, "storage": text,
    "study_name": text, "timeout": positive_seconds, "verbose": boolean,
}


def parse_args(argv: Sequence[str]) -> SweepOptions:
    (spec_path,), given, overrides = parse_options(argv, _OPTIONS, _USAGE, positional=1)
    return SweepOptions(spec_path=spec_path, overrides=overrides, **given)


def sweep(options: SweepOptions) -> SweepSummary:
    """Runs the sweep file's sweep to its end and returns its summary."""
    from src.sweeps.workers import start_workers, stop_workers

    # A lone worker starts before the sweep file is checked (Hydra's import and the
    # composing, about 0.6 s), and imports all but TensorFlow meanwhile: its imports
    # are the longest step before the first trial. Several come from a fork server
    # that imports everything as it starts, once the file is found good.
    early = start_workers(1) if _workers_asked(options) == 1 else None
    try:
        from src.sweeps.spec import load_spec

        spec = load_spec(
            options.spec_path,
            options.overrides,
            n_trials=options.n_trials,
            timeout=options.timeout,
            study_name=options.study_name,
            storage=options.storage,
            workers=options.workers,
        )
    except BaseException:
        stop_workers(early or [])
        raise
    return run_sweep(spec, verbose=options.verbose, workers=early)


def _workers_asked(options: SweepOptions) -> int | None:
    """The number of workers the sweep asks for, read without Hydra: the command
    line's ``workers``, else the file's ``hydra.sweeper.workers`` or ``n_jobs``, else
    1 (as :func:`~src.sweeps.spec.load_spec` reads it); None where the file cannot
    be read so (``load_spec`` says why)."""
    if options.workers is not None:
        return options.workers
    import yaml

    try:
        with open(options.spec_path, encoding="utf-8") as file:
            sweeper = yaml.safe_load(file)["hydra"]["sweeper"]
        return sweeper.get("workers") or sweeper.get("n_jobs") or 1
    except Exception:  # noqa: BLE001
        return None


def run_sweep(spec: SweepSpec, verbose: bool = False, workers: list[Worker] | None = None) -> SweepSummary:
    """Runs (or resumes) a checked sweep to its end and returns its summary: the
    engine behind ``python -m src.sweep`` and the Hydra sweeper plugin alike.

    ``workers``: the sweep's workers if the caller started them, not yet released
    (:func:`~src.sweeps.workers.start_workers`, as many as ``spec.workers``).
    """
    from src.config import compose, validate
    from src.sweeps.workers import start_workers, stop_workers

    if workers is not None and len(workers) != spec.workers:
        stop_workers(workers)
        workers = None
    try:
        base_cfg = compose(spec.base_overrides())
        plain = validate(base_cfg)
        # Each command's workers log to files of their own: several commands may share
        # a machine and a study.
        command = f"{socket.gethostname()}-{os.getpid()}"
        log_dir = None if verbose else spec.output_dir / "logs"
        log_paths = [None if log_dir is None else log_dir / f"{command}-worker-{i}.log" for i in range(spec.workers)]
        if workers is None:
            # Workers start first: their TensorFlow import (several seconds) overlaps the
            # parent's set-up and baselines (MLflow's import among them: nothing before
            # this line may import it). Until they get a job they can simply be stopped.
            workers = start_workers(spec.workers, log_paths)
        else:
            for worker, log_path in zip(workers, log_paths, strict=True):
                worker.release(log_path)
        return _run(_open(spec, base_cfg, plain), workers)
    except BaseException:
        stop_workers(workers or [])  # those still waiting for a job, if any
        raise


def _open(spec: SweepSpec, base_cfg: DictConfig, plain: dict[str, Any]) -> OpenedSweep:
    """Opens the MLflow experiment and opens (or creates) the study; fails orphaned
    trials."""
    import optuna

    from src import tracking
    from src.sweeps.storage import describe, recovers_by_heartbeat
    from src.sweeps.workers import open_study, recover_orphans

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # The tracking store first: if it cannot be reached, nothing is created or trained.
    tracking.connect(plain["tracking"]["uri"])
    study, created = open_study(spec, plain["trainer"]["epochs"], create=True)
    if [d.name.lower() for d in study.directions] != spec.directions:
        raise ConfigError(
            f"study {spec.study_name} in {describe(spec.storage, spec.study_name)} optimizes "
            f"{[d.name.lower() for d in study.directions]}, not {spec.directions}; use another study_name"
        )
    _check_sweep_run(study, spec.study_name, plain["experiment_name"])
    experiment = tracking.open_experiment(plain["experiment_name"], plain["tracking"])
    recovered = recover_orphans(study, recovers_by_heartbeat(spec.storage))
    return OpenedSweep(spec, base_cfg, plain, study, created, experiment, recovered)


def _check_sweep_run(study: optuna.Study, study_name: str, experiment_name: str) -> None:
    """A study being resumed logs under its MLflow run, which must be in this store
    and experiment: trial runs logged anywhere else would not sit under it, and the
    study's earlier trials would be logged a second time there."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from src import tracking
    from src.sweeps.trial_runs import RUN_ID_ATTR

    run_id = study.user_attrs.get(RUN_ID_ATTR)
    if run_id is None:
        return
    client = MlflowClient()
    where = tracking.redact(client.tracking_uri)
    with tracking.store_errors():
        try:
            found = client.get_run(run_id)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            found = None
        started_in = None if found is None else client.get_experiment(found.info.experiment_id)
    if found is None:
        raise ConfigError(
            f"study {study_name}'s MLflow run {run_id} is not in the tracking store {where}: "
            "use the tracking.uri the study was started with, or a new study_name"
        )
    if found.info.lifecycle_stage == "deleted":
        raise ConfigError(
            f"study {study_name}'s MLflow run {run_id} was deleted from {where}: restore it "
            f"(mlflow runs restore --run-id {run_id}, with MLFLOW_TRACKING_URI set to the store), or use a new study_name"
        )
    if started_in.name != experiment_name:
        raise ConfigError(
            f"study {study_name}'s MLflow run is in experiment '{started_in.name}', not '{experiment_name}': "
            f"use experiment_name={started_in.name}, or a new study_name"
        )


def _run(opened: OpenedSweep, workers: list[Any]) -> SweepSummary:
    """Opens the sweep's MLflow run, trains the baselines, hands the workers their
    jobs, watches them, and summarizes."""
    from src import tracking
    from src.sweeps.storage import describe, recovers_by_heartbeat
    from src.sweeps.study import counted_trials
    from src.results import comparison_table
    from src.sweeps.summary import (
        log_to_run, prepare_plots, summarize, top_trials_table, train_command, write_best_config,
    )
    from src.sweeps.study import StopWhenDone
    from src.sweeps.trial_runs import RUN_ID_ATTR, Reconciler
    from src.sweeps.workers import WorkerJob, interrupt_workers, run_workers, send_jobs
    from src.training import run

    spec, plain, study, experiment = opened.spec, opened.plain, opened.study, opened.experiment
    epochs = plain["trainer"]["epochs"]
    uri = plain["tracking"]["uri"]
    done = len(counted_trials(study))
    target = f"{spec.n_trials} trial{'s' * (spec.n_trials != 1)}" if spec.n_trials else "no trial limit"
    timeout = f", for at most {spec.timeout:g} s" if spec.timeout else ""
    print(f"Sweep {spec.study_name}: {target}{timeout} on {spec.workers} worker(s)")
    print("  goal:   " + ", ".join(f"{o.direction} {o.metric}" for o in spec.objectives)
          + " over " + ", ".join(p.key for p in spec.params))
    print(f"  study:  {describe(spec.storage, spec.study_name)}" + (f" (resuming: {done} done)" if done else ""))
    print(f"  MLflow: experiment '{plain['experiment_name']}' at {tracking.redact(uri)}")
    if opened.recovered:
        print(f"  trial {', '.join(map(str, opened.recovered))} of a dead worker marked failed and queued again")

    run_id = study.user_attrs.get(RUN_ID_ATTR)
    waited = run_id is None and not opened.created
    if waited:
        run_id = _wait_for_sweep_run(study, spec.study_name)
    # A tracking store that fails mid-sweep ends it with one line; the study keeps every
    # result, and MLflow is brought back in line with it once the store answers.
    with tracking.store_errors(), tracking.run(
        f"sweep-{spec.study_name}",
        experiment=experiment,
        run_id=run_id,
        tags={"optuna.study": spec.study_name, "sweep": spec.path.name if spec.path else spec.label, "kind": "sweep"},
        reconciled=True,
    ) as parent:
        progress = _Progress(study, spec)
        reconciler = Reconciler(study, experiment, parent.run_id, [o.metric for o in spec.objectives])
        try:
            if run_id is not None and not waited:  # resuming: MLflow may lag behind the study
                _say_reconciled(reconciler.now())
            if run_id is None:
                study.set_user_attr(RUN_ID_ATTR, parent.run_id)
                parent.log_params(
                    {"sweep.file": spec.path.name if spec.path else "(command line)", "sweep.experiment": spec.experiment,
                     "sweep.objectives": ", ".join(f"{o.direction} {o.metric}" for o in spec.objectives),
                     "sweep.sampler": spec.sampler["name"], "sweep.pruner": spec.pruner["name"],
                     "sweep.overrides": " ".join(_redacted(o) for o in spec.base_overrides()),
                     **{f"space.{p.key}": _describe_param(p) for p in spec.params}}
                )
                if spec.path is not None:
                    parent.log_artifact(spec.path)
            deadline = time.time() + spec.timeout if spec.timeout else None
            send_jobs(workers, [
                WorkerJob(spec, uri, parent.run_id, epochs, index, deadline)
                for index in range(len(workers))
            ])
            # Of several commands started together, the one that created the study
            # trains the baselines; one resuming a study whose baselines never ran does too.
            if plain["baselines"] and BASELINES_ATTR not in study.user_attrs and not waited:
                print("Training the baselines once for the whole sweep ...")
                results = run(_baselines_config(opened.base_cfg), parent_run_id=parent.run_id, only=list(plain["baselines"]))
                print(comparison_table(results.metrics))
                study.set_user_attr(BASELINES_ATTR, "done")
            prepare_plots()  # while the workers run, not after the last trial
        except BaseException as exc:
            stopped = isinstance(exc, KeyboardInterrupt)
            interrupt_workers(workers, study, "interrupted (Ctrl-C)" if stopped else "the sweep stopped: " + str(exc))
            raise

        def watch() -> None:
            if progress.update():  # a trial was lost to a tracking failure, here or elsewhere
                reconciler.pending = True
            _say_reconciled(reconciler.when_due())

        run_workers(workers, study, watch, by_heartbeat=recovers_by_heartbeat(spec.storage))

        summary = summarize(study, spec, epochs)
        if summary.best:
            pick = min(summary.best, key=lambda t: (-t.values[0] if spec.directions[0] == "maximize" else t.values[0]))
            summary.best_config = write_best_config(pick, spec)
        try:
            _say_reconciled(reconciler.now())
            log_to_run(parent, study, spec, summary)
        except tracking.TrackingError as exc:
            raise tracking.TrackingError(
                f"{exc}; finished trials are kept in the study: run the same command again once it answers"
            ) from None
    lost = next((w.stopped for w in workers if w.stopped is not None and w.stopped.tracking), None)

    print()
    print(f"Done: {summary.complete} complete, {summary.pruned} pruned, {summary.failed} failed")
    if summary.epochs_saved_share is not None and spec.pruner["name"] != "none":
        print(f"Pruning saved {summary.epochs_saved_share:.0%} of the epochs")
    if summary.best:
        title = "Pareto front" if spec.multi_objective else "Top trials"
        print(f"\n{title}:\n{top_trials_table(study, spec)}")
        print(f"\nBest config: {summary.best_config}")
        print(f"Run it:      {train_command(summary.best_config)}")
    else:
        print("No trial completed" + ("; see the failed trials' reasons above." if summary.failed else "."))
    print(f"MLflow run:  sweep-{spec.study_name} ({parent.run_id})")
    if StopWhenDone(spec.n_trials).done(study):
        return summary
    if lost is not None:
        raise MlplabError(
            f"a worker stopped when {lost.message}; the store answers again and MLflow agrees with the study: "
            "run the same command again to finish the sweep"
        )
    died = [w.died for w in workers if w.died is not None]
    if len(died) == len(workers):  # with none left, the sweep ended short of its trials
        raise MlplabError(f"{died[0]}; the study keeps the finished trials: run the same command again to go on")
    return summary


def _baselines_config(base_cfg: DictConfig) -> DictConfig:
    """The sweep's baselines log their metrics and figures, not their models: they
    are the yardstick the trials are compared against, and logging the models cost
    the parent ~1.5 s of CPU (MLflow's sklearn flavor and skops imported, each model
    saved) while its workers import TensorFlow on the same cores. The best config,
    re-run through src.train, logs every model and registers its own."""
    cfg = base_cfg.copy()
    cfg.tracking.log_models = False
    cfg.tracking.register = False
    return cfg


def _say_reconciled(done: Reconciled | None) -> None:
    if done:
        print(f"  MLflow brought in line with the study: {done.describe()}", flush=True)


def _redacted(override: str) -> str:
    """``key=value`` with any password in the value hidden (``tracking.uri=...``)."""
    from src.tracking import redact

    key, sep, value = override.partition("=")
    return f"{key}{sep}{redact(value)}" if sep else override


def _wait_for_sweep_run(study: optuna.Study, study_name: str, timeout: float = 120) -> str | None:
    """The sweep's MLflow run id, once the process that created the study has
    opened it (another machine starting the same sweep at the same time).

    Returns None if it does not appear within ``timeout`` seconds (that process
    died first): this one then opens the run.
    """
    from src.sweeps.trial_runs import RUN_ID_ATTR

    print(f"  waiting for the command that created study {study_name} to open its MLflow run ...", flush=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run_id = study.user_attrs.get(RUN_ID_ATTR)
        if run_id is not None:
            return run_id
        time.sleep(0.5)
    return None


def _describe_param(param: Any) -> str:
    if param.type == "categorical":
        return "choice of " + ", ".join(map(str, param.choices))
    scale = " log" if param.log else ""
    return f"{param.type} {param.low}..{param.high}{scale}"


class _Progress:
    """Prints one line per finished trial: k/N, its value, the best so far, counts."""

    def __init__(self, study: optuna.Study, spec: SweepSpec) -> None:
        from optuna.trial import TrialState

        from src.sweeps.study import is_counted

        self.study = study
        self.spec = spec
        self.finished = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        finished = study.get_trials(deepcopy=False, states=self.finished)
        self.seen = {t.number for t in finished}
        self.position = sum(map(is_counted, finished))

    def update(self) -> bool:
        """Prints the trials finished since the last call; returns whether one of
        them was lost to a tracking failure. The count only grows: it is taken from
        one read of the study and advanced line by line."""
        from src.sweeps.study import is_counted
        from src.sweeps.summary import counts_line, trial_line
        from src.sweeps.trial_runs import LOST_TO_TRACKING_ATTR, retries

        trials = self.study.get_trials(deepcopy=False)
        finished = [t for t in trials if t.state in self.finished]
        new = [t for t in finished if t.number not in self.seen]
        if not new:
            return False
        retried_as = retries(trials)
        shown = [t for t in finished if t.number in self.seen]
        lost = False
        for trial in sorted(new, key=lambda t: t.datetime_complete or t.datetime_start):
            self.seen.add(trial.number)
            shown.append(trial)
            self.position += is_counted(trial)
            lost = lost or bool(trial.user_attrs.get(LOST_TO_TRACKING_ATTR))
            line = trial_line(trial, self.position, self.spec.n_trials, [counts_line(shown, self.spec)],
                              retried_as.get(trial.number))
            print(line, flush=True)
        return lost


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        sweep(parse_args(argv))
    except MlplabError as exc:
        sys.exit(report(exc))
    except KeyboardInterrupt:
        interrupted(["python", "-m", "src.sweep", *argv])


def interrupted(command: Sequence[str]) -> NoReturn:
    """Ctrl-C: says what was kept and how to resume, and exits 130."""
    print(f"\nInterrupted: finished trials are kept; running trials were marked failed.\n"
          f"Resume with: {shlex.join(command)}", file=sys.stderr)
    sys.exit(130)


if __name__ == "__main__":
    from src.errors import run_command

    run_command(main)
