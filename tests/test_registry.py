"""MLflow lineage: dataset inputs on every run, the experiment kind, and the Model
Registry (``tracking.register``, the alias ``champion``, ``src.predict --model models:/``)."""

from __future__ import annotations

import numpy as np
import pytest

from src.config import compose
from src.data.toy import load_iris
from src.training import run
from tests.conftest import run_cli

FAST = ["trainer.epochs=20", "baselines=none", "tracking.plots=false"]


def test_a_registered_run_has_its_data_its_kind_and_a_version_that_predicts(tmp_path, client):
    trained = run_cli("src.train", "+experiment=iris", "experiment_name=registry_iris", "tracking.register=true",
                      "trainer.epochs=50", "tracking.plots=false", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert "Registered model 'registry_iris' version 1: models:/registry_iris/1" in trained.stderr + trained.stdout

    experiment = client.get_experiment_by_name("registry_iris")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # "Machine learning" in the UI
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 4  # the invocation and its three models
    for logged in runs:  # every run: what it trained and was scored on
        inputs = {i.tags[0].value: i.dataset for i in logged.inputs.dataset_inputs}
        assert set(inputs) == {"training", "test"}, logged.info.run_name
        fingerprint = (logged.data.tags.get("data_fingerprint")
                       or client.get_run(logged.data.tags["mlflow.parentRunId"]).data.tags["data_fingerprint"])
        assert inputs["training"].name == "iris" and inputs["training"].digest == f"{fingerprint}-train"
        assert inputs["test"].digest == f"{fingerprint}-test"
        assert '"loader": "sklearn.datasets.load_iris"' in inputs["training"].source
        assert "[-1,4]" in inputs["training"].schema.replace(" ", "")  # 4 features per row
        assert "\"features_shape\": [120, 4]" in inputs["training"].profile  # 120 training rows

    keras = next(r for r in runs if r.info.run_name == "keras_mlp")
    version = client.get_model_version("registry_iris", "1")
    assert version.run_id == keras.info.run_id
    invocation = client.get_run(keras.data.tags["mlflow.parentRunId"])
    assert version.tags["config_fingerprint"] == invocation.data.tags["config_fingerprint"]

    data = load_iris()
    np.save(tmp_path / "x.npy", data.x_test)
    np.save(tmp_path / "y.npy", data.y_test)
    predicted = run_cli("src.predict", "--model", "models:/registry_iris/1", "--input", str(tmp_path / "x.npy"),
                        "--labels", str(tmp_path / "y.npy"), "--output", str(tmp_path / "p.csv"), cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr
    assert f"accuracy {keras.data.metrics['test_accuracy']:.4f} on 30 rows" in predicted.stdout
    assert predicted.stderr == ""  # TensorFlow's C++ start-up lines went to mlruns/logs/tensorflow.log

    from src import predict  # any models:/ URI: the version's own, the logged model's id

    predict.main(["--model", version.source, "--input", str(tmp_path / "x.npy"), "--labels", str(tmp_path / "y.npy"),
                  "--output", str(tmp_path / "q.csv")])
    assert version.source.startswith("models:/m-")
    assert (tmp_path / "q.csv").read_text() == (tmp_path / "p.csv").read_text()

    missing = run_cli("src.predict", "--model", "models:/registry_iris@champion", "--input", str(tmp_path / "x.npy"),
                      cwd=tmp_path)
    assert missing.returncode == 1
    assert missing.stderr_lines == [
        "mlplab: error: --model models:/registry_iris@champion: no such registered model version "
        "(versions of 'registry_iris': 1)"
    ]


def test_the_champion_alias_moves_only_to_a_better_version(client):
    def register(epochs: int) -> float:
        result = run(compose(["+experiment=iris", "experiment_name=champion_iris", f"trainer.epochs={epochs}",
                              "baselines=none", "tracking.plots=false", "tracking.register=true",
                              "tracking.champion={metric: train_loss, direction: minimize}"]))
        return result.metrics["keras_mlp"]["train_loss"]

    first = register(5)
    assert client.get_model_version_by_alias("champion_iris", "champion").version == 1
    better = register(60)
    assert better < first
    assert client.get_model_version_by_alias("champion_iris", "champion").version == 2
    register(5)  # worse than version 2: registered, but not the champion
    assert client.get_model_version_by_alias("champion_iris", "champion").version == 2
    assert sorted(int(v.version) for v in client.search_model_versions("name = 'champion_iris'")) == [1, 2, 3]


def test_registering_without_a_logged_model_is_refused_before_training():
    from src.config import validate
    from src.errors import ConfigError

    with pytest.raises(ConfigError, match="tracking.register=true registers the logged model: it needs "
                                          "tracking.log_models=true"):
        validate(compose(["+experiment=iris", "tracking.register=true", "tracking.log_models=false", *FAST]))


def test_a_dataset_read_from_a_file_names_the_file_without_a_warning(client):
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run(compose(["+experiment=auto_mpg", "experiment_name=auto_mpg_inputs", *FAST]))
    assert not [w for w in caught if "dataset source" in str(w.message)]
    logged = client.get_run(result.run_id)
    inputs = {i.tags[0].value: i.dataset for i in logged.inputs.dataset_inputs}
    assert set(inputs) == {"training", "test"}
    assert inputs["training"].source_type == "local"
    assert inputs["training"].source.endswith('auto_mpg/auto-mpg.data"}')


def test_sweep_trials_register_nothing_even_when_the_sweep_is_told_to():
    from src.config import validate
    from src.sweeps.trial import TRIAL_OVERRIDES

    plain = validate(compose(["+experiment=xor", "tracking.register=true", *TRIAL_OVERRIDES]))
    assert plain["tracking"]["register"] is False and plain["tracking"]["log_models"] is False


def test_a_dataset_another_process_logged_first_is_linked_not_lost(client, monkeypatch):
    # MLflow's SQL store looks a dataset up, then inserts it: two workers logging the
    # same new dataset at once collide on its key, as a tracking server on
    # PostgreSQL answers here. The second write finds the dataset and links it.
    import mlflow
    from mlflow.exceptions import MlflowException

    real, calls = mlflow.log_inputs, []

    def collide_once(**kwargs):
        calls.append(kwargs)
        if len(calls) == 1:
            raise MlflowException('BAD_REQUEST: (psycopg.errors.UniqueViolation) duplicate key value violates '
                                  'unique constraint "dataset_pk"')
        return real(**kwargs)

    monkeypatch.setattr(mlflow, "log_inputs", collide_once)
    result = run(compose(["+experiment=xor", "experiment_name=dataset_race", *FAST]))
    assert len(calls) == 3  # the invocation's twice (one collision), the keras_mlp run's once
    for run_id in (result.run_id, result.model_run_ids["keras_mlp"]):
        contexts = [i.tags[0].value for i in client.get_run(run_id).inputs.dataset_inputs]
        assert contexts == ["training"]
