"""What a sweep leaves behind: counts, the best trials, the best config as a file
``src.train`` runs as it is, and Optuna's plots, on the sweep's MLflow run."""

from __future__ import annotations

import functools
import math
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from omegaconf import OmegaConf
from optuna.trial import FrozenTrial, TrialState

from src.config import Composer
from src.sweeps.definition import SweepSpec
from src.sweeps.trial_runs import EPOCHS_ATTR, fail_reason
from src.results import format_table


@dataclass
class SweepSummary:
    complete: int
    pruned: int
    failed: int
    best: list[FrozenTrial]  # the best trial, or the Pareto front
    epochs_saved_share: float | None
    best_config: Path | None = None

    @property
    def counts(self) -> dict[str, int]:
        return {"n_complete": self.complete, "n_pruned": self.pruned, "n_failed": self.failed}


def summarize(study: optuna.Study, spec: SweepSpec, epochs: int) -> SweepSummary:
    trials = study.get_trials(deepcopy=False)
    by_state = {s: [t for t in trials if t.state == s] for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    complete = by_state[TrialState.COMPLETE]
    if not complete:
        best = []
    elif spec.multi_objective:
        best = sorted(study.best_trials, key=lambda t: t.number)
    else:
        best = [study.best_trial]
    ran = [t for t in complete + by_state[TrialState.PRUNED] if EPOCHS_ATTR in t.user_attrs]
    saved = None
    if ran:
        saved = 1 - sum(t.user_attrs[EPOCHS_ATTR] for t in ran) / (epochs * len(ran))
    return SweepSummary(
        complete=len(complete),
        pruned=len(by_state[TrialState.PRUNED]),
        failed=len(by_state[TrialState.FAIL]),
        best=best,
        epochs_saved_share=saved,
    )


def top_trials_table(study: optuna.Study, spec: SweepSpec, limit: int = 5) -> str:
    """The best complete trials (or the Pareto front), with their params."""
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if spec.multi_objective:
        shown = sorted(study.best_trials, key=lambda t: t.values[0], reverse=spec.directions[0] == "maximize")
    else:
        shown = sorted(complete, key=lambda t: t.value, reverse=spec.directions[0] == "maximize")[:limit]
    objectives = [o.metric for o in spec.objectives]
    extra = [
        m for m in ("train_accuracy", "test_accuracy", "test_mae")
        if m not in objectives and any(m in t.user_attrs.get("metrics", {}) for t in shown)
    ]
    rows = [
        {
            "trial": t.number,
            **dict(zip(objectives, t.values)),
            **{m: t.user_attrs.get("metrics", {}).get(m) for m in extra},
            **{k: _short(v) for k, v in t.params.items()},
        }
        for t in shown
    ]
    return format_table(rows, ["trial", *objectives, *extra, *(p.key for p in spec.params)])


def write_best_config(study_best: FrozenTrial, spec: SweepSpec) -> Path:
    """Writes the best trial's config in the sweep's output folder, where
    ``src.train`` can run it as it is.

    It composes ``conf/config.yaml`` with the trial's group choices and values, so
    ``optimizer=sgd`` or any other override still works on it."""
    with Composer() as composer:
        config = composer.primary_config(spec.trial_overrides(study_best.params))
    # Re-running it registers its model, and makes it the champion if it beats the
    # registered champion on the sweep's (first) objective.
    objective = spec.objectives[0]
    config["tracking"] = {
        **config.get("tracking", {}),
        "register": True,
        "champion": {"metric": objective.metric, "direction": objective.direction},
    }
    value = ", ".join(f"{o.metric}={v:.6g}" for o, v in zip(spec.objectives, study_best.values))
    spec.output_dir.mkdir(parents=True, exist_ok=True)
    path = spec.output_dir / "best_config.yaml"
    path.write_text(
        f"# Best trial #{study_best.number} of sweep {spec.study_name}: {value}\n"
        f"# Run it: {train_command(path)} [key=value ...]\n"
        + OmegaConf.to_yaml(OmegaConf.create(config))
    )
    return path


def train_command(path: Path) -> str:
    path = path.resolve()
    return f"python -m src.train --config-path {path.parent} --config-name {path.stem}"


def prepare_plots() -> None:
    """Imports what :func:`optuna_figures` needs (about 2 s: matplotlib, Optuna's plots,
    scikit-learn for the importances), so a sweep can do it while its workers run
    rather than after the last trial."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401
    import sklearn.ensemble  # noqa: F401  (Optuna's fANOVA importance evaluator)
    from optuna.visualization import matplotlib as optuna_plots  # noqa: F401


def optuna_figures(study: optuna.Study, spec: SweepSpec) -> dict[str, Callable[[], Any]]:
    """Optuna's plots of the study, as figure makers by artifact file name (for
    :meth:`src.tracking.TrackedRun.log_figures`, which skips one that fails);
    none before a trial completes."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return {}
    prepare_plots()
    from optuna.visualization import matplotlib as optuna_plots

    target = None
    target_name = spec.objectives[0].metric
    if spec.multi_objective:
        target = lambda t: t.values[0]  # noqa: E731
    plots: dict[str, Callable[[], Any]] = {
        "optimization_history": lambda: optuna_plots.plot_optimization_history(study, target=target, target_name=target_name),
        "param_importances": lambda: optuna_plots.plot_param_importances(study, target=target, target_name=target_name),
        "parallel_coordinate": lambda: optuna_plots.plot_parallel_coordinate(study, target=target, target_name=target_name),
        "slice": lambda: optuna_plots.plot_slice(study, target=target, target_name=target_name),
    }
    if spec.multi_objective:
        names = [o.metric for o in spec.objectives]
        plots["pareto_front"] = lambda: optuna_plots.plot_pareto_front(study, target_names=names)
    return {f"{name}.png": functools.partial(_sized_figure, draw) for name, draw in plots.items()}


