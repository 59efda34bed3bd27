"""Trust at the edges, through the commands a user types: commands started together
on a fresh folder, a damaged store, the logged model taking raw inputs, divergence
that is not NaN, and the mistakes a new user makes."""

from __future__ import annotations

import hashlib
import sqlite3
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from src.data.toy import load_iris
from tests.conftest import ROOT, command_env, finish, interrupt, run_cli, start_cli, write_sweep

FAST_XOR = ["+experiment=xor", "trainer.epochs=20", "baselines=none", "tracking.plots=false"]


def local_env() -> dict[str, str]:
    """The environment of a user with no MLFLOW_TRACKING_URI: the default store, mlruns/mlflow.db."""
    env = command_env()
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def local_client(cwd: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{cwd / 'mlruns' / 'mlflow.db'}")


def parent_runs(cwd: Path, experiment: str) -> list:
    client = local_client(cwd)
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id], "tags.experiment != ''") if found else []


# ------------------------------------------------- 1. commands started together
def test_four_trainings_at_once_on_a_fresh_folder(tmp_path):
    processes = [start_cli("src.train", *FAST_XOR, f"seed={seed}", cwd=tmp_path, env=local_env()) for seed in range(4)]
    results = [finish(p) for p in processes]
    assert [r.returncode for r in results] == [0, 0, 0, 0], [r.stderr_lines for r in results]
    runs = parent_runs(tmp_path, "xor")
    assert sorted(r.data.tags["seed"] for r in runs) == ["0", "1", "2", "3"]
    assert {r.info.status for r in runs} == {"FINISHED"}
    result = finish(start_cli("src.train", *FAST_XOR, "seed=4", cwd=tmp_path, env=local_env()))  # still usable
    assert result.returncode == 0 and "Logged to MLflow experiment 'xor'" in result.stdout, result.stderr_lines
    assert len(parent_runs(tmp_path, "xor")) == 5


def test_a_sweep_a_training_and_the_ui_at_once_on_a_fresh_folder(tmp_path):
    from src.local_server import free_port

    port = free_port()
    sweep = start_cli("src.sweep", str(ROOT / "sweeps" / "xor_lr_activation.yaml"), "n_trials=3",
                      "trainer.epochs=20", cwd=tmp_path, env=local_env())
    train = start_cli("src.train", *FAST_XOR, cwd=tmp_path, env=local_env())
    ui = start_cli("src.ui", f"port={port}", cwd=tmp_path, env=local_env())
    try:
        swept, trained = finish(sweep), finish(train)
        assert swept.returncode == 0, swept.stderr_lines
        assert trained.returncode == 0, trained.stderr_lines
        assert "Done: " in swept.stdout
        banner = next(line for line in ui.stdout if line.startswith("MLflow UI:") or not line)
        assert banner.startswith(f"MLflow UI: http://127.0.0.1:{port}"), ui.stderr.read()
        answer = urllib.request.urlopen(
            f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get-by-name?experiment_name=xor", timeout=30
        )
        assert answer.status == 200 and b'"name": "xor"' in answer.read().replace(b'":"', b'": "')
    finally:
        interrupt(ui)
    runs = local_client(tmp_path).search_runs(
        [local_client(tmp_path).get_experiment_by_name("xor").experiment_id], max_results=100
    )
    names = {r.info.run_name for r in runs}
    assert "sweep-xor_lr_activation" in names and {"trial-0", "trial-1", "trial-2"} <= names
    assert {r.info.status for r in runs} == {"FINISHED"}


def test_a_damaged_store_is_reported_and_left_as_it_is(tmp_path):
    local_client(tmp_path).search_experiments()  # a store of the current schema
    store = tmp_path / "mlruns" / "mlflow.db"
    with sqlite3.connect(store) as db:  # what migrations racing each other left behind (measured)
        db.execute("delete from alembic_version")
        db.execute("create table _alembic_tmp_tags (key varchar(250))")
    before = hashlib.sha256(store.read_bytes()).hexdigest()
    result = finish(start_cli("src.train", *FAST_XOR, cwd=tmp_path, env=local_env()))
    err = result.stderr_lines
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert len(err) == 1, err
    assert err[0].startswith("mlplab: error: the MLflow store mlruns/mlflow.db is damaged: ")
    assert "_alembic_tmp_tags" in err[0] and "Nothing was deleted" in err[0]
    assert "mv mlruns/mlflow.db mlruns/mlflow.db.broken" in err[0]
    assert hashlib.sha256(store.read_bytes()).hexdigest() == before


