"""Results the project reports itself, read from MLflow.

    python -m src.report [--uri URI] [--experiments xor iris ...] [--markdown FILE]
                         [--readme README.md]

For the latest run of each experiment, one row per model: experiment, model,
metric, value, seconds, run id. ``--readme`` rewrites the block between
``<!-- results:start -->`` and ``<!-- results:end -->`` in that file, so the
README's results table is produced by this command, not typed by hand.
"""

from __future__ import annotations

if __name__ == "__main__":  # a warm process, if one serves this checkout, runs the job (src/warm.py)
    from src.warm import hand_off

    hand_off("src.report")

import argparse
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from src.config import DEFAULT_TRACKING_URI
from src.errors import MlplabError, report

# The headline metric of a model run, by preference: held-out first.
HEADLINE = ("test_accuracy", "test_mae", "val_accuracy", "train_accuracy", "train_mae", "final_x")
COLUMNS = ["experiment", "model", "metric", "value", "seconds", "run_id"]
START, END = "<!-- results:start -->", "<!-- results:end -->"


def collect(uri: str, experiments: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One row per model of the latest top-level run of each experiment."""
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    from src import tracking

    tracking.connect(uri)
    client = MlflowClient()
    found = client.search_experiments(view_type=ViewType.ACTIVE_ONLY)
    wanted = [e for e in found if (experiments is None and e.name != "Default") or (experiments and e.name in experiments)]
    if experiments:
        missing = sorted(set(experiments) - {e.name for e in wanted})
        if missing:
            raise MlplabError(f"no MLflow experiment named {missing[0]!r} in {tracking.redact(uri)}")
    rows = []
    for experiment in sorted(wanted, key=lambda e: e.name):
        parents = client.search_runs(
            [experiment.experiment_id],
            "tags.experiment != '' and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"],
            max_results=50,
        )
        parents = [r for r in parents if "mlflow.parentRunId" not in r.data.tags]
        if not parents:
            continue
        parent = parents[0]
        children = client.search_runs(
            [experiment.experiment_id],
            f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
            order_by=["attributes.start_time ASC"],
        )
        for child in children:
            metric = next((m for m in HEADLINE if m in child.data.metrics), None)
            rows.append({
                "experiment": experiment.name,
                "model": child.info.run_name,
                "metric": metric or child.data.tags.get("outcome", "-"),
                "value": child.data.metrics.get(metric) if metric else None,
                "seconds": child.data.metrics.get("fit_seconds"),
                "run_id": child.info.run_id,
                "outcome": child.data.tags.get("outcome"),
            })
    return rows


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    def cell(row: dict[str, Any], column: str) -> str:
        value = row.get(column)
        if column == "value" and row.get("outcome"):
            return f"{value:.4g} ({row['outcome']})" if value is not None else row["outcome"]
        if isinstance(value, float):
            return f"{value:.4f}" if column == "value" else f"{value:.2f}"
        if column == "run_id" and value:
            return f"`{value[:8]}`"
        return "-" if value is None else str(value)

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join(" --- " for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(cell(row, c) for c in COLUMNS) + " |" for row in rows]
    return "\n".join(lines)


def update_readme(path: Path, table: str) -> None:
    text = path.read_text()
    pattern = re.compile(re.escape(START) + r".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise MlplabError(f"{path} has no {START} ... {END} block to fill")
    path.write_text(pattern.sub(lambda _: f"{START}\n{table}\n{END}", text))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m src.report", description=__doc__.splitlines()[0])
    parser.add_argument("--uri", default=os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI))
    parser.add_argument("--experiments", nargs="+", help="only these experiments (default: all)")
    parser.add_argument("--markdown", type=Path, help="also write the table as Markdown to this file")
    parser.add_argument("--readme", type=Path, help="rewrite the results block of this Markdown file")
    args = parser.parse_args(argv)
    try:
        rows = collect(args.uri, args.experiments)
        if not rows:
            raise MlplabError("no finished runs to report; run an experiment first (python -m src.train +experiment=xor)")
        from src.results import format_table

        print(format_table(rows, COLUMNS))
        table = markdown(rows)
        if args.markdown:
            args.markdown.write_text(table + "\n")
        if args.readme:
            update_readme(args.readme, table)
    except MlplabError as exc:
        sys.exit(report(exc))


if __name__ == "__main__":
    from src.errors import run_command

    run_command(main)
