"""Composing and validating run configurations, with no heavy imports.

Everything here needs only Hydra and OmegaConf, so a bad command line is reported
in about a second, before TensorFlow or MLflow is imported. A mistake is raised as
:class:`~src.errors.ConfigError` with one line naming the bad value and what is
allowed.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from src.errors import ConfigError, first_line

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
CONFIG_NAME = "config"
DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"
"""The local store of ``conf/tracking/local.yaml`` when ``MLFLOW_TRACKING_URI`` is unset."""

ACTIVATIONS = ("linear", "sigmoid", "tanh", "relu", "leaky_relu", "elu", "gelu", "selu")
OUTPUT_ACTIVATIONS = (*ACTIVATIONS, "softmax")
LOSSES = (
    "mse",
    "binary_crossentropy",
    "categorical_crossentropy",
    "sparse_categorical_crossentropy",
    "mae",
    "huber",
)
# The first loss of each task is the one used when trainer.loss is null.
LOSSES_BY_TASK = {
    "binary": ("binary_crossentropy", "mse", "mae", "huber"),
    "multiclass": ("sparse_categorical_crossentropy", "categorical_crossentropy", "mse", "mae", "huber"),
    "regression": ("mse", "mae", "huber"),
}


# --------------------------------------------------------------------------- rules
class Rule:
    """A check of one config value; raises ConfigError naming the value."""

    expected: str = "a value"

    def check(self, path: str, value: Any) -> None:
        if not self.accepts(value):
            raise ConfigError(f"bad value {path}={value!r}: expected {self.expected}")

    def accepts(self, value: Any) -> bool:
        raise NotImplementedError


class Number(Rule):
    """A finite int or float within optional bounds."""

    def __init__(
        self,
        *,
        gt: float | None = None,
        ge: float | None = None,
        lt: float | None = None,
        le: float | None = None,
        integer: bool = False,
    ) -> None:
        self.gt, self.ge, self.lt, self.le, self.integer = gt, ge, lt, le, integer
        kind = "an integer" if integer else "a finite number"
        bounds = [
            f"{op} {bound:g}"
            for op, bound in ((">", gt), (">=", ge), ("<", lt), ("<=", le))
            if bound is not None
        ]
        self.expected = kind + (" " + " and ".join(bounds) if bounds else "")

    def accepts(self, value: Any) -> bool:
        if isinstance(value, bool):
            return False
        if self.integer:
            if not isinstance(value, int):
                return False
        elif not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        return not (
            (self.gt is not None and value <= self.gt)
            or (self.ge is not None and value < self.ge)
            or (self.lt is not None and value >= self.lt)
            or (self.le is not None and value > self.le)
        )


class Choice(Rule):
    def __init__(self, options: Iterable[Any]) -> None:
        self.options = tuple(options)
        self.expected = "one of " + ", ".join(map(str, self.options))

    def accepts(self, value: Any) -> bool:
        return any(value == o and type(value) is type(o) for o in self.options)


class Boolean(Rule):
    expected = "true or false"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, bool)


class Text(Rule):
    expected = "a non-empty string"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, str) and bool(value.strip())


class Table(Rule):
    expected = "a mapping of keys to values"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, dict)


class Nullable(Rule):
    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.expected = f"null or {rule.expected}"

    def accepts(self, value: Any) -> bool:
        return value is None or self.rule.accepts(value)


class ListOf(Rule):
    def __init__(self, item: Rule) -> None:
        self.item = item
        self.expected = f"a list of {_plural(item.expected)}"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, list) and all(self.item.accepts(v) for v in value)


def _plural(expected: str) -> str:
    return re.sub(r"^an? (\w+)", r"\1s", expected)


Fields = Mapping[str, Rule]


def _check_section(path: str, section: Any, fields: Fields, required: Iterable[str] = ()) -> None:
    if not isinstance(section, dict):
        raise ConfigError(f"bad value {path}={section!r}: expected a mapping")
    unknown = sorted(set(section) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown config key {path}.{unknown[0]}; allowed keys in {path}: "
            + ", ".join(sorted(fields))
        )
    for key in required:
        if section.get(key) is None:
            raise ConfigError(f"missing config value {path}.{key}")
    for key, rule in fields.items():
        if key in section:
            rule.check(f"{path}.{key}", section[key])


def _check_target(path: str, section: dict, by_target: Mapping[str | None, Fields]) -> None:
    """Checks a section whose allowed keys depend on its ``_target_``."""
    target = section.get("_target_")
    if target not in by_target:
        allowed = ", ".join(str(t) for t in by_target)
        raise ConfigError(f"bad value {path}._target_={target!r}: expected one of {allowed}")
    _check_section(path, section, {"_target_": Nullable(Text()), **by_target[target]})


# ---------------------------------------------------------------------- the schema
_PROBABILITY = Number(ge=0, lt=1)
_PARTIAL = {"_partial_": Choice([True])}

_SPLITS: Fields = {
    "name": Text(),
    "test_size": Number(gt=0, lt=1),
    "val_size": _PROBABILITY,
    "standardize": Boolean(),
    "random_state": Number(ge=0, integer=True),
}
_DATA_DIR: Fields = {"dir": Nullable(Text())}
DATA: dict[str | None, Fields] = {
    "src.data.toy.load_xor": {"name": Text()},
    "src.data.toy.load_iris": _SPLITS,
    "src.data.toy.load_digits": _SPLITS,
    "src.data.toy.load_iris_setosa_2d": {"name": Text(), "standardize": Boolean()},
    "src.data.images.load_images": {
        "name": Text(),
        "dataset": Choice(["mnist", "fashion_mnist"]),
        **_DATA_DIR,
        "val_size": _PROBABILITY,
        "train_limit": Nullable(Number(gt=0, integer=True)),
        "test_limit": Nullable(Number(gt=0, integer=True)),
        "random_state": Number(ge=0, integer=True),
    },
    "src.data.tables.load_auto_mpg": {**_SPLITS, **_DATA_DIR},
    "src.data.tables.load_csv": {
        **_SPLITS,
        "path": Text(),
        "target": Text(),
        "task": Choice(["classification", "regression"]),
        "features": Nullable(ListOf(Text())),
    },
}
# Any dataset: rebalance the classes of its training split (see src/data/resample.py).
RESAMPLE = Choice(["none", "oversample", "smote"])

MODEL: dict[str | None, Fields] = {
    "src.models.keras_mlp.KerasMLP": {
        "hidden_units": ListOf(Number(gt=0, integer=True)),
        "activation": Choice(ACTIVATIONS),
        "output_activation": Nullable(Choice(OUTPUT_ACTIVATIONS)),
        "normalize": Boolean(),
    },
    "src.models.numpy_mlp.NumpyMLP": {
        "hidden_units": ListOf(Number(gt=0, integer=True)),
        "activation": Choice(["linear", "sigmoid", "tanh", "relu"]),
        "output_activation": Nullable(Choice(["linear", "sigmoid", "tanh", "relu"])),
        "use_bias": Boolean(),
        "shuffle": Boolean(),
    },
}

_OPTIMIZER_COMMON: Fields = {
    **_PARTIAL,
    "learning_rate": Number(gt=0),
    "weight_decay": Nullable(Number(ge=0)),
    "clipnorm": Nullable(Number(gt=0)),
    "clipvalue": Nullable(Number(gt=0)),
    "epsilon": Number(gt=0),
}
OPTIMIZER: dict[str | None, Fields] = {
    "keras.optimizers.SGD": {
        **_OPTIMIZER_COMMON,
        "momentum": _PROBABILITY,
        "nesterov": Boolean(),
    },
    "keras.optimizers.RMSprop": {
        **_OPTIMIZER_COMMON,
        "rho": _PROBABILITY,
        "momentum": _PROBABILITY,
        "centered": Boolean(),
    },
    "keras.optimizers.Adagrad": {
        **_OPTIMIZER_COMMON,
        "initial_accumulator_value": Number(ge=0),
    },
    "keras.optimizers.Adam": {
        **_OPTIMIZER_COMMON,
        "beta_1": _PROBABILITY,
        "beta_2": _PROBABILITY,
        "amsgrad": Boolean(),
    },
}

_SEED = {"seed": Nullable(Number(ge=0, integer=True))}
INIT: dict[str | None, Fields] = {
    **{
        f"keras.initializers.{name}": {**_PARTIAL, **_SEED}
        for name in ("GlorotUniform", "GlorotNormal", "HeNormal", "HeUniform", "LecunNormal")
    },
    "keras.initializers.RandomNormal": {
        **_PARTIAL,
        **_SEED,
        "mean": Number(),
        "stddev": Number(gt=0),
    },
    "keras.initializers.Zeros": dict(_PARTIAL),
}

_FACTOR = Number(ge=0)
REGULARIZER: dict[str | None, Fields] = {
    None: {},
    "keras.regularizers.L1": {"l1": _FACTOR},
    "keras.regularizers.L2": {"l2": _FACTOR},
    "keras.regularizers.L1L2": {"l1": _FACTOR, "l2": _FACTOR},
}

TRAINER: Fields = {
    "epochs": Number(gt=0, integer=True),
    "batch_size": Nullable(Number(gt=0, integer=True)),
    "loss": Nullable(Choice(LOSSES)),
    "shuffle": Boolean(),
    "verbose": Choice([0, 1, 2]),
    "engine": Choice(["auto", "fit", "compiled"]),
    "jit_compile": Choice(["auto", True, False]),
    "divergence_factor": Nullable(Number(gt=1)),
    "divergence_threshold": Nullable(Number(gt=0)),
}
EARLY_STOPPING: Fields = {
    "enabled": Boolean(),
    "monitor": Nullable(Text()),
    "patience": Number(ge=0, integer=True),
    "min_delta": Number(ge=0),
    "restore_best_weights": Boolean(),
}
TRACKING: Fields = {
    "uri": Text(),
    "artifact_location": Nullable(Text()),
    "log_models": Boolean(),
    "plots": Boolean(),
}
LESSON: Fields = {
    "kind": Choice(["gd_quadratic"]),
    "start": Number(),
    "minimum": Number(),
    "offset": Number(),
    "learning_rates": ListOf(Number(gt=0)),
    "steps": Number(gt=0, integer=True),
}
TOP_LEVEL = (
    "experiment_name",
    "description",
    "lesson",
    "seed",
    "data",
    "model",
    "optimizer",
    "dropout",
    "init",
    "regularizer",
    "trainer",
    "baselines",
    "tracking",
)


def validate(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """Checks a composed run config and returns it resolved as plain containers.

    Raises:
        ConfigError: on the first unknown key, wrong type or out-of-range value.
    """
    plain = _resolve(cfg)
    unknown = sorted(set(plain) - set(TOP_LEVEL))
    if unknown:
        raise ConfigError(
            f"unknown config key {unknown[0]}; allowed top-level keys: {', '.join(TOP_LEVEL)}"
        )
    for key in TOP_LEVEL:
        if key not in plain:
            raise ConfigError(f"missing config key {key}")
    Text().check("experiment_name", plain["experiment_name"])
    Nullable(Text()).check("description", plain["description"])
    if plain["lesson"] is not None:
        _check_section("lesson", plain["lesson"], LESSON, required=LESSON)
    Number(ge=0, integer=True).check("seed", plain["seed"])
    _check_target("data", plain["data"], {t: {**f, "resample": RESAMPLE} for t, f in DATA.items()})
    data = plain["data"]
    if data.get("test_size", 0) + data.get("val_size", 0) >= 1:
        raise ConfigError(
            f"bad values data.test_size={data['test_size']!r} and data.val_size="
            f"{data['val_size']!r}: together they must leave training data (sum < 1)"
        )
    _check_target("model", plain["model"], MODEL)
    _check_target("optimizer", plain["optimizer"], OPTIMIZER)
    _check_section("dropout", plain["dropout"], {"rate": _PROBABILITY}, required=["rate"])
    _check_target("init", plain["init"], INIT)
    _check_target("regularizer", plain["regularizer"], REGULARIZER)
    trainer = plain["trainer"]
    _check_section(
        "trainer", trainer, {**TRAINER, "early_stopping": Table()}, required=["epochs"]
    )
    _check_section("trainer.early_stopping", trainer.get("early_stopping", {}), EARLY_STOPPING)
    baselines = plain["baselines"] or {}
    if not isinstance(baselines, dict):
        raise ConfigError(f"bad value baselines={baselines!r}: expected a mapping of named estimators")
    for name, spec in baselines.items():
        if not isinstance(spec, dict) or not Text().accepts(spec.get("_target_")):
            raise ConfigError(
                f"bad value baselines.{name}={spec!r}: expected a mapping with a _target_ "
                "such as sklearn.linear_model.Perceptron"
            )
    _check_section("tracking", plain["tracking"], TRACKING, required=["uri"])
    return plain


def resolve_loss(loss: str | None, task: str) -> str:
    """The Keras loss for ``task``: ``loss`` if it fits the task, else the task's default.

    Raises:
        ConfigError: ``loss`` is set but does not fit the task.
    """
    allowed = LOSSES_BY_TASK[task]
    if loss is None:
        return allowed[0]
    if loss not in allowed:
        raise ConfigError(
            f"bad value trainer.loss={loss!r}: a {task} task takes one of {', '.join(allowed)}"
        )
    return loss


def _resolve(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(dict(cfg))
    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # type: ignore[return-value]
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None)
        raise ConfigError(f"cannot resolve config value {key}: {first_line(exc)}") from None


# ---------------------------------------------------------------------- composing
_ABSENT = object()


def has_key(cfg: DictConfig, key: str) -> bool:
    """Whether the dotted ``key`` exists in ``cfg`` (its value may be null)."""
    return OmegaConf.select(cfg, key, default=_ABSENT) is not _ABSENT


class Composer:
    """Composes run configs from ``conf/`` with Hydra's compose API.

    Use as a context manager; compose many configs inside one ``with`` block
    (a sweep composes one per trial). Hydra composes in about 0.3 s, re-reading
    every file; since it applies plain value changes (``optimizer.learning_rate=0.1``)
    last, after the files are merged, the composer keeps the merge of the other
    overrides and applies the value changes to a copy of it, as Hydra would.
    """

    _CACHE_SIZE = 16

    def __init__(self, config_dir: Path = CONF_DIR, config_name: str = CONFIG_NAME) -> None:
        self.config_dir = config_dir
        self.config_name = config_name
        self._context: Any = None
        self._merged: dict[tuple[str, ...], DictConfig] = {}
        self._groups: dict[str, list[str]] = {}

    def __enter__(self) -> Composer:
        GlobalHydra.instance().clear()
        if not (self.config_dir / f"{self.config_name}.yaml").is_file():
            raise ConfigError(f"no config {self.config_name}.yaml in {self.config_dir}")
        self._context = initialize_config_dir(
            config_dir=str(self.config_dir), version_base="1.3", job_name="mlplab"
        )
        self._context.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._context.__exit__(*exc)

    def group_options(self, group: str) -> list[str]:
        """The options of a config group (empty for a key that is not a group)."""
        if group not in self._groups:  # Hydra lists the directory on every call
            self._groups[group] = GlobalHydra.instance().config_loader().get_group_options(group)
        return self._groups[group]

    def compose(self, overrides: Sequence[str] = ()) -> DictConfig:
        """Composes one config; raises ConfigError for unknown options or keys."""
        overrides = list(overrides)
        parsed = parse_overrides(overrides)
        for override in parsed:
            self._check_group_choice(override)
        is_change = [self._is_value_change(o) for o in parsed]
        files = tuple(text for text, change in zip(overrides, is_change, strict=True) if not change)
        merged = self._merged.get(files)
        if merged is None:
            merged = self._hydra_compose(list(files))
            if len(self._merged) >= self._CACHE_SIZE:
                self._merged.pop(next(iter(self._merged)))
            self._merged[files] = merged
        changes = [o for o, change in zip(parsed, is_change, strict=True) if change]
        if not all(has_key(merged, o.key_or_group) for o in changes):
            return self._hydra_compose(overrides)  # Hydra's own error for the unknown key
        cfg = copy.deepcopy(merged)
        for override in changes:
            OmegaConf.update(cfg, override.key_or_group, override.value(), merge=True)
        return cfg

    def _hydra_compose(self, overrides: list[str]) -> DictConfig:
        try:
            return hydra_compose(self.config_name, overrides=overrides)
        except (HydraException, OmegaConfBaseException) as exc:
            raise self._explain(exc, overrides) from None

    def _is_value_change(self, override: Any) -> bool:
        """Whether Hydra would apply ``override`` after merging the files: it sets a
        plain value of an existing key, rather than choosing a group option, adding,
        deleting, sweeping or touching Hydra's own settings."""
        key = override.key_or_group
        return not (
            override.is_add()
            or override.is_force_add()
            or override.is_delete()
            or override.is_sweep_override()
            or override.package is not None
            or key.startswith("hydra")
            or self.group_options(key)
            or isinstance(override.value(), dict)
        )

    def _check_group_choice(self, override: Any) -> None:
        group = override.key_or_group
        if override.is_delete() or group.startswith("hydra"):
            return
        options = self.group_options(group)
        if not options:
            return
        values = (
            list(override.sweep_string_iterator())
            if override.is_sweep_override()
            else [override.get_value_element_as_str()]
        )
        for value in values:
            if value not in options:
                raise ConfigError(
                    f"bad value {group}={value!r}: no such {group} option; "
                    f"choose one of {', '.join(options)}"
                )

    def _explain(self, exc: Exception, overrides: list[str]) -> ConfigError:
        match = re.match(r"Could not override '([^']+)'", str(exc))
        if match:
            key = match.group(1)
            if self.group_options(key):  # a group the defaults list leaves out, e.g. experiment
                value = next((o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0] == key), "NAME")
                return ConfigError(
                    f"{key}={value}: {key} is not in the defaults list, so it is added with a plus: "
                    f"+{key}={value}"
                )
            parent, _, _ = key.rpartition(".")
            groups_only = [o for o in overrides if "." not in o.split("=", 1)[0]]
            try:
                base = hydra_compose(self.config_name, overrides=groups_only)
                node = OmegaConf.select(base, parent) if parent else base
                known = ", ".join(sorted(node.keys())) if isinstance(node, DictConfig) else ""
            except (HydraException, OmegaConfBaseException):
                known = ""
            where = f" in {parent}" if parent else ""
            hint = f"; allowed keys{where}: {known}" if known else ""
            return ConfigError(f"unknown config key {key}{hint}")
        return ConfigError(first_line(exc))


def parse_overrides(overrides: Sequence[str]) -> list[Any]:
    try:
        return OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as exc:
        raise ConfigError(f"cannot parse the overrides {' '.join(overrides)}: {first_line(exc)}") from None


def compose(overrides: Sequence[str] = ()) -> DictConfig:
    """Composes and validates one run config from command-line style overrides."""
    with Composer() as composer:
        cfg = composer.compose(overrides)
    validate(cfg)
    return cfg


def expand_sweep(overrides: Sequence[str]) -> list[list[str]]:
    """The override lists of every job a Hydra ``--multirun`` would launch."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    batches = BasicSweeper.split_arguments(parse_overrides(overrides), None)
    return [job for batch in batches for job in batch]
