"""Sweep definitions: reading and checking them, with no heavy imports.

A sweep is written once, as a Hydra ``hparams_search`` config (``sweeps/<name>.yaml``,
which Hydra sees as ``conf/hparams_search/<name>.yaml``): the experiment and fixed
values its trials start from, ``optimized_metric``, and the sweeper's settings under
``hydra.sweeper`` with the search space in Hydra's override grammar. Both
``python -m src.sweep sweeps/<name>.yaml`` and ``python -m src.train -m
hparams_search=<name>`` (through ``hydra_plugins/mlplab_sweeper``) read it here into
one :class:`~src.sweeps.definition.SweepSpec`; so does a search space given on the
command line of ``python -m src.train -m``.

Everything is checked before any trial runs: a bad setting gives one
:class:`~src.errors.ConfigError` line.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from src.config import CONF_DIR, Composer, has_key, parse_overrides, validate
from src.errors import ConfigError, first_line
from src.sweeps.definition import PRUNER_CLASSES, SAMPLER_CLASSES, Objective, Param, SweepSpec

DIRECTIONS = ("maximize", "minimize")
SAMPLERS = tuple(SAMPLER_CLASSES)
PRUNERS = tuple(PRUNER_CLASSES)
_SINGLE_OBJECTIVE_SAMPLERS = ("cmaes",)
_SPLITS = ("train", "val", "test")
_PER_SPLIT = ("accuracy", "loss", "mae", "mse", "r2")
METRICS = (*(f"{s}_{m}" for s in _SPLITS for m in _PER_SPLIT), "n_params", "fit_seconds")
HPARAMS_SEARCH_DIR = CONF_DIR / "hparams_search"
"""Hydra's ``hparams_search`` group: a link to the project's ``sweeps/``."""
SWEEPER_KEYS = (
    "study_name", "storage", "n_trials", "n_jobs", "workers", "timeout", "direction",
    "sampler", "pruner", "params", "heartbeat",
)
"""The keys of ``hydra.sweeper``: hydra-optuna-sweeper's, plus workers (n_jobs
means the same), pruner, timeout and heartbeat."""


def load_spec(path: str | Path, extra_overrides: Sequence[str] = (), **changes: Any) -> SweepSpec:
    """Reads and checks a sweep file; ``changes`` replace its settings (CLI values:
    n_trials, timeout, study_name, storage, workers).

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
    where = f"sweep {path.name}"
    sweeper = (raw.get("hydra") or {}).get("sweeper") if isinstance(raw.get("hydra"), dict) else None
    if not isinstance(sweeper, dict):
        raise ConfigError(
            f"{where}: a sweep is an hparams_search config with its settings under hydra.sweeper "
            "(see sweeps/xor_lr_activation.yaml)"
        )
    changes = {k: v for k, v in changes.items() if v is not None}
    return spec_from_sweeper(
        where, path, sweeper, raw.get("optimized_metric"), _hparams_search(path), extra_overrides, **changes
    )


