"""Sweeps launched the Hydra way (``python -m src.train -m hparams_search=NAME``,
through ``hydra_plugins/mlplab_sweeper``): the same engine, study and MLflow runs as
``python -m src.sweep``, pruning, a search space on the command line, one-line errors."""

from __future__ import annotations

import re

import pytest
from mlflow.entities import ViewType
from optuna.trial import TrialState

from src.config import Composer
from tests.conftest import ROOT, finish, run_cli, start_cli, write_sweep
from tests.test_sweeps import load_study


def sweep_runs(client, experiment_name: str) -> tuple[object, list]:
    """The experiment's one sweep run and every run nested under it."""
    experiment = client.get_experiment_by_name(experiment_name)
    runs = client.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL, max_results=1000)
    (parent,) = [r for r in runs if r.info.run_name.startswith("sweep-")]
    assert all(r.info.status == "FINISHED" for r in runs)  # nothing left RUNNING
    return parent, [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]


def test_every_shipped_sweep_is_an_hparams_search_option():
    with Composer() as composer:
        assert composer.group_options("hparams_search") == sorted(p.stem for p in (ROOT / "sweeps").glob("*.yaml"))


@pytest.fixture(scope="module")
def two_hydra_sweeps(tmp_path_factory):
    """The issue's command and a search space on the command line, started together
    (two sweep commands at once, as a user may start them)."""
    done, by_hand = tmp_path_factory.mktemp("done"), tmp_path_factory.mktemp("by_hand")
    started = [
        start_cli("src.train", "-m", "hparams_search=xor_lr_activation", "hydra.sweeper.n_trials=6",
                  "experiment_name=hydra_done", cwd=done),
        start_cli("src.train", "-m", "+experiment=xor", "hydra/sweeper=mlplab", "hydra.sweeper.n_trials=4",
                  "hydra.sweeper.study_name=by_hand", "optimizer.learning_rate=tag(log, interval(0.001, 1))",
                  "model.activation=choice(relu, tanh)", "trainer.epochs=30", "experiment_name=hydra_space",
                  cwd=by_hand),
    ]
    return [(cwd, finish(process)) for cwd, process in zip((done, by_hand), started)]


def test_the_done_means_command_leaves_one_sweep_run_with_six_nested_trials(two_hydra_sweeps, client):
    tmp_path, result = two_hydra_sweeps[0]
    assert result.returncode == 0, result.stderr
    assert re.search(r"^trial 6/6 ", result.stdout, re.M) and "Best config:" in result.stdout
    assert "[HYDRA]" not in result.stdout + result.stderr
    parent, nested = sweep_runs(client, "hydra_done")
    trials = [r for r in nested if r.info.run_name.startswith("trial-")]
    assert len(trials) == 6
    assert parent.data.params["sweep.file"] == "xor_lr_activation.yaml"
    assert parent.data.tags["optuna.study"] == "xor_lr_activation"
    assert len(load_study(tmp_path, "xor_lr_activation").trials) == 6


def test_a_sweep_launched_each_way_gives_the_same_study_and_runs(tmp_path, client):
    # One file, with a pruner eager enough to prune within eight trials.
    path = write_sweep(
        tmp_path, "xor_eager", study_name="xor_eager", n_trials=8,
        pruner={"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 2, "n_warmup_steps": 5},
    )
    common = ["trainer.epochs=40", "baselines=none"]
    for way in ("sweep", "hydra"):
        (tmp_path / way).mkdir()
    by_sweep = start_cli("src.sweep", str(path), *common, "experiment_name=both_sweep", cwd=tmp_path / "sweep")
    by_hydra = start_cli(
        "src.train", "-m", f"hydra.searchpath=[file://{tmp_path}]", "hparams_search=xor_eager", *common,
        "experiment_name=both_hydra", cwd=tmp_path / "hydra",
    )
    for result in (finish(by_sweep), finish(by_hydra)):
        assert result.returncode == 0, result.stderr

    studies = [load_study(tmp_path / way, "xor_eager") for way in ("sweep", "hydra")]
    rows = [[(t.state, t.params, t.value) for t in study.trials] for study in studies]
    assert rows[0] == rows[1]
    assert len(rows[0]) == 8
    assert any(state == TrialState.PRUNED for state, _, _ in rows[1])  # pruning, the Hydra way too

    shapes = []
    for experiment in ("both_sweep", "both_hydra"):
        parent, nested = sweep_runs(client, experiment)
        shapes.append((
            sorted(r.info.run_name for r in nested),
            sorted((r.info.run_name, r.data.tags["optuna.state"], r.data.metrics.get("objective.train_loss"))
                   for r in nested),
            sorted(k for k in parent.data.params if k != "sweep.overrides"),
            {a.path for a in client.list_artifacts(parent.info.run_id)},
        ))
    assert shapes[0] == shapes[1]


def test_a_search_space_on_the_command_line(two_hydra_sweeps, client):
    tmp_path, result = two_hydra_sweeps[1]
    assert result.returncode == 0, result.stderr
    assert "goal:   minimize train_loss over optimizer.learning_rate, model.activation" in result.stdout
    study = load_study(tmp_path, "by_hand")
    assert len(study.trials) == 4
    for trial in study.trials:
        assert 0.001 <= trial.params["optimizer.learning_rate"] <= 1
        assert trial.params["model.activation"] in ("relu", "tanh")
        assert trial.distributions["optimizer.learning_rate"].log
    _, nested = sweep_runs(client, "hydra_space")
    assert len([r for r in nested if r.info.run_name.startswith("trial-")]) == 4
    assert {r.data.params["trainer.epochs"] for r in nested} == {"30"}


@pytest.mark.parametrize(("args", "line"), [
    (["hydra.sweeper.direction=up"],
     "hparams_search=xor_lr_activation: bad direction 'up' for train_loss; choose maximize or minimize"),
    (["hydra.sweeper.n_trials=abc"],
     "bad value hydra.sweeper.n_trials=abc: Value 'abc' of type 'str' could not be converted to Integer"),
    (["model.activation=choice(relu, tanhh)"],
     "hparams_search=xor_lr_activation: params.model.activation: bad value model.activation='tanhh': "
     "expected one of linear, sigmoid, tanh, relu, leaky_relu, elu, gelu, selu"),
    (["hydra.sweeper.sampler._target_=optuna.samplers.Nope"],
     "hparams_search=xor_lr_activation: unsupported sampler optuna.samplers.Nope; choose one of "
     "optuna.samplers.TPESampler, optuna.samplers.RandomSampler, optuna.samplers.CmaEsSampler, "
     "optuna.samplers.QMCSampler, optuna.samplers.GridSampler, optuna.samplers.NSGAIISampler"),
])
def test_bad_sweeper_settings_get_one_line_before_any_trial(tmp_path, args, line):
    result = run_cli("src.train", "-m", "hparams_search=xor_lr_activation", *args, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr_lines == [f"mlplab: error: {line}"]
    assert not (tmp_path / "mlruns").exists()  # no study, no run
