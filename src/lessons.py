"""Lessons without a dataset: gradient descent on a one-dimensional quadratic.

``+experiment=gd_quadratic`` runs gradient descent on ``(x - 3)^2 + 10`` from
``x = 10`` once per learning rate, one MLflow child run each, and says what each
did: converged, crawled, oscillated or diverged. A divergence is a result here,
not a crash.
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def run_gd_quadratic(plain: Mapping[str, Any], tracked_parent: Any, experiment: str) -> dict[str, dict[str, Any]]:
    """One child run per learning rate, with the trajectory per step and a plot."""
    from src import tracking

    lesson = plain["lesson"]
    start, minimum, offset = float(lesson["start"]), float(lesson["minimum"]), float(lesson["offset"])
    results: dict[str, dict[str, Any]] = {}
    for learning_rate in lesson["learning_rates"]:
        name = f"lr={learning_rate:g}"
        descent = descend(start, minimum, float(learning_rate), int(lesson["steps"]))
        with tracking.run(
            name, experiment=experiment, parent_run_id=tracked_parent.run_id, tags={"outcome": descent.outcome}
        ) as child:
            child.log_params({"learning_rate": learning_rate, "start": start, "steps": lesson["steps"]})
            logger = child.epoch_logger()
            for step, x in enumerate(descent.path):
                value = (x - minimum) ** 2 + offset
                logger.on_epoch_end(step, {"x": x, "f_x": value} if math.isfinite(value) else {"x": x})
            logger.flush()
            summary = {"final_x": descent.final_x, "steps": len(descent.path) - 1}
            child.log_metrics({k: v for k, v in summary.items() if math.isfinite(v)})
            _log_plot(child, descent, minimum, offset)
        results[name] = {**summary, "outcome": descent.outcome}
        log.info("%s: %s, x = %.6g after %d steps", name, descent.outcome, descent.final_x, summary["steps"])
    return results


def _log_plot(tracked: Any, descent: Descent, minimum: float, offset: float) -> None:
    """The parabola with the points visited; a plotting error is only a warning."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import numpy as np

        shown = [x for x in descent.path if math.isfinite(x)][:60]
        span = max(abs(x - minimum) for x in shown) * 1.1 or 1.0
        grid = np.linspace(minimum - span, minimum + span, 400)
        figure, axes = plt.subplots(figsize=(6, 4))
        axes.plot(grid, (grid - minimum) ** 2 + offset, color="0.6", label="f(x) = (x - 3)² + 10")
        points = np.array(shown)
        axes.plot(points, (points - minimum) ** 2 + offset, "o-", markersize=4, label="visited")
        axes.set_title(f"learning rate {descent.learning_rate:g}: {descent.outcome}")
        axes.set_xlabel("x")
        axes.set_ylabel("f(x)")
        axes.legend()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "descent.png"
            figure.savefig(path, dpi=100, bbox_inches="tight")
            tracked.log_artifact(path)
        plt.close(figure)
    except Exception as exc:  # a plot is never worth failing the run
        log.warning("plot skipped: %s", exc)
