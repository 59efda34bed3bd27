"""The classic experiments reach their figures (on slices of MNIST and
Fashion-MNIST by default; the full trainings are marked slow)."""

from __future__ import annotations

import pytest

from src import lessons
from src.config import compose
from src.training import run
from tests.conftest import command_env, run_cli
from tests.test_data import needs_shared

FAST = ["tracking.log_models=false"]


@needs_shared
def test_auto_mpg_regression_beside_its_baselines():
    results = run(compose(["+experiment=auto_mpg", *FAST])).metrics
    assert results["keras_mlp"]["test_mae"] <= 2.0
    for name in ("keras_mlp", "sklearn_linear", "sklearn_mlp"):
        assert {"test_mae", "test_mse", "test_r2"} <= set(results[name])
        assert "test_accuracy" not in results[name]
    assert results["keras_mlp"]["test_r2"] > 0.8


def test_digits():
    results = run(compose(["+experiment=digits", *FAST])).metrics
    assert results["keras_mlp"]["test_accuracy"] >= 0.96
    assert {"sklearn_perceptron", "sklearn_mlp"} <= set(results)


def test_xor_activations_is_a_multirun_over_the_four(tmp_path, client):
    # as a user types it: the experiment file makes it a multirun over the activation
    temp = tmp_path / "temp"
    temp.mkdir()
    result = run_cli("src.train", "+experiment=xor_activations", "tracking.plots=false",
                     "tracking.log_models=false", cwd=tmp_path, env=command_env(TMPDIR=str(temp)))
    assert result.returncode == 0, result.stderr
    assert not list(temp.iterdir())  # TensorFlow's AutoGraph files are not left behind
    # short trainings stay as quiet as ever: no progress line, no slow step announced
    # (but creating the store, when this test is the first to open it, is slow and says so)
    lines = (result.stdout + result.stderr).splitlines()
    assert not [line for line in lines if ": epoch " in line
                or line.endswith(" ...") and "training on" not in line and "opening the tracking store" not in line]
    assert sum("keras_mlp: training on" in line for line in lines) == 4
    experiment = client.get_experiment_by_name("xor_activations")
    children = client.search_runs([experiment.experiment_id], "attributes.run_name = 'keras_mlp'",
                                  order_by=["attributes.start_time DESC"], max_results=4)
    by_activation = {
        client.get_run(c.data.tags["mlflow.parentRunId"]).data.params["model.activation"]:
        c.data.metrics["train_accuracy"] for c in children
    }
    assert set(by_activation) == {"linear", "sigmoid", "tanh", "relu"}
    assert by_activation.pop("linear") <= 0.75  # a linear network cannot separate XOR
    assert set(by_activation.values()) == {1.0}


def test_zero_initialization_fails_and_says_why(client):
    results = run(compose(["+experiment=xor_zeros_init", *FAST])).metrics
    assert results["keras_mlp"]["train_accuracy"] <= 0.75
    experiment = client.get_experiment_by_name("xor_zeros_init")
    parent = client.search_runs([experiment.experiment_id], "tags.experiment = 'xor_zeros_init'")[0]
    assert "same gradient" in parent.data.tags["mlflow.note.content"]


@needs_shared
@pytest.mark.parametrize("experiment", ["mnist", "fashion_mnist"])
def test_image_experiments_on_slices(experiment):
    overrides = [f"+experiment={experiment}", "data.train_limit=3000", "data.test_limit=500",
                 "trainer.epochs=2", "baselines=none", *FAST]
    results = run(compose(overrides)).metrics["keras_mlp"]
    assert {"train_accuracy", "val_accuracy", "test_accuracy"} <= set(results)
    assert results["test_accuracy"] >= 0.7


@pytest.mark.slow
@needs_shared
@pytest.mark.parametrize(("experiment", "figure"), [("mnist", 0.975), ("fashion_mnist", 0.87)])
def test_image_experiments_reach_their_figures(experiment, figure):
    results = run(compose([f"+experiment={experiment}", *FAST])).metrics
    assert results["keras_mlp"]["test_accuracy"] >= figure
    assert {"sklearn_perceptron", "sklearn_mlp", "sklearn_logistic"} <= set(results)


def test_gradient_descent_lesson(client):
    result = lessons.run(compose(["+experiment=gd_quadratic"]))
    results = result.metrics
    outcomes = {name: r["outcome"] for name, r in results.items()}
    assert outcomes == {"lr=0.001": "crawls", "lr=0.2": "converged", "lr=1": "oscillates", "lr=1.1": "diverged"}
    assert results["lr=0.2"]["final_x"] == pytest.approx(3.0, abs=1e-6)
    assert results["lr=1"]["final_x"] == pytest.approx(10.0)
    runs = {name: client.get_run(run_id) for name, run_id in result.model_run_ids.items()}
    oscillating = runs["lr=1"]
    assert oscillating.info.status == "FINISHED" and oscillating.data.tags["outcome"] == "oscillates"
    path = sorted(client.get_metric_history(oscillating.info.run_id, "x"), key=lambda m: m.step)
    assert [m.value for m in path[:4]] == [10.0, -4.0, 10.0, -4.0] and len(path) == 51
    assert runs["lr=1.1"].info.status == "FINISHED"  # divergence is a result, not a crash
    assert "plots/descent.png" in {a.path for a in client.list_artifacts(oscillating.info.run_id, "plots")}
    # its own settings only: none of the MLP's, the optimizer's or the data's
    parent = client.get_run(result.run_id)
    assert {key.split(".")[0] for key in parent.data.params} == {"experiment_name", "lesson"}


def test_the_lesson_plot_follows_its_settings():
    from src.lessons import descend
    from src.plots import gradient_descent

    descent = descend(10.0, 2.0, 0.2, 10)
    figure = gradient_descent(descent.path, 0.2, descent.outcome, minimum=2.0, offset=0.5)
    labels = [line.get_label() for line in figure.axes[0].get_lines()]
    assert labels[0] == "f(x) = (x - 2)² + 0.5"


def test_the_lesson_runs_through_src_train(tmp_path, client):
    result = run_cli("src.train", "+experiment=gd_quadratic", "experiment_name=gd_cli", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "lr=0.2    3.0000      50     converged" in result.stdout
    assert "Logged to MLflow experiment 'gd_cli', run gd_cli-" in result.stdout
    experiment = client.get_experiment_by_name("gd_cli")
    parents = client.search_runs([experiment.experiment_id], "tags.lesson = 'gd_quadratic'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
