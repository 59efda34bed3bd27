"""Sweep definitions (``sweeps/<name>.yaml``): loading and checking, no heavy imports.

A sweep names a base experiment and fixed overrides, a search space over config
keys, one objective (or several, for a Pareto front), the sampler and pruner, and
how many trials to run. Everything is checked before any trial runs: a bad file
gives one :class:`~src.errors.ConfigError` line.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from src.config import Composer, has_key, validate
from src.errors import ConfigError, first_line
from src.sweeps.definition import Objective, Param, SweepSpec

DIRECTIONS = ("maximize", "minimize")
SAMPLERS = ("tpe", "random", "cmaes", "qmc", "grid", "nsgaii")
PRUNERS = ("median", "hyperband", "successive_halving", "none")
_SINGLE_OBJECTIVE_SAMPLERS = ("cmaes",)
_SPLITS = ("train", "val", "test")
_PER_SPLIT = ("accuracy", "loss", "mae", "mse", "r2")
METRICS = (*(f"{s}_{m}" for s in _SPLITS for m in _PER_SPLIT), "n_params", "fit_seconds")
_TOP_KEYS = (
    "study_name", "description", "experiment", "overrides", "params", "objective",
    "objectives", "n_trials", "timeout", "sampler", "pruner", "heartbeat",
)


def load_spec(path: str | Path, extra_overrides: Sequence[str] = (), **changes: Any) -> SweepSpec:
    """Reads and checks a sweep file; ``changes`` replace top-level fields (CLI values).

    Raises:
        ConfigError: the file is missing, malformed, or names a bad key or value.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"sweep file {path} is not valid YAML: {first_line(exc)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"sweep file {path} must be a mapping of keys to values")
    raw.update({k: v for k, v in changes.items() if v is not None})
    spec = _parse(path, raw, tuple(extra_overrides))
    _check_against_config(spec)
    from src.sweeps.study import make_pruner, make_sampler

    make_sampler(spec)  # unknown sampler or pruner settings fail here, not in a worker
    make_pruner(spec, epochs=1)
    return spec


def _parse(path: Path, raw: dict[str, Any], extra: tuple[str, ...]) -> SweepSpec:
    where = f"sweep {path.name}"
    unknown = sorted(set(raw) - set(_TOP_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]}; allowed keys: {', '.join(_TOP_KEYS)}")
    for key in ("experiment", "params"):
        if not raw.get(key):
            raise ConfigError(f"{where}: missing {key}")
    if ("objective" in raw) == ("objectives" in raw):
        raise ConfigError(f"{where}: give either objective (one) or objectives (a list)")
    objectives = _objectives(where, raw.get("objectives") or [raw["objective"]])
    n_trials = raw.get("n_trials")
    timeout = raw.get("timeout")
    if n_trials is None and timeout is None:
        raise ConfigError(f"{where}: give n_trials, timeout or both")
    if n_trials is not None and (isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1):
        raise ConfigError(f"{where}: bad value n_trials={n_trials!r}: expected an integer > 0")
    if timeout is not None and (not isinstance(timeout, (int, float)) or timeout <= 0):
        raise ConfigError(f"{where}: bad value timeout={timeout!r}: expected seconds > 0")
    sampler = _component(where, "sampler", raw.get("sampler"), SAMPLERS, "tpe")
    multi = len(objectives) > 1
    pruner = _component(where, "pruner", raw.get("pruner"), PRUNERS, "none" if multi else "median")
    if multi and sampler["name"] in _SINGLE_OBJECTIVE_SAMPLERS:
        raise ConfigError(f"{where}: sampler {sampler['name']} takes a single objective; use nsgaii or tpe")
    if multi and pruner["name"] != "none":
        raise ConfigError(f"{where}: Optuna cannot prune a multi-objective study; set pruner: none")
    if not isinstance(raw["params"], dict):
        raise ConfigError(f"{where}: params must map config keys to ranges")
    params = tuple(_param(where, key, value) for key, value in raw["params"].items())
    if sampler["name"] == "grid":
        for param in params:
            if param.type == "float":
                raise ConfigError(
                    f"{where}: the grid sampler needs listed values; make {param.key} categorical"
                )
    heartbeat = raw.get("heartbeat") or {}
    overrides = raw.get("overrides") or []
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise ConfigError(f"{where}: overrides must be a list of key=value strings")
    return SweepSpec(
        path=path,
        study_name=str(raw.get("study_name") or path.stem),
        experiment=str(raw["experiment"]),
        overrides=tuple(overrides),
        params=params,
        objectives=objectives,
        n_trials=n_trials,
        timeout=timeout,
        sampler=sampler,
        pruner=pruner,
        heartbeat_interval=int(heartbeat.get("interval", 10)),
        heartbeat_grace=int(heartbeat.get("grace", 30)),
        description=str(raw.get("description", "")),
        extra_overrides=extra,
    )


