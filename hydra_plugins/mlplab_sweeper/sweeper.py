"""The ``mlplab`` Hydra sweeper.

Its settings are hydra-optuna-sweeper's (``sampler``, ``direction``, ``study_name``,
``storage``, ``n_trials``, ``n_jobs``, ``params`` in Hydra's override grammar), so a
lightning-hydra-template ``hparams_search`` file ports by changing the sweeper's
name, plus ``pruner``, ``workers`` (``n_jobs`` means the same), ``timeout``,
``heartbeat`` and ``verbose``. It hands the whole sweep to :func:`src.sweep.run_sweep`,
the engine of ``python -m src.sweep``: study storage, long-lived workers, pruning,
resume, heartbeats, one MLflow sweep run with a nested run per trial, the best
config and the summary.

This module is imported by every Hydra start (plugin discovery), so it imports
nothing heavy at the top. Hydra runs it without a ``sys.modules`` entry, so its
annotations are real types (no ``from __future__ import annotations``: dataclasses
and OmegaConf would have to resolve them by module name).
"""

import logging
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf


@dataclass
class MlplabSweeperConf:
    _target_: str = "hydra_plugins.mlplab_sweeper.sweeper.MlplabSweeper"
    _recursive_: bool = False  # sampler and pruner stay settings, built per worker
    study_name: Optional[str] = None
    storage: Optional[str] = None
    n_trials: Optional[int] = 20
    n_jobs: Optional[int] = None
    workers: Optional[int] = None
    timeout: Optional[float] = None
    direction: Any = "minimize"
    sampler: Any = None
    pruner: Any = None
    params: Dict[str, Any] = field(default_factory=dict)
    heartbeat: Dict[str, Any] = field(default_factory=dict)
    verbose: bool = False


ConfigStore.instance().store(group="hydra/sweeper", name="mlplab", node=MlplabSweeperConf, provider="mlplab")


class MlplabSweeper(Sweeper):
    """Runs the search as one mlplab sweep (not Hydra jobs launched in batches)."""

    def __init__(self, **settings: Any) -> None:
        self.config: Optional[DictConfig] = None

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        self.config = config

    def sweep(self, arguments: List[str]) -> Any:
        from src.errors import MlplabError, report
        from src.sweep import interrupted, run_sweep

        # Progress reads as python -m src.sweep's, without Hydra's [time][HYDRA] prefix.
        for handler in logging.getLogger().handlers:
            handler.setFormatter(logging.Formatter("%(message)s"))
        try:
            return run_sweep(*self._spec(arguments))
        except MlplabError as exc:
            sys.exit(report(exc))
        except KeyboardInterrupt:
            interrupted(["python", "-m", "src.train", *sys.argv[1:]])

    def _spec(self, arguments: List[str]) -> Tuple[Any, bool]:
        """The checked sweep, and whether the workers print to the terminal."""
        from src.config import folders_of, hparams_search_file, parse_overrides
        from src.sweeps.spec import spec_from_sweeper

        assert self.config is not None
        settings = OmegaConf.to_container(self.config.hydra.sweeper, resolve=True)
        assert isinstance(settings, dict)
        verbose = bool(settings.pop("verbose", False))
        # The command line's sweeps (choice, interval, ...) join the search space;
        # everything else is what each trial starts from, with any search path added.
        parsed = parse_overrides(arguments)
        space = {o.key_or_group: o.input_line.split("=", 1)[1] for o in parsed if o.is_sweep_override()}
        base = [o.input_line for o in parsed if not o.is_sweep_override()]
        search_path = [str(entry) for entry in self.config.hydra.searchpath]
        if search_path:
            base.insert(0, f"hydra.searchpath=[{','.join(search_path)}]")
        choice = self.config.hydra.runtime.choices.get("hparams_search")
        path = hparams_search_file(choice, folders_of(search_path)) if choice else None
        spec = spec_from_sweeper(
            f"hparams_search={choice}" if choice else "hydra.sweeper",
            path,
            settings,
            self.config.get("optimized_metric"),
            base,
            space=space,
        )
        return spec, verbose
