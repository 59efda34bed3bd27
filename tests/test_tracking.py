"""What MLflow holds after a run, and that no failure leaves a run RUNNING."""

from __future__ import annotations

import contextlib
import shlex
import sqlite3
import struct
import threading
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
import numpy as np
import pytest
import yaml
from mlflow.entities import RunStatus, ViewType

from src import tracking
from src.config import compose
from src.errors import DivergenceError
from src.training import git_commit, run
from src.ui import store_uri
from tests.conftest import cold_env, finish, run_cli, start_cli

MODELS = ["keras_mlp", "sklearn_perceptron", "sklearn_mlp"]


@pytest.fixture(scope="module")
def xor_run(tracking_uri):
    """One full XOR run (models logged), and its runs as MLflow holds them."""
    results = run(compose(["+experiment=xor", "seed=0"])).metrics
    client = mlflow.tracking.MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("xor")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"])
    children = {r.info.run_name: r for r in runs[:3]}
    parent = client.get_run(runs[0].data.tags["mlflow.parentRunId"])
    return results, experiment, parent, children


def test_one_experiment_one_parent_and_a_child_per_model(xor_run):
    results, experiment, parent, children = xor_run
    assert experiment.name == "xor"
    assert parent.info.run_name.startswith("xor-")
    assert sorted(children) == sorted(MODELS)
    for child in children.values():
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.info.status == "FINISHED"
    assert parent.info.status == "FINISHED"
    assert list(results) == MODELS


def test_parent_holds_config_tags_and_comparison(xor_run, client):
    _, _, parent, _ = xor_run
    params = parent.data.params
    assert params["optimizer.learning_rate"] == "0.1"
    assert params["model.hidden_units"] == "[8]"
    assert params["optimizer._target_"] == "keras.optimizers.Adam"
    assert params["seed"] == "0"
    tags = parent.data.tags
    assert tags["experiment"] == "xor" and tags["seed"] == "0"
    assert len(tags["data_fingerprint"]) == 16
    if git_commit():
        assert tags["git_commit"] == git_commit()
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"config.yaml", "comparison.txt"} <= artifacts
    logged = yaml.safe_load(mlflow.artifacts.load_text(f"{parent.info.artifact_uri}/config.yaml"))
    assert logged["optimizer"]["learning_rate"] == 0.1 and logged["experiment_name"] == "xor"
    table = mlflow.artifacts.load_text(f"{parent.info.artifact_uri}/comparison.txt")
    assert all(name in table for name in MODELS)
    assert parent.data.metrics["keras_mlp.train_accuracy"] == 1.0


def test_the_local_store_commits_to_a_write_ahead_log(xor_run, tracking_uri):
    # A commit is then one append, not several disk syncs (about 30% of a sweep trial's time).
    with contextlib.closing(sqlite3.connect(tracking.sqlite_path(tracking_uri))) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_children_share_metric_names(xor_run):
    results, _, _, children = xor_run
    for name in MODELS:
        metrics = children[name].data.metrics
        assert {"train_accuracy", "fit_seconds"} <= set(metrics)
        assert metrics["train_accuracy"] == pytest.approx(results[name]["train_accuracy"])
    assert "train_loss" in children["keras_mlp"].data.metrics
    assert "train_loss" in children["sklearn_mlp"].data.metrics


def test_keras_child_has_per_epoch_history(xor_run, client):
    _, _, _, children = xor_run
    run_id = children["keras_mlp"].info.run_id
    for key in ("loss", "accuracy"):
        history = client.get_metric_history(run_id, key)
        assert sorted(m.step for m in history) == list(range(1, 101))
    losses = [m.value for m in sorted(client.get_metric_history(run_id, "loss"), key=lambda m: m.step)]
    assert losses[-1] < losses[0]
    # the run's description, shown on its page, says why the last loss is not train_loss
    description = children["keras_mlp"].data.tags["mlflow.note.content"]
    assert "`loss` is the training loss averaged over each epoch's batches" in description
    assert "so the last epoch's `loss` is not `train_loss`" in description
    assert all(c.data.tags["mlflow.note.content"] == description for c in children.values())