def _objectives(where: str, entries: list[Any]) -> tuple[Objective, ...]:
    objectives = []
    for entry in entries:
        if not isinstance(entry, dict) or "metric" not in entry:
            raise ConfigError(f"{where}: an objective needs metric and direction, got {entry!r}")
        unknown = sorted(set(entry) - {"metric", "direction", "report"})
        if unknown:
            raise ConfigError(f"{where}: unknown objective key {unknown[0]}; allowed: metric, direction, report")
        metric, direction = entry["metric"], entry.get("direction")
        if metric not in METRICS:
            raise ConfigError(f"{where}: bad objective metric {metric!r}; choose one of {', '.join(METRICS)}")
        if direction not in DIRECTIONS:
            raise ConfigError(f"{where}: bad direction {direction!r} for {metric}; choose maximize or minimize")
        report = entry.get("report") or _per_epoch_name(metric)
        objectives.append(Objective(metric, direction, report))
    return tuple(objectives)


def _per_epoch_name(metric: str) -> str | None:
    """The per-epoch Keras metric that tracks a final metric, if there is one."""
    split, _, name = metric.partition("_")
    if split == "train" and name in ("accuracy", "loss", "mae"):
        return name
    if split == "val" and name in ("accuracy", "loss", "mae"):
        return metric
    return None


def _component(where: str, kind: str, raw: Any, names: Sequence[str], default: str) -> dict[str, Any]:
    settings = {"name": raw} if isinstance(raw, str) else dict(raw or {})
    settings.setdefault("name", default)
    if settings["name"] not in names:
        raise ConfigError(f"{where}: unknown {kind} {settings['name']!r}; choose one of {', '.join(names)}")
    return settings


def _param(where: str, key: str, raw: Any) -> Param:
    if not isinstance(raw, dict) or raw.get("type") not in ("float", "int", "categorical"):
        raise ConfigError(f"{where}: params.{key} needs type: float, int or categorical")
    kind = raw["type"]
    allowed = {"float": {"type", "low", "high", "log", "step"}, "int": {"type", "low", "high", "log", "step"},
               "categorical": {"type", "choices"}}[kind]
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(f"{where}: params.{key}: unknown field {unknown[0]}; a {kind} takes {', '.join(sorted(allowed))}")
    if kind == "categorical":
        choices = raw.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: params.{key}: choices must be a non-empty list")
        # Optuna's choices are scalars: a list (hidden_units) travels as its Hydra text.
        return Param(key, kind, choices=tuple(_scalar(c) for c in choices))
    low, high = raw.get("low"), raw.get("high")
    number = int if kind == "int" else (int, float)
    for name, value in (("low", low), ("high", high)):
        if isinstance(value, bool) or not isinstance(value, number) or not math.isfinite(value):
            raise ConfigError(f"{where}: params.{key}.{name}={value!r}: expected a finite {kind}")
    if low > high:
        raise ConfigError(f"{where}: params.{key}: low={low} is greater than high={high}")
    log = bool(raw.get("log", False))
    if log and low <= 0:
        raise ConfigError(f"{where}: params.{key}: a log range needs low > 0, got low={low}")
    step = raw.get("step")
    if step is not None and (not isinstance(step, number) or step <= 0):
        raise ConfigError(f"{where}: params.{key}.step={step!r}: expected a number > 0")
    if step is not None and log:
        raise ConfigError(f"{where}: params.{key}: step and log cannot be combined")
    return Param(key, kind, low=low, high=high, log=log, step=step)


def _scalar(choice: Any) -> Any:
    if isinstance(choice, (list, tuple)):
        return "[" + ",".join(str(_scalar(c)) for c in choice) + "]"
    if isinstance(choice, dict):
        raise ConfigError(f"a categorical choice cannot be a mapping: {choice!r}")
    return choice


def _check_against_config(spec: SweepSpec) -> None:
    """Every key exists, every value in range, every objective measurable."""
    where = f"sweep {spec.path.name}"
    with Composer() as composer:
        try:
            base = composer.compose(spec.base_overrides())
            plain = validate(base)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        for param in spec.params:
            options = composer.group_options(param.key)
            if not options and not has_key(base, param.key):
                raise ConfigError(f"{where}: params.{param.key} is not a config key or group")
            for value in param.extremes():
                try:
                    validate(composer.compose([*spec.base_overrides(), param.override(value)]))
                except ConfigError as exc:
                    raise ConfigError(f"{where}: params.{param.key}: {exc}") from None
    data = plain["data"]
    for objective in spec.objectives:
        split = objective.metric.split("_")[0]
        if split == "val" and not data.get("val_size"):
            raise ConfigError(
                f"{where}: objective {objective.metric} needs a validation split; add data.val_size=0.2 to overrides"
            )
        if split == "test" and "test_size" not in data:
            raise ConfigError(f"{where}: objective {objective.metric} needs a test split, and {data['name']} has none")
    if spec.pruner["name"] != "none" and spec.objectives[0].report is None:
        raise ConfigError(
            f"{where}: the pruner needs a per-epoch metric for {spec.objectives[0].metric}; "
            "set objective.report (e.g. val_loss) or pruner: none"
        )
