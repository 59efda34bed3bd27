"""Lessons without a dataset: gradient descent on a one-dimensional quadratic.

``+experiment=gd_quadratic`` runs gradient descent on ``(x - 3)^2 + 10`` from
``x = 10`` once per learning rate, one MLflow child run each, and says what each
did: converged, crawled, oscillated or diverged. A divergence is a result here,
not a crash. ``python -m src.train`` sends a config with a ``lesson:`` node here
(:func:`run`) instead of to the model-training path.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from src.config import validate
from src.errors import ConfigError
from src.results import RunResult, comparison_table

if TYPE_CHECKING:
    from src.tracking import TrackedRun

log = logging.getLogger("mlplab")


@dataclass
class Descent:
    learning_rate: float
    path: list[float]
    outcome: str

    @property
    def final_x(self) -> float:
        return self.path[-1]


def descend(start: float, minimum: float, learning_rate: float, steps: int, limit: float = 1e6) -> Descent:
    """Gradient descent on ``(x - minimum)^2 + c``; stops early once ``|x|`` passes ``limit``."""
    path = [start]
    x = start
    for _ in range(steps):
        x = x - learning_rate * 2 * (x - minimum)
        path.append(x)
        if not math.isfinite(x) or abs(x) > limit:
            break
    return Descent(learning_rate, path, classify(path, minimum))


def classify(path: Sequence[float], minimum: float) -> str:
    first, last = abs(path[0] - minimum), abs(path[-1] - minimum)
    if not math.isfinite(path[-1]) or last > 10 * first:
        return "diverged"
    if last < 1e-3 * max(first, 1.0):
        return "converged"
    if len(path) > 2 and abs(path[-1] - path[-3]) < 1e-9 * max(first, 1.0) and last > 1e-3:
        return "oscillates"
    return "crawls"


def run(cfg: Any, parent_run_id: str | None = None) -> RunResult:
    """Runs the lesson of a composed config (``lesson.kind``) under a parent run of
    its own, which records only the lesson's settings.

    Raises:
        ConfigError: The config is invalid, or has no lesson.
    """
    from src import tracking

    plain = validate(cfg)
    lesson = plain["lesson"]
    if lesson is None:
        raise ConfigError(f"{plain['experiment_name']} is not a lesson: train it with src.training.run")
    experiment = tracking.open_experiment(plain["experiment_name"], plain["tracking"])
    tags = {"experiment": plain["experiment_name"], "lesson": lesson["kind"]}
    with tracking.invocation_run(plain, experiment, parent_run_id, tags) as parent:
        tracking.log_config(parent, {"experiment_name": plain["experiment_name"], "lesson": lesson})
        results, run_ids = run_gd_quadratic(lesson, parent, experiment)
        parent.log_text(comparison_table(results) + "\n", "comparison.txt")
    return RunResult(results, experiment, parent.run_id, parent.run_name, run_ids)


def run_gd_quadratic(
    lesson: Mapping[str, Any], parent: TrackedRun, experiment: str
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """One child run per learning rate, with the trajectory per step and a plot.

    Returns:
        The outcome of each learning rate, and its run id, by child-run name.
    """
    from src import tracking
    from src.plots import gradient_descent

    start, minimum, offset = float(lesson["start"]), float(lesson["minimum"]), float(lesson["offset"])
    results: dict[str, dict[str, Any]] = {}
    run_ids: dict[str, str] = {}
    for learning_rate in lesson["learning_rates"]:
        name = f"lr={learning_rate:g}"
        descent = descend(start, minimum, float(learning_rate), int(lesson["steps"]))
        with tracking.run(
            name, experiment=experiment, parent_run_id=parent.run_id, tags={"outcome": descent.outcome}
        ) as child:
            child.log_params({"learning_rate": learning_rate, "start": start, "steps": lesson["steps"]})
            logger = child.epoch_logger()
            for step, x in enumerate(descent.path):
                value = (x - minimum) ** 2 + offset
                logger.on_epoch_end(step, {"x": x, "f_x": value} if math.isfinite(value) else {"x": x})
            logger.flush()
            summary = {"final_x": descent.final_x, "steps": len(descent.path) - 1}
            child.log_metrics({k: v for k, v in summary.items() if math.isfinite(v)})
            child.log_figures({"descent.png": lambda d=descent: gradient_descent(d.path, d.learning_rate, d.outcome,
                                                                                 minimum, offset)})
            run_ids[name] = child.run_id
        results[name] = {**summary, "outcome": descent.outcome}
        log.info("%s: %s, x = %.6g after %d steps", name, descent.outcome, descent.final_x, summary["steps"])
    return results, run_ids
