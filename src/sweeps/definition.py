"""What a checked sweep definition holds: the search space, objectives and
settings, as plain frozen dataclasses. :mod:`src.sweeps.spec` reads and checks a
sweep (a file, or the Hydra sweeper's settings) into them; :mod:`src.sweeps.study`
builds Optuna's objects from them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Where a sweep's command writes what it keeps beside the stores: the best config,
# the workers' logs (mlruns/sweeps/<study_name>/).
OUTPUT_DIR = Path("mlruns") / "sweeps"

# Each sampler and pruner a sweep may name, and its Optuna class (a Hydra config
# names the class: _target_: optuna.samplers.TPESampler).
SAMPLER_CLASSES = {
    "tpe": "TPESampler", "random": "RandomSampler", "cmaes": "CmaEsSampler", "qmc": "QMCSampler",
    "grid": "GridSampler", "nsgaii": "NSGAIISampler",
}
PRUNER_CLASSES = {
    "median": "MedianPruner", "hyperband": "HyperbandPruner",
    "successive_halving": "SuccessiveHalvingPruner", "none": "NopPruner",
}


@dataclass(frozen=True)
class Param:
    """One dimension of the search space: a config key (or group) and its range."""

    key: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def override(self, value: Any) -> str:
        """The Hydra override that sets this key to ``value``."""
        return f"{self.key}={value}"

    def extremes(self) -> list[Any]:
        """Values that together exercise every bound of the range."""
        return list(self.choices) if self.type == "categorical" else [self.low, self.high]


@dataclass(frozen=True)
class Objective:
    metric: str
    direction: str
    report: str | None = None  # the per-epoch metric reported to the pruner


@dataclass(frozen=True)
class SweepSpec:
    """A checked sweep definition.

    Attributes:
        label: How messages name the sweep ("sweep xor_lr_activation.yaml").
        path: The file it was read from; None for a search space given on the
            command line of ``python -m src.train -m``.
        experiment: The MLflow experiment its trials are filed under.
        base: Overrides that choose what every trial starts from: the
            experiment, or the ``hparams_search`` config, and fixed values.
        extra_overrides: Overrides from the command line, applied to every trial.
    """

    label: str
    path: Path | None
    study_name: str
    experiment: str
    base: tuple[str, ...]
    params: tuple[Param, ...]
    objectives: tuple[Objective, ...]
    n_trials: int | None
    timeout: float | None
    sampler: dict[str, Any]
    pruner: dict[str, Any]
    storage: str | None = None
    workers: int = 1
    heartbeat_interval: int = 10
    heartbeat_grace: int = 30
    extra_overrides: tuple[str, ...] = field(default=())

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    @property
    def output_dir(self) -> Path:
        return OUTPUT_DIR / self.study_name

    def base_overrides(self) -> list[str]:
        """Overrides shared by every trial."""
        return [*self.base, *self.extra_overrides]

    def trial_overrides(self, values: Mapping[str, Any]) -> list[str]:
        """The full override list of a trial with the sampled ``values``."""
        by_key = {p.key: p for p in self.params}
        return [*self.base_overrides(), *(by_key[k].override(v) for k, v in values.items())]
