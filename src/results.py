"""What a run produced and how it is shown: the result object every entry point
returns, and the plain-text tables the commands print."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Metrics = dict[str, dict[str, Any]]
"""Final metrics by model name, e.g. ``{"keras_mlp": {"train_accuracy": 1.0, ...}}``
(ints too, such as ``n_params``; a lesson's outcome is a word)."""


@dataclass(frozen=True)
class RunResult:
    """One invocation's metrics and where MLflow keeps them.

    Attributes:
        metrics: Final metrics by model name.
        experiment_id: The MLflow experiment.
        run_id, run_name: The invocation's run (a sweep trial's own run when it
            logged into one).
        model_run_ids: The run of each model: a child run, or ``run_id`` itself
            when a single model logged straight into it.
    """

    metrics: Metrics
    experiment_id: str
    run_id: str
    run_name: str
    model_run_ids: dict[str, str] = field(default_factory=dict)


def comparison_table(results: Metrics) -> str:
    """Models side by side: one row each, one column per metric, seconds last."""
    columns = list(dict.fromkeys(key for metrics in results.values() for key in metrics))
    columns.sort(key=lambda c: c == "fit_seconds")
    rows = [{"model": name, **metrics} for name, metrics in results.items()]
    return format_table(rows, ["model", *columns])


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """A plain-text table: numbers to 4 decimals (tiny ones to 3 significant
    digits), ``-`` where a value is missing."""

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.4f}" if value == 0 or abs(value) >= 1e-3 else f"{value:.3g}"
        return str(value)

    cells = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]  # no rows: the header's
    lines = [columns, ["-" * w for w in widths], *cells]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip() for line in lines)
