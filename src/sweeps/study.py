"""Optuna's samplers, pruners and the study, built from a sweep definition."""

from __future__ import annotations

import warnings
import zlib
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from src.errors import ConfigError, first_line
from src.sweeps.definition import PRUNER_CLASSES, SAMPLER_CLASSES, Param, SweepSpec

FAILED_FOR_GOOD = "failed_for_good"
"""User attr of a trial that failed on its own config (NaN loss, bad combination).

Such a trial counts toward ``n_trials``; a trial failed because its worker died or
was interrupted does not, and is run again."""


def make_sampler(
    spec: SweepSpec, worker: int = 0, trials_before: int = 0, machine: str = ""
) -> optuna.samplers.BaseSampler:
    """The sweep's sampler, seeded per worker and per resume.

    Each worker, and each resumed run of the sweep (``trials_before`` trials
    already in the study), derives its own seed from the sweep's: reusing one
    seed would propose the same params again. On a shared storage, commands on
    several machines may start with the same worker index and trial count, so
    ``machine`` (host and process) enters the seed too.
    """
    settings = dict(spec.sampler)
    name = settings.pop("name")
    seed = settings.pop("seed", None)
    if seed is not None and (worker or trials_before or machine):
        seed = zlib.crc32(f"{seed}:{worker}:{trials_before}:{machine}".encode()) & 0x7FFFFFFF
    if name == "grid":
        settings["search_space"] = grid_space(spec.params)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return getattr(optuna.samplers, SAMPLER_CLASSES[name])(seed=seed, **settings)
    except (TypeError, ValueError, ImportError) as exc:
        raise ConfigError(f"{spec.label}: sampler {name}: {first_line(exc)}") from None


def make_pruner(spec: SweepSpec, epochs: int) -> optuna.pruners.BasePruner:
    """The sweep's pruner; Hyperband's ``max_resource`` defaults to the epochs."""
    settings = dict(spec.pruner)
    name = settings.pop("name")
    if name == "hyperband":
        settings.setdefault("max_resource", epochs)
    try:
        return getattr(optuna.pruners, PRUNER_CLASSES[name])(**settings)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{spec.label}: pruner {name}: {first_line(exc)}") from None


def grid_space(params: tuple[Param, ...]) -> dict[str, list[Any]]:
    space = {}
    for param in params:
        if param.type == "categorical":
            space[param.key] = list(param.choices)
        else:  # int: every step of the range
            step = int(param.step or 1)
            space[param.key] = list(range(int(param.low), int(param.high) + 1, step))
    return space


def suggest(trial: optuna.Trial, param: Param) -> Any:
    if param.type == "categorical":
        return trial.suggest_categorical(param.key, list(param.choices))
    if param.type == "int":
        return trial.suggest_int(param.key, int(param.low), int(param.high), step=int(param.step or 1), log=param.log)
    return trial.suggest_float(param.key, param.low, param.high, step=param.step, log=param.log)


def is_counted(trial: FrozenTrial) -> bool:
    """Whether a trial counts toward ``n_trials``: complete, pruned, or failed for good."""
    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
        trial.state == TrialState.FAIL and bool(trial.user_attrs.get(FAILED_FOR_GOOD))
    )


def counted_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Trials that count toward ``n_trials``."""
    return [t for t in study.get_trials(deepcopy=False) if is_counted(t)]


class StopWhenDone:
    """Stops ``study.optimize`` once the study holds ``n_trials`` counted trials,
    whichever worker finished them."""

    def __init__(self, n_trials: int | None) -> None:
        self.n_trials = n_trials

    def done(self, study: optuna.Study) -> bool:
        return self.n_trials is not None and len(counted_trials(study)) >= self.n_trials

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if self.done(study):
            study.stop()
