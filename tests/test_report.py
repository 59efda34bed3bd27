"""src.report: the latest run of each experiment, read back from MLflow."""

from __future__ import annotations

import os

from src.config import compose
from src.training import run
from tests.conftest import run_cli


def test_report_lists_the_latest_run_of_each_experiment(tmp_path, tracking_uri, capsys):
    from src import report

    run(compose(["+experiment=iris", "experiment_name=report_iris", "trainer.epochs=5", "tracking.log_models=false"]))
    latest = run(compose(["+experiment=iris", "experiment_name=report_iris", "trainer.epochs=20",
                          "tracking.log_models=false"])).metrics
    readme = tmp_path / "README.md"
    readme.write_text(f"# Results\n{report.START}\nold\n{report.END}\ntail\n")
    markdown = tmp_path / "results.md"
    report.main(["--uri", tracking_uri, "--experiments", "report_iris", "--markdown", str(markdown),
                 "--readme", str(readme)])
    printed = capsys.readouterr().out
    assert "experiment" in printed.splitlines()[0] and "run_id" in printed.splitlines()[0]
    rows = [line for line in markdown.read_text().splitlines() if line.startswith("| report_iris")]
    assert [row.split("|")[2].strip() for row in rows] == ["keras_mlp", "sklearn_perceptron", "sklearn_mlp"]
    assert f"{latest['keras_mlp']['test_accuracy']:.4f}" in rows[0] and "test_accuracy" in rows[0]
    text = readme.read_text()
    assert "old" not in text and text.endswith(f"{report.END}\ntail\n") and rows[0] in text


def test_report_errors_are_one_line(tmp_path):
    result = run_cli("src.report", "--experiments", "no_such_experiment", cwd=tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr_lines == [
        f"mlplab: error: no MLflow experiment named 'no_such_experiment' in {os.environ['MLFLOW_TRACKING_URI']}"
    ]