def spec_from_sweeper(
    where: str,
    path: Path | None,
    sweeper: Mapping[str, Any],
    optimized_metric: Any,
    base: Sequence[str],
    extra_overrides: Sequence[str] = (),
    space: Mapping[str, Any] | None = None,
    **changes: Any,
) -> SweepSpec:
    """Checks a Hydra sweeper's settings (``hydra.sweeper``) into a spec.

    Args:
        where: How messages name the sweep.
        path: The hparams_search file, if there is one.
        sweeper: The settings: see :data:`SWEEPER_KEYS`.
        optimized_metric: The metric, or list of metrics, the sweep optimizes.
        base: Overrides that choose what every trial starts from.
        extra_overrides: Further overrides applied to every trial.
        space: Search-space entries from the command line, over the file's.
        changes: Settings that replace the sweeper's (CLI values).
    """
    sweeper = {k: v for k, v in sweeper.items() if k not in ("_target_", "_recursive_")}
    unknown = sorted(set(sweeper) - set(SWEEPER_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown hydra.sweeper key {unknown[0]}; allowed keys: {', '.join(SWEEPER_KEYS)}")
    sweeper.update(changes)
    if "workers" in changes:  # the command line's, over the file's n_jobs
        sweeper.pop("n_jobs", None)
    metrics = _as_list(optimized_metric) or [_default_metric(where, [*base, *extra_overrides])]
    directions = _as_list(sweeper.get("direction") or "minimize")
    if len(metrics) != len(directions):
        raise ConfigError(
            f"{where}: optimized_metric names {len(metrics)} metric(s) and hydra.sweeper.direction "
            f"{len(directions)}; give one direction per metric"
        )
    workers, n_jobs = sweeper.pop("workers", None), sweeper.pop("n_jobs", None)
    if workers is not None and n_jobs is not None and workers != n_jobs:
        raise ConfigError(f"{where}: workers={workers} and n_jobs={n_jobs} say the same thing: give one")
    params, fixed = _search_space(where, {**(sweeper.get("params") or {}), **(space or {})})
    if not params:
        raise ConfigError(
            f"{where}: nothing to search: give hydra.sweeper.params, or a range on the command line "
            "(choice, interval, range)"
        )
    raw = {
        **sweeper,
        "objectives": [
            {"metric": m, "direction": str(d).lower() if isinstance(d, str) else d}
            for m, d in zip(metrics, directions)
        ],
        "params": params,
        "sampler": _from_target(where, "sampler", sweeper.get("sampler"), SAMPLER_CLASSES),
        "pruner": _from_target(where, "pruner", sweeper.get("pruner"), PRUNER_CLASSES),
        "workers": workers if workers is not None else n_jobs,
    }
    raw.pop("direction", None)
    study_name = sweeper.get("study_name") or (path.stem if path else None)
    if not study_name:
        raise ConfigError(f"{where}: name the study: hydra.sweeper.study_name=NAME")
    raw["study_name"] = study_name
    return _checked(where, path, raw, (*base, *fixed), tuple(extra_overrides))


def _default_metric(where: str, base: Sequence[str]) -> str:
    """The loss on the validation split if the trials have one, else on the training data."""
    with Composer() as composer:
        try:
            cfg = composer.compose(base)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return "val_loss" if cfg.data.get("val_size") else "train_loss"


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _hparams_search(path: Path) -> tuple[str, ...]:
    """The overrides that make Hydra compose a Hydra-form sweep file, for every trial."""
    folder = path.resolve().parent
    if folder == HPARAMS_SEARCH_DIR.resolve():
        return (f"hparams_search={path.stem}",)
    if folder.name == "hparams_search":
        return (f"hydra.searchpath=[file://{folder.parent}]", f"hparams_search={path.stem}")
    raise ConfigError(
        f"sweep {path.name} is a Hydra config, so Hydra must find it: put it in sweeps/ "
        "or in a folder named hparams_search"
    )


def _from_target(where: str, kind: str, raw: Any, classes: Mapping[str, str]) -> Any:
    """A sampler or pruner given the Hydra way (``_target_: optuna.samplers.TPESampler``
    and its arguments) as the name and settings the spec keeps."""
    if not isinstance(raw, Mapping) or "_target_" not in raw:
        return raw
    target = str(raw["_target_"])
    by_class = {f"optuna.{kind}s.{cls}": name for name, cls in classes.items()}
    if target not in by_class:
        raise ConfigError(f"{where}: unsupported {kind} {target}; choose one of {', '.join(by_class)}")
    return {"name": by_class[target], **{k: v for k, v in raw.items() if k != "_target_"}}


def _search_space(where: str, entries: Mapping[str, Any]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Hydra's sweep grammar as typed params; entries that do not sweep are fixed
    overrides. ``range`` ends before its stop, as everywhere in Hydra (and unlike
    hydra-optuna-sweeper, whose Optuna range includes it)."""
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep, Transformer

    params: dict[str, dict[str, Any]] = {}
    fixed = []
    for key, value in entries.items():
        text = value if isinstance(value, str) else json.dumps(value)  # a plain value, in the grammar
        try:
            (override,) = parse_overrides([f"{key}={text}"])
        except ConfigError as exc:
            raise ConfigError(f"{where}: params.{key}: {exc}") from None
        sweep = override.value()
        if not override.is_sweep_override():
            fixed.append(f"{key}={text}")
        elif isinstance(sweep, IntervalSweep):
            unknown = sorted(set(sweep.tags) - {"log"})
            if unknown:
                raise ConfigError(f"{where}: params.{key}: unknown tag {unknown[0]}; interval takes tag(log, ...)")
            params[key] = {"type": "float", "low": sweep.start, "high": sweep.end, "log": "log" in sweep.tags}
        elif isinstance(sweep, RangeSweep) and not sweep.shuffle:
            values = list(override.sweep_iterator(transformer=Transformer.encode))
            if not values:
                raise ConfigError(f"{where}: params.{key}: {text} is empty")
            kind = "int" if all(isinstance(v, int) for v in values) else "float"
            params[key] = {"type": kind, "low": values[0], "high": values[-1], "step": sweep.step}
        elif isinstance(sweep, (ChoiceSweep, RangeSweep)):
            params[key] = {"type": "categorical",
                           "choices": list(override.sweep_iterator(transformer=Transformer.encode))}
        else:
            raise ConfigError(f"{where}: params.{key}: {text} is not a search space; use choice, range or interval")
    return params, fixed


def _checked(where: str, path: Path | None, raw: dict[str, Any], base: tuple[str, ...], extra: tuple[str, ...]) -> SweepSpec:
    objectives = _objectives(where, raw["objectives"])
    n_trials = raw.get("n_trials")
    timeout = raw.get("timeout")
    if n_trials is None and timeout is None:
        raise ConfigError(f"{where}: give n_trials, timeout or both")
    if n_trials is not None and (isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1):
        raise ConfigError(f"{where}: bad value n_trials={n_trials!r}: expected an integer > 0")
    if timeout is not None and (not isinstance(timeout, (int, float)) or timeout <= 0):
        raise ConfigError(f"{where}: bad value timeout={timeout!r}: expected seconds > 0")
    workers = raw.get("workers") or 1
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"{where}: bad value workers={workers!r}: expected an integer >= 1")
    sampler = _component(where, "sampler", raw.get("sampler"), SAMPLERS, "tpe")
    multi = len(objectives) > 1
    pruner = _component(where, "pruner", raw.get("pruner"), PRUNERS, "none" if multi else "median")
    if multi and sampler["name"] in _SINGLE_OBJECTIVE_SAMPLERS:
        raise ConfigError(f"{where}: sampler {sampler['name']} takes a single objective; use nsgaii or tpe")
    if multi and pruner["name"] != "none":
        raise ConfigError(f"{where}: Optuna cannot prune a multi-objective study; set the pruner to none")
    params = tuple(_param(where, key, value) for key, value in raw["params"].items())
    if sampler["name"] == "grid":
        for param in params:
            if param.type == "float":
                raise ConfigError(
                    f"{where}: the grid sampler needs listed values; make {param.key} categorical"
                )
    heartbeat = raw.get("heartbeat") or {}
    spec = SweepSpec(
        label=where,
        path=path,
        study_name=str(raw["study_name"]),
        experiment="",  # known once the base is composed
        base=tuple(base),
        params=params,
        objectives=objectives,
        n_trials=n_trials,
        timeout=timeout,
        sampler=sampler,
        pruner=pruner,
        storage=raw.get("storage") or None,
        workers=workers,
        heartbeat_interval=int(heartbeat.get("interval", 10)),
        heartbeat_grace=int(heartbeat.get("grace", 30)),
        extra_overrides=extra,
    )
    spec = _check_against_config(spec)
    from src.sweeps.study import make_pruner, make_sampler

    make_sampler(spec)  # unknown sampler or pruner settings fail here, not in a worker
    make_pruner(spec, epochs=1)
    return spec


def _objectives(where: str, entries: list[Any]) -> tuple[Objective, ...]:
    objectives = []
    for entry in entries:
        metric, direction = entry["metric"], entry["direction"]
        if metric not in METRICS:
            raise ConfigError(f"{where}: bad objective metric {metric!r}; choose one of {', '.join(METRICS)}")
        if direction not in DIRECTIONS:
            raise ConfigError(f"{where}: bad direction {direction!r} for {metric}; choose maximize or minimize")
        objectives.append(Objective(metric, direction, _per_epoch_name(metric)))
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


def _check_against_config(spec: SweepSpec) -> SweepSpec:
    """Every key exists, every value in range, every objective measurable; returns
    the spec with its MLflow experiment."""
    where = spec.label
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
            "set the pruner to none (hydra.sweeper.pruner=none)"
        )
    if plain["experiment_name"] == "default":
        raise ConfigError(
            f"{where}: choose an experiment: +experiment=NAME, or /experiment: NAME in the "
            "hparams_search file's defaults"
        )
    return dataclasses.replace(spec, experiment=plain["experiment_name"])