# ----------------------------------------------- 2. the logged model is whole
def test_the_logged_model_predicts_raw_measurements_through_the_cli(tmp_path):
    trained = run_cli("src.train", "+experiment=iris", "trainer.epochs=60", "tracking.plots=false",
                      cwd=tmp_path, env=local_env())
    assert trained.returncode == 0, trained.stderr_lines
    parent = parent_runs(tmp_path, "iris")[0]
    logged = parent.data.metrics
    test = load_iris()  # the raw test split, in cm
    assert test.x_test.min() > 0  # centimetres, not standardized values
    frame = pd.DataFrame(test.x_test, columns=list(test.feature_names)).assign(species=test.y_test)
    frame.to_csv(tmp_path / "raw.csv", index=False)
    for model in ("keras_mlp", "sklearn_mlp"):  # every model kind, in-process: the test below
        result = run_cli("src.predict", "--experiment", "iris", "--model", model, "--input", "raw.csv",
                         "--label-column", "species", "--output", f"{model}.csv",
                         cwd=tmp_path, env=local_env())
        assert result.returncode == 0, result.stderr
        assert f"accuracy {logged[f'{model}.test_accuracy']:.4f} on 30 rows" in result.stdout
        assert "\x1b[" not in result.stdout + result.stderr and "step" not in result.stdout  # no progress bar


