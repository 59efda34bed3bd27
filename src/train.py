"""Train one configured run: ``python -m src.train +experiment=xor [key=value ...]``.

Hydra composes the config (``-m`` runs a multirun sweep); every job goes through
:func:`src.training.run`. The whole command line is composed and validated before
TensorFlow is imported, so a mistake is reported in about a second as one line,
with a non-zero exit and no traceback.
"""

from __future__ import annotations

if __name__ == "__main__":  # a warm process, if one serves this checkout, runs the job (src/warm.py)
    from src.warm import hand_off

    hand_off("src.train")

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import hydra
from omegaconf import DictConfig

from src.config import (
    CONF_DIR, CONFIG_NAME, DEFAULT_TRACKING_URI, Composer, expand_sweep, override_argument, parse_overrides, validate,
)
from src.errors import ConfigError, MlplabError, report, run_command
from src.results import RunResult

log = logging.getLogger("mlplab")

_MULTIRUN_FLAGS = {"-m", "--multirun"}


def preflight(argv: Sequence[str]) -> None:
    """Composes and validates every job the command line would launch.

    Understands ``-m`` and ``--config-path``/``--config-name`` (as a sweep's best
    config is run); Hydra's other flags (``--help``, ``--cfg`` ...) are left to
    Hydra, unchecked.
    """
    overrides: list[str] = []
    multirun = False
    config_dir, config_name = CONF_DIR, CONFIG_NAME
    args = iter(argv)
    for arg in args:
        flag, eq, value = arg.partition("=")
        if arg in _MULTIRUN_FLAGS:
            multirun = True
        elif flag in ("--config-path", "-cp", "--config-name", "-cn"):
            value = value if eq else next(args, "")
            if flag in ("--config-path", "-cp"):
                config_dir = Path(value).resolve()
            else:
                config_name = value
        elif arg.startswith("-"):
            return
        else:
            overrides.append(arg)
    if _mlplab_sweep(overrides):
        # The sweeper checks its search space and settings itself, before any trial;
        # here the base every trial starts from is composed and checked.
        jobs = [[o.input_line for o in parse_overrides(overrides) if not o.is_sweep_override()]]
    else:
        jobs = expand_sweep(overrides) if multirun else [overrides]
    with Composer(config_dir, config_name) as composer:
        if (config_dir, config_name) == (CONF_DIR, CONFIG_NAME) and not _names_experiment(overrides):
            raise ConfigError(
                "choose an experiment: python -m src.train +experiment=NAME, with NAME one of "
                f"{', '.join(composer.group_options('experiment'))} (or name your own: experiment_name=NAME)"
            )
        for job in jobs:
            validate(composer.compose(job))


def _names_experiment(overrides: Sequence[str]) -> bool:
    """Whether the overrides choose an experiment file (or an hparams_search sweep,
    which chooses one) or name the MLflow experiment."""
    keys = {override.split("=", 1)[0].lstrip("+~") for override in overrides}
    return bool(keys & {"experiment", "experiment_name", "hparams_search"})


def _mlplab_sweep(overrides: Sequence[str]) -> bool:
    """Whether the command line runs mlplab's Hydra sweeper: it chooses an
    hparams_search sweep or the sweeper itself."""
    return any(
        o.split("=", 1)[0].lstrip("+") == "hparams_search" or o.replace(" ", "") == "hydra/sweeper=mlplab"
        for o in overrides
    )


# An absolute config path: Hydra resolves a relative one against the caller, which
# is a file for python -m src.train but a package for the mlplab console command.
@hydra.main(config_path=str(CONF_DIR), config_name=CONFIG_NAME, version_base="1.3")
def train(cfg: DictConfig) -> dict[str, dict[str, float]]:
    """Hydra task: one run (a training, or a lesson), its comparison table printed."""
    from src.results import comparison_table

    try:
        if cfg.get("lesson") is not None:
            from src.lessons import run
        else:
            from src.training import run
        result = run(cfg)
    except MlplabError as exc:
        sys.exit(report(exc))
    except KeyboardInterrupt:
        print("mlplab: interrupted; the MLflow runs were ended as KILLED", file=sys.stderr)
        sys.exit(130)
    print()
    print(comparison_table(result.metrics))
    print()
    print(_where_logged(cfg, result))
    return result.metrics


def _where_logged(cfg: DictConfig, result: RunResult) -> str:
    from src.tracking import redact

    uri = redact(cfg.tracking.uri)
    lines = [f"Logged to MLflow experiment '{cfg.experiment_name}', run {result.run_name} ({result.run_id}), in {uri}"]
    if not uri.startswith(("http://", "https://")):
        store = "" if uri == DEFAULT_TRACKING_URI else f" {override_argument('tracking.uri', uri)}"
        lines.append(f"Browse it: python -m src.ui{store}")
    else:
        lines.append(f"Browse it: {uri.rstrip('/')}/#/experiments/{result.experiment_id}/runs/{result.run_id}")
    return "\n".join(lines)


def main() -> None:
    try:
        preflight(sys.argv[1:])
    except ConfigError as exc:
        sys.exit(report(exc))
    train()


if __name__ == "__main__":
    run_command(main)