def test_models_are_logged_with_their_flavors(xor_run, client):
    _, experiment, _, children = xor_run
    logged = client.search_logged_models([experiment.experiment_id])
    by_run = {m.source_run_id: m for m in logged}
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
    for name, flavor in (("keras_mlp", "keras"), ("sklearn_perceptron", "sklearn"), ("sklearn_mlp", "sklearn")):
        model = by_run[children[name].info.run_id]
        info = mlflow.models.get_model_info(model.model_uri)
        assert flavor in info.flavors
        assert info.signature is not None
        assert info.saved_input_example_info is not None
    keras_model = mlflow.pyfunc.load_model(by_run[children["keras_mlp"].info.run_id].model_uri)
    predicted = np.asarray(keras_model.predict(x)).ravel()
    assert ((predicted >= 0.5).astype(int) == [0, 1, 1, 0]).all()


def test_epoch_metrics_are_written_in_batches():
    class CountingClient:
        def __init__(self):
            self.batches = []

        def log_batch(self, run_id, metrics):
            assert threading.current_thread() is not main  # training does not wait for the store
            self.batches.append(list(metrics))

    main = threading.current_thread()
    fake = CountingClient()
    logger = tracking.EpochMetricLogger("run", flush_every=100, flush_seconds=3600)
    logger.client = fake
    for epoch in range(1, 251):
        logger.on_epoch_end(epoch, {"loss": 1.0 / epoch, "accuracy": 0.5})
    logger.on_train_end()
    assert logger.calls == 2  # epochs 201-250 wait for the run to send them once training returned
    logger.flush()
    assert len(fake.batches) == 3
    assert sum(len(batch) for batch in fake.batches) == 500
    assert {m.step for m in fake.batches[-1]} == set(range(201, 251))


def test_non_finite_loss_fails_the_runs_with_the_reason(client):
    overrides = ["+experiment=iris", "optimizer=sgd", "optimizer.learning_rate=1e6",
                 "trainer.epochs=20", "experiment_name=diverging", "trainer.divergence_factor=null"]
    with pytest.raises(DivergenceError, match=r"loss became nan at epoch \d+"):
        run(compose(overrides))
    experiment = client.get_experiment_by_name("diverging")
    runs = client.search_runs([experiment.experiment_id])
    assert {r.info.run_name.split("-")[0] for r in runs} == {"diverging", "keras_mlp"}
    for r in runs:
        assert r.info.status == "FAILED"
        assert "loss became nan at epoch" in r.data.tags[tracking.FAILURE_TAG]
    keras_child = next(r for r in runs if r.info.run_name == "keras_mlp")
    epoch = int(keras_child.data.tags[tracking.FAILURE_TAG].split("epoch ")[1].split(";")[0])
    assert len(client.get_metric_history(keras_child.info.run_id, "loss")) == epoch


def test_interrupted_run_ends_killed(client, tracking_uri):
    tracking.connect(tracking_uri)
    experiment = tracking.experiment_id("interrupted", tracking_uri)
    with pytest.raises(KeyboardInterrupt), tracking.run("parent", experiment=experiment) as parent:
        raise KeyboardInterrupt
    assert client.get_run(parent.run_id).info.status == "KILLED"


def test_a_run_is_written_only_while_it_is_the_active_run(client, tracking_uri):
    tracking.connect(tracking_uri)
    experiment = tracking.experiment_id("active_only", tracking_uri)
    with tracking.run("parent", experiment=experiment) as parent:
        with tracking.run("child", experiment=experiment, parent_run_id=parent.run_id) as child:
            child.set_tags({"who": "child"})
            with pytest.raises(RuntimeError, match="not the active MLflow run"):
                parent.set_tags({"who": "parent"})  # would land on the child
        parent.set_tags({"who": "parent"})
        parent.log_metrics({"score": 0.5}, step=3)
    assert client.get_run(child.run_id).data.tags["who"] == "child"
    written = client.get_run(parent.run_id)
    assert written.data.tags["who"] == "parent"
    assert [(m.value, m.step) for m in client.get_metric_history(parent.run_id, "score")] == [(0.5, 3)]
    assert written.info.status == "FINISHED"  # the refused write failed only itself


def _schema(db_path) -> tuple[list, list]:
    """Tables, indexes and the schema version (a table's constraints in any order:
    MLflow's own migrations write them in an order that varies by process)."""
    with contextlib.closing(sqlite3.connect(db_path)) as db:
        objects = db.execute("select type, name, tbl_name, sql from sqlite_master").fetchall()
        version = db.execute("select version_num from alembic_version").fetchall()
    return sorted((*o[:3], sorted(line.strip().rstrip(",") for line in (o[3] or "").splitlines())) for o in objects), version


