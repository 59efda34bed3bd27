"""``key=value`` command-line options, for the commands that take them besides
config overrides (``src.sweep``, ``src.ui``, ``src.dashboard``): each option is
typed by a converter that names what it allows; any other ``key=value`` is passed
on as a config override."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from src.errors import ConfigError

Converter = Callable[[str, str], Any]
"""Turns ``value`` of option ``key`` into its type, or raises ConfigError."""


def text(key: str, value: str) -> str:
    return value


def boolean(key: str, value: str) -> bool:
    if value.lower() not in ("true", "false"):
        raise ConfigError(f"bad value {key}={value!r}: expected true or false")
    return value.lower() == "true"


def positive_int(key: str, value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"bad value {key}={value}: expected an integer >= 1")
    return int(value)


def positive_seconds(key: str, value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ConfigError(f"bad value {key}={value}: expected seconds > 0")
    return seconds


def port_number(key: str, value: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise ConfigError(f"bad value {key}={value!r}: expected a port number 1-65535")
    return int(value)


def parse_options(
    argv: Sequence[str], converters: Mapping[str, Converter], usage: str, positional: int = 0
) -> tuple[list[str], dict[str, Any], list[str]]:
    """Splits ``argv`` into ``positional`` leading arguments, the options named in
    ``converters`` (converted; absent ones are left out) and the other ``key=value``
    arguments, which are config overrides.

    Raises:
        ConfigError: a positional argument is missing, an argument is not
            ``key=value``, or an option's value is not what it allows.
    """
    args = list(argv)
    if len(args) < positional or any("=" in a or a.startswith("-") for a in args[:positional]):
        raise ConfigError(f"usage: {usage}")
    options: dict[str, Any] = {}
    overrides: list[str] = []
    for arg in args[positional:]:
        key, sep, value = arg.partition("=")
        if not sep:
            raise ConfigError(f"bad argument {arg!r}: expected key=value (usage: {usage})")
        if key in converters:
            options[key] = converters[key](key, value)
        else:
            overrides.append(arg)
    return args[:positional], options, overrides
