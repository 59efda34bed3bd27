"""Composing run configurations with Hydra and checking them, with no heavy imports.

Everything here needs only Hydra, OmegaConf and pydantic (the schema, in
:mod:`src.schema`), so a bad command line is reported in about a second, before
TensorFlow or MLflow is imported. A mistake is raised as
:class:`~src.errors.ConfigError` with one line naming the bad value and what is
allowed.
"""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Mapping, Sequence
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
from src.schema import check

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
CONFIG_NAME = "config"
DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"
"""The local store of ``conf/tracking/local.yaml`` when ``MLFLOW_TRACKING_URI`` is unset."""

class CheckedConfig(dict):
    """A run config as :func:`validate` returns it: checked, resolved, plain."""


def validate(cfg: DictConfig | Mapping[str, Any]) -> CheckedConfig:
    """Checks a composed run config against the schema (:mod:`src.schema`) and
    returns it resolved as plain containers; one it returned before is returned
    as it is (resolving took ~3 ms, twice per sweep trial).

    Raises:
        ConfigError: on the first unknown key, wrong type or out-of-range value.
    """
    if isinstance(cfg, CheckedConfig):
        return cfg
    return CheckedConfig(check(_resolve(cfg)))


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
        self._groups: dict[tuple[Any, ...], list[str]] = {}

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

    def group_options(self, group: str, folders: Sequence[Path] = ()) -> list[str]:
        """The options of a config group (empty for a key that is not a group), with
        those of folders a ``hydra.searchpath`` override adds."""
        if "." in group:  # a config key: Hydra names a nested group with "/"
            return []
        key = (group, *folders)
        if key not in self._groups:  # Hydra lists the directory on every call
            loader = GlobalHydra.instance().config_loader()
            # Named, the primary config's own search path counts (a best config's does).
            options = loader.get_group_options(group, config_name=self.config_name)
            added = [p.stem for folder in folders for p in sorted((folder / group).glob("*.yaml"))]
            self._groups[key] = [*options, *added]
        return self._groups[key]

    def primary_config(self, overrides: Sequence[str]) -> dict[str, Any]:
        """A primary config that composes as ``overrides`` do on ``conf/config.yaml``,
        keeping each group choice a choice (in its defaults list) rather than its
        values, so a command line can still choose another option of that group.

        An ``hparams_search`` choice is unpacked into its defaults and values, less
        its Hydra settings: the config is a run, not the sweep again.

        Raises:
            ConfigError: an override deletes a key, which such a file cannot say.
        """
        added, chosen = [], []
        values = OmegaConf.create()
        parsed = parse_overrides(overrides)
        for override in parsed:
            key = override.key_or_group
            if override.is_delete():
                raise ConfigError(f"a config file cannot delete {key}: leave ~{key} out of its overrides")
            if key == "hparams_search":
                search, body = self._hparams_search(override.get_value_element_as_str(), search_folders(parsed))
                added.extend(search)
                values = OmegaConf.merge(values, body)
            elif key == "hydra.searchpath":
                continue  # it found the hparams_search file, now unpacked
            elif self.group_options(key):
                entry = override.get_value_element_as_str()
                if override.is_add():
                    added.append({key: entry})
                else:
                    chosen.append({f"override /{key}": entry})
            else:
                OmegaConf.update(values, key, override.value(), merge=True, force_add=True)
        return {
            "defaults": [CONFIG_NAME, *added, *chosen, "_self_"],
            "hydra": {"searchpath": [f"file://{self.config_dir}"]},
            **OmegaConf.to_container(values),  # type: ignore[dict-item]
        }

    def _hparams_search(self, name: str, folders: Sequence[Path]) -> tuple[list[Any], DictConfig]:
        """An hparams_search config's defaults entries and values, without its Hydra settings."""
        path = hparams_search_file(name, folders, self.config_dir)
        assert path is not None  # it composed
        body = OmegaConf.load(path)
        defaults = [
            entry for entry in body.pop("defaults", [])
            if not (isinstance(entry, DictConfig) and any(str(k).startswith("override /hydra") for k in entry))
        ]
        body.pop("hydra", None)
        return [OmegaConf.to_container(e) if isinstance(e, DictConfig) else e for e in defaults], body

    def compose(self, overrides: Sequence[str] = ()) -> DictConfig:
        """Composes one config; raises ConfigError for unknown options or keys."""
        overrides = list(overrides)
        parsed = parse_overrides(overrides)
        folders = search_folders(parsed)
        for override in parsed:
            self._check_group_choice(override, folders)
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

    def _check_group_choice(self, override: Any, folders: Sequence[Path] = ()) -> None:
        group = override.key_or_group
        if override.is_delete() or group.startswith("hydra"):
            return
        options = self.group_options(group, folders)
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
        match = re.match(r"Error merging override (\S+)", str(exc))
        if match and exc.__cause__ is not None:  # a typed setting (hydra.sweeper.n_trials) given a bad value
            return ConfigError(f"bad value {match.group(1)}: {first_line(exc.__cause__)}")
        return ConfigError(first_line(exc))


