"""src.predict: a logged model, found by run id or as the best of an experiment,
predicts a file in batches."""

from __future__ import annotations

import numpy as np
import pytest

from src.config import compose
from src.data.toy import load_iris
from src.training import run


@pytest.fixture(scope="module")
def iris_model(tracking_uri):
    results = run(compose(["+experiment=iris", "experiment_name=predict_iris", "trainer.epochs=50"])).metrics
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("predict_iris")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    return results, runs


def test_predict_by_run_id_and_by_best_run(tmp_path, iris_model, tracking_uri, capsys):
    from src import predict

    results, runs = iris_model
    data = load_iris()
    np.save(tmp_path / "x.npy", data.x_test)
    np.save(tmp_path / "y.npy", data.y_test)
    out = tmp_path / "keras.csv"
    predict.main(["--run-id", runs["keras_mlp"].info.run_id, "--input", str(tmp_path / "x.npy"),
                  "--labels", str(tmp_path / "y.npy"), "--output", str(out), "--batch-size", "7",
                  "--uri", tracking_uri])
    printed = capsys.readouterr().out
    assert f"accuracy {results['keras_mlp']['test_accuracy']:.4f} on 30 rows" in printed
    assert len(out.read_text().splitlines()) == 31  # header + one line per row

    predict.main(["--experiment", "predict_iris", "--model", "sklearn_mlp", "--input", str(tmp_path / "x.npy"),
                  "--labels", str(tmp_path / "y.npy"), "--output", str(tmp_path / "p.npy"), "--uri", tracking_uri])
    assert f"accuracy {results['sklearn_mlp']['test_accuracy']:.4f}" in capsys.readouterr().out
    assert np.load(tmp_path / "p.npy").shape == (30,)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--run-id", "0" * 32], "no MLflow run with id"),
        (["--experiment", "nope"], "no MLflow experiment named 'nope'"),
        (["--experiment", "predict_iris", "--metric", "bogus"], "has the metric bogus"),
        (["--experiment", "predict_iris", "--input", "{tmp}/wide.npy"], "has 5 features per row; the model"),
        (["--experiment", "predict_iris", "--input", "{tmp}/missing.npy"], "does not exist"),
    ],
)
def test_bad_prediction_inputs(tmp_path, iris_model, tracking_uri, capsys, args, message):
    from src import predict

    np.save(tmp_path / "x.npy", np.zeros((3, 4)))
    np.save(tmp_path / "wide.npy", np.zeros((3, 5)))
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "--input" not in args:
        args += ["--input", str(tmp_path / "x.npy")]
    with pytest.raises(SystemExit) as caught:
        predict.main([*args, "--output", str(tmp_path / "o.csv"), "--uri", tracking_uri])
    assert caught.value.code != 0
    error = capsys.readouterr().err.strip()
    assert error.startswith("mlplab: error: ") and message in error and "\n" not in error