def _sized_figure(draw: Callable[[], Any]) -> Any:
    """The figure of an Optuna plot, at least 8 x 5 inches, its warnings quiet
    (experimental ones, and logged ones such as a plot with too few trials)."""
    import numpy as np

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            figure = np.atleast_1d(draw()).flat[0].figure
    finally:
        optuna.logging.set_verbosity(verbosity)
    width, height = figure.get_size_inches()
    figure.set_size_inches(max(width, 8), max(height, 5))
    return figure


def log_to_run(tracked: Any, study: optuna.Study, spec: SweepSpec, summary: SweepSummary) -> None:
    """Best values and params, counts, best config, trials table and plots on the sweep run."""
    metrics: dict[str, float] = {**summary.counts}
    tags: dict[str, Any] = {}
    if summary.best and not spec.multi_objective:
        best = summary.best[0]
        metrics["best_value"] = best.value
        tags["best_trial"] = best.number
        tags.update({f"best.{k}": v for k, v in best.params.items()})
    elif summary.best:
        metrics["pareto_front_size"] = len(summary.best)
    if summary.epochs_saved_share is not None:
        metrics["epochs_saved_share"] = summary.epochs_saved_share
    tracked.log_metrics({k: v for k, v in metrics.items() if v is not None and math.isfinite(v)})
    tracked.set_tags(tags)
    tracked.log_text(top_trials_table(study, spec) + "\n", "top_trials.txt")
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = Path(tmp) / "trials.csv"
        study.trials_dataframe().to_csv(csv_path, index=False)
        tracked.log_artifact(csv_path)
    if summary.best_config is not None:
        tracked.log_artifact(summary.best_config)
    tracked.log_figures(optuna_figures(study, spec))


def _short(value: Any) -> Any:
    return f"{value:.4g}" if isinstance(value, float) else value


def counts_line(trials: Sequence[FrozenTrial], spec: SweepSpec) -> str:
    """The best value and the pruned and failed counts among ``trials`` (those a
    terminal has shown so far, so the counts never run ahead of its lines)."""
    pruned = sum(t.state == TrialState.PRUNED for t in trials)
    failed = sum(t.state == TrialState.FAIL for t in trials)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        best = "none yet"
    elif spec.multi_objective:
        best = f"Pareto front of {len(_pareto_front(complete, spec.directions))}"
    else:
        sign = -1 if spec.directions[0] == "maximize" else 1
        top = min(complete, key=lambda t: (sign * t.values[0], t.number))
        best = f"{top.values[0]:.6g} (#{top.number})"
    return f"best {best}, pruned {pruned}, failed {failed}"


def _pareto_front(trials: Sequence[FrozenTrial], directions: Sequence[str]) -> list[FrozenTrial]:
    signs = [-1 if d == "maximize" else 1 for d in directions]

    def dominates(a: FrozenTrial, b: FrozenTrial) -> bool:
        pairs = [(s * x, s * y) for s, x, y in zip(signs, a.values, b.values, strict=True)]
        return all(x <= y for x, y in pairs) and any(x < y for x, y in pairs)

    return [t for t in trials if not any(dominates(o, t) for o in trials)]


def format_values(trial: FrozenTrial) -> str:
    if trial.values is None:
        return ""
    return ", ".join(f"{v:.6g}" for v in trial.values)


def trial_line(
    trial: FrozenTrial, counted: int, total: int | None, suffix: Sequence[str], retried_as: int | None = None
) -> str:
    value = format_values(trial)
    detail = f" {value}" if value else ""
    if trial.state == TrialState.FAIL:
        detail += f" ({fail_reason(trial, retried_as)})"
    if trial.state == TrialState.PRUNED and EPOCHS_ATTR in trial.user_attrs:
        detail += f" at epoch {trial.user_attrs[EPOCHS_ATTR]}"
    if total and counted > total:  # workers raced for the last trials
        of = f" (extra: started before the study reached {total})"
    else:
        of = f"/{total}" if total else ""
    return f"trial {counted}{of}  #{trial.number} {trial.state.name}{detail}  | " + " | ".join(suffix)
