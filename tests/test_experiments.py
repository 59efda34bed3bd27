"""The classic experiments reach their figures (on slices of MNIST and
Fashion-MNIST by default; the full trainings are marked slow)."""

from __future__ import annotations

import pytest
import yaml

from src.config import CONF_DIR, compose
from src.training import run
from tests.test_data import needs_shared

FAST = ["tracking.log_models=false"]


@needs_shared
def test_auto_mpg_regression_beside_its_baselines():
    results = run(compose(["+experiment=auto_mpg", *FAST]))
    assert results["keras_mlp"]["test_mae"] <= 2.0
    for name in ("keras_mlp", "sklearn_linear", "sklearn_mlp"):
        assert {"test_mae", "test_mse", "test_r2"} <= set(results[name])
        assert "test_accuracy" not in results[name]
    assert results["keras_mlp"]["test_r2"] > 0.8


def test_digits():
    results = run(compose(["+experiment=digits", *FAST]))
    assert results["keras_mlp"]["test_accuracy"] >= 0.96
    assert {"sklearn_perceptron", "sklearn_mlp"} <= set(results)


@pytest.mark.parametrize("activation", ["linear", "sigmoid", "tanh", "relu"])
def test_xor_activations(activation):
    results = run(compose(["+experiment=xor_activations", f"model.activation={activation}", *FAST]))
    accuracy = results["keras_mlp"]["train_accuracy"]
    assert accuracy <= 0.75 if activation == "linear" else accuracy == 1.0


def test_xor_activations_is_a_multirun_over_the_four():
    text = (CONF_DIR / "experiment" / "xor_activations.yaml").read_text()
    hydra = yaml.safe_load(text)["hydra"]
    assert hydra["mode"] == "MULTIRUN"
    assert hydra["sweeper"]["params"]["model.activation"] == "linear,sigmoid,tanh,relu"


def test_zero_initialization_fails_and_says_why(client):
    results = run(compose(["+experiment=xor_zeros_init", *FAST]))
    assert results["keras_mlp"]["train_accuracy"] <= 0.75
    experiment = client.get_experiment_by_name("xor_zeros_init")
    parent = client.search_runs([experiment.experiment_id], "tags.experiment = 'xor_zeros_init'")[0]
    assert "same gradient" in parent.data.tags["mlflow.note.content"]


@needs_shared
@pytest.mark.parametrize("experiment", ["mnist", "fashion_mnist"])
def test_image_experiments_on_slices(experiment):
    overrides = [f"+experiment={experiment}", "data.train_limit=3000", "data.test_limit=500",
                 "trainer.epochs=2", "baselines=none", *FAST]
    results = run(compose(overrides))["keras_mlp"]
    assert {"train_accuracy", "val_accuracy", "test_accuracy"} <= set(results)
    assert results["test_accuracy"] >= 0.7


@pytest.mark.slow
@needs_shared
@pytest.mark.parametrize(("experiment", "figure"), [("mnist", 0.975), ("fashion_mnist", 0.87)])
def test_image_experiments_reach_their_figures(experiment, figure):
    results = run(compose([f"+experiment={experiment}", *FAST]))
    assert results["keras_mlp"]["test_accuracy"] >= figure
    assert {"sklearn_perceptron", "sklearn_mlp", "sklearn_logistic"} <= set(results)


def test_gradient_descent_lesson(client):
    results = run(compose(["+experiment=gd_quadratic"]))
    outcomes = {name: r["outcome"] for name, r in results.items()}
    assert outcomes == {"lr=0.001": "crawls", "lr=0.2": "converged", "lr=1": "oscillates", "lr=1.1": "diverged"}
    assert results["lr=0.2"]["final_x"] == pytest.approx(3.0, abs=1e-6)
    assert results["lr=1"]["final_x"] == pytest.approx(10.0)
    experiment = client.get_experiment_by_name("gd_quadratic")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    oscillating = runs["lr=1"]
    assert oscillating.info.status == "FINISHED" and oscillating.data.tags["outcome"] == "oscillates"
    path = sorted(client.get_metric_history(oscillating.info.run_id, "x"), key=lambda m: m.step)
    assert [m.value for m in path[:4]] == [10.0, -4.0, 10.0, -4.0] and len(path) == 51
    assert runs["lr=1.1"].info.status == "FINISHED"  # divergence is a result, not a crash
    assert "descent.png" in {a.path for a in client.list_artifacts(oscillating.info.run_id)}
