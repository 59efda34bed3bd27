"""What a checked sweep definition holds: the search space, objectives and
settings, as plain frozen dataclasses. :mod:`src.sweeps.spec` reads and checks a
file into them; :mod:`src.sweeps.study` builds Optuna's objects from them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


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
        report_metric: Per-epoch metric the pruner watches (single objective only).
    """

    path: Path
    study_name: str
    experiment: str
    overrides: tuple[str, ...]
    params: tuple[Param, ...]
    objectives: tuple[Objective, ...]
    n_trials: int | None
    timeout: float | None
    sampler: dict[str, Any]
    pruner: dict[str, Any]
    heartbeat_interval: int = 10
    heartbeat_grace: int = 30
    description: str = ""
    extra_overrides: tuple[str, ...] = field(default=())

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    def base_overrides(self) -> list[str]:
        """Overrides shared by every trial: experiment, fixed ones, the command line's."""
        return [f"+experiment={self.experiment}", *self.overrides, *self.extra_overrides]

    def trial_overrides(self, values: Mapping[str, Any]) -> list[str]:
        """The full override list of a trial with the sampled ``values``."""
        by_key = {p.key: p for p in self.params}
        return [*self.base_overrides(), *(by_key[k].override(v) for k, v in values.items())]