def csv_file(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    x = rng.normal(loc=[50.0, -3.0, 1000.0], scale=[10.0, 1.0, 200.0], size=(200, 3))
    frame = pd.DataFrame(x, columns=["height", "slope", "weight"])
    frame["label"] = np.where(frame.height / 10 + frame.slope + frame.weight / 200 > 7, "big", "small")
    path = tmp_path / "mine.csv"
    frame.to_csv(path, index=False)
    return path


DATASET_KINDS = {
    "xor": ["+experiment=xor"],
    "numpy_mlp": ["+experiment=xor", "model=numpy_mlp", "optimizer=sgd", "optimizer.learning_rate=2",
                  "trainer.epochs=500", "trainer.loss=mse", "baselines=none"],
    "iris": ["+experiment=iris", "trainer.epochs=50"],
    "digits": ["+experiment=digits", "trainer.epochs=5", "baselines.sklearn_mlp.max_iter=20"],
    "mnist": ["+experiment=mnist", "data.train_limit=1500", "data.test_limit=300", "trainer.epochs=1",
              "baselines.sklearn_mlp.max_iter=2", "baselines.sklearn_logistic.max_iter=20"],
    "auto_mpg": ["+experiment=auto_mpg", "trainer.epochs=20"],
    "csv": ["data=csv", "data.target=label", "experiment_name=csv_kind", "trainer.epochs=50"],
}


@pytest.mark.parametrize("kind", DATASET_KINDS)
def test_every_logged_model_reproduces_its_test_metric_on_raw_inputs(kind, tmp_path, client):
    import mlflow

    from src.config import compose
    from src.predict import model_input
    from src.training import load_dataset, run, validate

    overrides = [*DATASET_KINDS[kind], "tracking.plots=false"]
    if kind == "csv":
        overrides.append(f"data.path={csv_file(tmp_path)}")
    else:
        overrides.append(f"experiment_name=raw_{kind}")
    cfg = compose(overrides)
    results = run(cfg).metrics
    dataset = load_dataset(validate(cfg)["data"])
    split = "test" if dataset.x_test is not None else "train"
    x, y = dataset.splits()[split]
    experiment = client.get_experiment_by_name(cfg.experiment_name)
    checked = 0
    for name, metrics in results.items():
        child = client.search_runs([experiment.experiment_id], f"attributes.run_name = '{name}'")[0]
        uri = client.search_logged_models([experiment.experiment_id],
                                          filter_string=f"source_run_id = '{child.info.run_id}'")[0].model_uri
        model = mlflow.pyfunc.load_model(uri)
        output = np.asarray(model.predict(model_input(model, x, "raw rows", child.info.run_id)))
        if dataset.task == "regression":
            assert np.mean(np.abs(output.ravel() - y)) == pytest.approx(metrics[f"{split}_mae"], rel=1e-4)
        else:
            if output.ndim == 2 and output.shape[1] > 1:
                labels = output.argmax(axis=1)
            elif np.issubdtype(output.dtype, np.floating) and not np.isin(output, (0, 1)).all():
                labels = (output.ravel() >= 0.5).astype(int)
            else:
                labels = output.ravel()
            assert np.mean(labels == y) == pytest.approx(metrics[f"{split}_accuracy"]), name
        if kind == "iris":  # the signature names the raw columns (Keras: its metadata; see tracking)
            schema = model.metadata.get_input_schema()
            names = model.metadata.metadata["feature_names"] if name == "keras_mlp" else schema.input_names()
            assert names == ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
        checked += 1
    assert checked == len(results) >= 1


# ------------------------------------------------------------- 3. divergence
def test_a_finite_explosion_fails_the_run_at_its_epoch(tmp_path):
    result = run_cli("src.train", "+experiment=xor", "optimizer=sgd", "optimizer.learning_rate=1e30",
                     "experiment_name=exploding", "tracking.plots=false", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr_lines == [
        "mlplab: error: training stopped: loss became 1.23e+28 at epoch 2, over 10000 times the first epoch's "
        "0.7 (trainer.divergence_factor); try a lower optimizer.learning_rate or another initializer"
    ]
    client = MlflowClient()
    experiment = client.get_experiment_by_name("exploding")
    runs = {r.data.tags.get("model", "parent"): r for r in client.search_runs([experiment.experiment_id])}
    assert {"parent", "keras_mlp"} <= set(runs) <= {"parent", "keras_mlp", "sklearn_mlp", "sklearn_perceptron"}
    for name in ("parent", "keras_mlp"):
        assert runs[name].info.status == "FAILED"
        assert "loss became 1.23e+28 at epoch 2" in runs[name].data.tags["failure_reason"]
    # On an idle machine the baselines trained beside the network, in a process of
    # their own: each run either finished before the network failed, or was stopped
    # and says why. (On a busy one, they come after it, and never start.)
    for name in set(runs) - {"parent", "keras_mlp"}:
        run = runs[name]
        assert run.info.status == "FINISHED" or "the command failed" in run.data.tags["failure_reason"], name


def test_an_absolute_threshold_and_non_finite_weights_stop_training():
    from src.errors import DivergenceError
    from src.training import DivergenceGuard

    class Weights:
        finite = True

        def parameters_finite(self):
            return self.finite

    guard = DivergenceGuard(Weights(), factor=None, threshold=5.0)
    guard.on_epoch_end(1, {"loss": 4.0})
    with pytest.raises(DivergenceError, match=r"loss became 6 at epoch 2, above trainer.divergence_threshold=5"):
        guard.on_epoch_end(2, {"loss": 6.0})
    weights = Weights()
    guard = DivergenceGuard(weights, factor=1e4)
    guard.on_epoch_end(1, {"loss": 0.7})
    guard.on_epoch_end(2, {"loss": 0.5})
    weights.finite = False
    with pytest.raises(DivergenceError, match="the weights became non-finite at epoch 2"):
        guard.on_train_end()


def test_a_diverging_trial_fails_with_its_reason_and_the_sweep_goes_on(tmp_path):
    path = write_sweep(
        tmp_path, "diverging", study_name="xor_diverging", n_trials=2, sampler="grid", pruner="none",
        # fixed values and a search space, both in Hydra's grammar
        params={"optimizer": "sgd", "trainer.epochs": 30, "optimizer.learning_rate": "choice(0.5, 1.0e30)"},
    )
    result = run_cli("src.sweep", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    failed = [line for line in result.stdout.splitlines() if " FAIL " in line]
    assert failed and all("(training stopped: loss became" in line for line in failed)
    assert "divergence_factor" in failed[0]
    assert any(" COMPLETE " in line for line in result.stdout.splitlines())


# ------------------------------------------------------ 4. a new user's paths
def test_a_bare_train_asks_for_an_experiment(tmp_path):
    result = run_cli("src.train", cwd=tmp_path)
    assert result.returncode == 2
    assert len(result.stderr_lines) == 1
    line = result.stderr_lines[0]
    assert line.startswith("mlplab: error: choose an experiment: python -m src.train +experiment=NAME")
    assert "iris" in line and "xor" in line and "mnist" in line
    assert not (tmp_path / "mlruns").exists()


def test_experiment_without_a_plus_says_to_add_one(tmp_path):
    result = run_cli("src.train", "experiment=xor", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr_lines == [
        "mlplab: error: experiment=xor: experiment is not in the defaults list, so it is added with a plus: "
        "+experiment=xor"
    ]


@pytest.mark.parametrize(
    ("content", "target", "message"),
    [
        (None, "label", "data.path='nope.csv': no such file"),
        ("a,b,label\n1,2,x\n3,4,y\n", "kind", "data.target='kind' is not a column of nope.csv; columns: a, b, label"),
        ("a,b,label\n", "label", "data.path='nope.csv': the file has a header but no rows"),
    ],
)
def test_data_mistakes_are_one_line_through_the_cli(tmp_path, content, target, message, client):
    if content is not None:
        (tmp_path / "nope.csv").write_text(content)
    result = run_cli("src.train", "data=csv", "data.path=nope.csv", f"data.target={target}",
                     "experiment_name=csv_mistakes", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr_lines == [f"mlplab: error: {message}"]
    assert "Traceback" not in result.stderr and "HYDRA_FULL_ERROR" not in result.stderr + result.stdout
    assert client.get_experiment_by_name("csv_mistakes") is None  # stopped before any run


def test_convergence_warnings_are_one_line_and_a_tag(tmp_path):
    result = run_cli("src.train", "+experiment=iris", "trainer.epochs=5", "baselines.sklearn_mlp.max_iter=3",
                     "experiment_name=unconverged", "tracking.plots=false", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    lines = [line for line in output.splitlines() if "ConvergenceWarning" in line]
    assert len(lines) == 1 and "sklearn_mlp: ConvergenceWarning: Stochastic Optimizer: Maximum iterations (3)" in lines[0]
    assert "warnings.warn" not in output
    client = MlflowClient()
    experiment = client.get_experiment_by_name("unconverged")
    child = client.search_runs([experiment.experiment_id], "attributes.run_name = 'sklearn_mlp'")[0]
    assert "Maximum iterations (3) reached" in child.data.tags["fit_warnings"]


def test_sweep_progress_never_overshoots_nor_counts_ahead():
    from optuna.trial import TrialState, create_trial

    from src.sweeps.spec import load_spec
    from src.sweeps.summary import counts_line, trial_line

    spec = load_spec(ROOT / "sweeps" / "xor_lr_activation.yaml", [])
    pruned = create_trial(state=TrialState.PRUNED, params={}, distributions={})
    done = create_trial(value=0.1, params={}, distributions={})
    # the counts are of the trials passed in: those the terminal has shown
    assert counts_line([done], spec).endswith("pruned 0, failed 0")
    assert counts_line([done, pruned], spec).endswith("pruned 1, failed 0")
    assert counts_line([done, pruned], spec).startswith("best 0.1 (#")
    assert trial_line(done, 30, 30, ["x"]).startswith("trial 30/30  #")
    line = trial_line(done, 31, 30, ["x"])
    assert "31/30" not in line and line.startswith("trial 31 (extra: started before the study reached 30)")