def search_folders(parsed: Sequence[Any]) -> list[Path]:
    """Folders a ``hydra.searchpath=[file://...]`` override adds (a sweep file
    outside sweeps/): their group options count too."""
    return folders_of([entry for o in parsed if o.key_or_group == "hydra.searchpath" for entry in o.value()])


def folders_of(search_path: Sequence[Any]) -> list[Path]:
    """The folders of Hydra search-path entries (``file://DIR``; ``pkg://`` ones have none)."""
    return [Path(str(entry).removeprefix("file://")) for entry in search_path if str(entry).startswith("file://")]


def hparams_search_file(name: str, folders: Sequence[Path] = (), config_dir: Path = CONF_DIR) -> Path | None:
    """The file of ``hparams_search=name``: in conf/ (that is, sweeps/), or in a folder
    of the search path; None if there is none."""
    candidates = [config_dir / "hparams_search", *(folder / "hparams_search" for folder in folders)]
    return next((f / f"{name}.yaml" for f in candidates if (f / f"{name}.yaml").is_file()), None)


def parse_overrides(overrides: Sequence[str]) -> list[Any]:
    try:
        return OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as exc:
        raise ConfigError(f"cannot parse the overrides {' '.join(overrides)}: {first_line(exc)}") from None


def override_argument(key: str, value: str) -> str:
    """``key=value`` as one shell argument that Hydra reads back as the string
    ``value``: quoted for Hydra where its grammar would split the value (a URI's
    ``?timeout=30``), and for the shell where needed."""
    import shlex

    if not re.fullmatch(r"[\w/:.\-@+~]*", value):
        # Hydra's quoted strings: a backslash escapes only a quote, or backslashes before one.
        escaped = re.sub(r'(\\*)"', lambda m: m.group(1) * 2 + '\\"', value)
        value = '"' + re.sub(r"(\\+)$", lambda m: m.group(1) * 2, escaped) + '"'
    return shlex.quote(f"{key}={value}")


def compose(overrides: Sequence[str] = ()) -> DictConfig:
    """Composes and validates one run config from command-line style overrides."""
    with Composer() as composer:
        cfg = composer.compose(overrides)
    validate(cfg)
    return cfg


def expand_sweep(overrides: Sequence[str]) -> list[list[str]]:
    """The override lists of every job a Hydra ``--multirun`` would launch: the
    product of every sweep's values (``seed=0,1,2``), in Hydra's order."""
    choices = [
        [f"{o.get_key_element()}={value}" for value in o.sweep_string_iterator()]
        if o.is_sweep_override()
        else [o.input_line]
        for o in parse_overrides(overrides)
    ]
    return [list(job) for job in itertools.product(*choices)]