def test_a_new_store_is_a_copy_of_the_store_mlflow_makes(tmp_path, monkeypatch):
    # Made once per MLflow version and copied, not migrated step by step in every new folder.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    copied = tmp_path / "copied.db"
    tracking.copy_empty_store(copied)
    assert (tmp_path / "cache" / "mlplab" / "mlflow" / f"empty-store-{mlflow.__version__}.db").is_file()
    made = tmp_path / "made.db"
    mlflow.tracking.MlflowClient(f"sqlite:///{made}").search_experiments()
    client = mlflow.tracking.MlflowClient(f"sqlite:///{copied}")
    assert [e.name for e in client.search_experiments()] == ["Default"]  # MLflow's, in this folder
    assert _schema(copied) == _schema(made)
    run_id = client.create_run(client.create_experiment("x")).info.run_id
    client.log_metric(run_id, "loss", 0.5)
    assert client.get_run(run_id).data.metrics == {"loss": 0.5}
    before = copied.read_bytes()
    tracking.copy_empty_store(copied)  # never over a store that exists
    assert copied.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "copied.db", "made.db"]


def test_a_store_failure_is_said_in_a_few_words():
    uri = "http://me:s3cret@127.0.0.1:5000"
    mlflow_says = MlflowException(
        f"API request to {uri}/api/2.0/mlflow/runs/log-batch failed with exception HTTPConnectionPool("
        "host='127.0.0.1', port=5000): Max retries exceeded with url: /api/2.0/mlflow/runs/log-batch (Caused by "
        "NewConnectionError(\"HTTPConnection(host='127.0.0.1', port=5000): Failed to establish a new connection: "
        "[Errno 111] Connection refused\"))"
    )
    assert tracking.failure(mlflow_says, uri) == "Connection refused (runs/log-batch)"
    refused = MlflowException("API request to endpoint /api/2.0/mlflow/runs/search failed with error code 503 != 200")
    assert tracking.failure(refused, uri) == "HTTP 503 (runs/search)"
    assert tracking.failure(OSError(13, "Permission denied", "/srv/mlruns"), uri) == (
        "[Errno 13] Permission denied: '/srv/mlruns'"
    )


def test_a_sqlite_stores_file_is_its_uri_without_options():
    assert tracking.sqlite_path("sqlite:///mlruns/mlflow.db") == Path("mlruns/mlflow.db")
    assert tracking.sqlite_path("sqlite:////srv/mlflow.db?timeout=30") == Path("/srv/mlflow.db")
    assert tracking.sqlite_path("postgresql://me@db/mlflow") is None


def test_the_browse_hint_reads_back_as_the_store_it_names(tmp_path):
    # A URI with options must reach src.ui whole: unquoted, Hydra split it at its "=".
    uri = "sqlite:///mlruns/other.db?timeout=30"
    result = run_cli("src.train", "+experiment=xor", "baselines=none", "trainer.epochs=3", "tracking.plots=false",
                     "tracking.log_models=false", f'tracking.uri="{uri}"', cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    hint = next(line for line in result.stdout.splitlines() if line.startswith("Browse it: "))
    command = shlex.split(hint.removeprefix("Browse it: "))
    assert command[:3] == ["python", "-m", "src.ui"]
    assert store_uri(command[3:]) == uri


def test_redaction_hides_passwords():
    assert tracking.redact("postgresql://me:s3cret@db:5432/x") == "postgresql://me:***@db:5432/x"
    assert tracking.redact("sqlite:///mlruns/mlflow.db") == "sqlite:///mlruns/mlflow.db"
    uri = "postgresql://me:s3cret@db:5432/x"
    assert tracking.redact_text(f"failed: {uri}, password=s3cret", uri) == (
        "failed: postgresql://me:***@db:5432/x, password=***"
    )
    # a short password is hidden where it stands alone, not inside the driver's words
    message = '(psycopg.OperationalError) connection to "db" failed: password "p" rejected'
    assert tracking.redact_text(message, "postgresql://me:p@db/x") == (
        '(psycopg.OperationalError) connection to "db" failed: password "***" rejected'
    )
    # URL-encoded in the URI, typed as it is in the driver's message
    assert tracking.redact_text("auth failed for p@ss!", "postgresql://me:p%40ss%21@db/x") == "auth failed for ***"


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
    """Three src.train commands a user might start side by side, run at once: the
    main job, a multirun over seeds, and a training whose loss becomes NaN."""
    commands = {
        "main": ["+experiment=xor"],
        "multirun": ["-m", "+experiment=xor", "seed=3,4", "experiment_name=xor_multirun", "trainer.epochs=3",
                     "baselines=none", "tracking.log_models=false"],
        "diverging": ["+experiment=iris", "optimizer=sgd", "optimizer.learning_rate=1e6", "trainer.epochs=20",
                      "trainer.divergence_factor=null", "experiment_name=diverging_cli"],
    }
    folders = {name: tmp_path_factory.mktemp(name) for name in commands}
    # TensorFlow's C++ logging fully on for the main job: what it writes depends on the
    # CPU (a CPU-features notice, oneDNN's), and none of it may reach the terminal. It
    # runs on its own, importing TensorFlow; the other two, through the warm process.
    env = {"main": cold_env(TF_CPP_MIN_LOG_LEVEL="0")}
    started = {name: start_cli("src.train", *args, cwd=folders[name], env=env.get(name)) for name, args in commands.items()}
    return {name: (folders[name], finish(process)) for name, process in started.items()}


def test_cli_runs_the_main_job_and_prints_the_comparison(cli_runs):
    tmp_path, result = cli_runs["main"]
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # quiet: TensorFlow's C++ lines go to its log file
    assert "absl::InitializeLog" in (tmp_path / "mlruns" / "logs" / "tensorflow.log").read_text()
    lines = result.stdout.splitlines()
    header = next(line for line in lines if line.startswith("model "))
    assert "train_accuracy" in header and "fit_seconds" in header
    assert all(any(line.startswith(name) for line in lines) for name in MODELS)
    assert "Traceback" not in result.stderr


def test_cli_multirun_over_seeds(cli_runs, client):
    _, result = cli_runs["multirun"]
    assert result.returncode == 0, result.stderr
    experiment = client.get_experiment_by_name("xor_multirun")
    parents = client.search_runs([experiment.experiment_id], "tags.experiment = 'xor_multirun'")
    assert sorted(r.data.tags["seed"] for r in parents) == ["3", "4"]


def test_cli_non_finite_loss_exits_nonzero_without_traceback(cli_runs):
    _, result = cli_runs["diverging"]
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert len(result.stderr_lines) == 1
    assert result.stderr_lines[0].startswith("mlplab: error: training stopped: loss became nan at epoch")


def test_no_run_is_left_running(client):
    # Runs last in this module, after every failure above.
    experiments = client.search_experiments(view_type=ViewType.ALL)
    runs = client.search_runs([e.experiment_id for e in experiments], run_view_type=ViewType.ALL)
    assert runs
    running = RunStatus.to_string(RunStatus.RUNNING)
    assert [r.info.run_name for r in runs if r.info.status == running] == []


def test_runs_carry_their_plots(xor_run, client):
    _, _, parent, children = xor_run

    def plots(run_id: str) -> set[str]:
        return {a.path.removeprefix("plots/") for a in client.list_artifacts(run_id, "plots")}

    assert plots(parent.info.run_id) == {"decision_boundaries.png"}
    assert plots(children["keras_mlp"].info.run_id) == {
        "learning_curves.png", "decision_boundary.png", "confusion_matrix.png", "weight_histograms.png",
    }
    assert plots(children["sklearn_mlp"].info.run_id) == {
        "learning_curves.png", "decision_boundary.png", "confusion_matrix.png",
    }
    assert plots(children["sklearn_perceptron"].info.run_id) == {"decision_boundary.png", "confusion_matrix.png"}
    local = mlflow.artifacts.download_artifacts(f"{parent.info.artifact_uri}/plots/decision_boundaries.png")
    with open(local, "rb") as png:
        header = png.read(24)
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    # Three 5 x 4 in panels at 100 dpi: the canvas as its layout fitted it, not cropped.
    assert struct.unpack(">II", header[16:24]) == (1500, 400)
