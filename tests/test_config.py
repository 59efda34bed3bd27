"""Composition and validation: every experiment and option composes; every bad
input is one readable line, reported before TensorFlow is imported."""

from __future__ import annotations

import subprocess
import sys

import pytest

from src.config import CONF_DIR, Composer, compose, expand_sweep, validate
from src.schema import resolve_loss
from src.errors import ConfigError
from tests.conftest import ROOT, run_cli

EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
GROUPS = ("data", "model", "optimizer", "dropout", "init", "regularizer", "trainer", "baselines", "tracking")


def test_every_shipped_experiment_is_there():
    assert {
        "xor", "xor_perceptron", "iris", "iris_setosa_2d", "mnist", "fashion_mnist", "auto_mpg",
        "digits", "xor_activations", "xor_zeros_init",
    } <= set(EXPERIMENTS)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_and_validates(experiment):
    cfg = compose([f"+experiment={experiment}"])
    assert cfg.experiment_name == experiment
    assert set(cfg) >= set(GROUPS)


def test_defaults_list_leaves_experiment_out():
    # `+experiment=...` only works while experiment is not in the defaults list.
    text = (CONF_DIR / "config.yaml").read_text()
    assert "experiment:" not in text.split("_self_")[0]
    assert "experiment" not in compose([])


def test_every_option_of_every_group_composes():
    with Composer() as composer:
        for group in GROUPS:
            options = composer.group_options(group)
            assert options, group
            for option in options:
                # a CSV needs to know which file and column; everything else has defaults
                extra = {
                    ("data", "csv"): ["data.path=x.csv", "data.target=y"],
                    ("model", "numpy_mlp"): ["optimizer=sgd"],  # it trains with plain SGD only
                }.get((group, option), [])
                validate(composer.compose([f"{group}={option}", *extra]))


def test_required_options_exist():
    with Composer() as composer:
        assert set(composer.group_options("optimizer")) >= {
            "sgd", "sgd_momentum", "sgd_nesterov", "rmsprop", "adagrad", "adam"
        }
        assert set(composer.group_options("init")) >= {
            "glorot_uniform", "glorot_normal", "he_normal", "he_uniform",
            "lecun_normal", "random_normal", "zeros",
        }
        assert set(composer.group_options("regularizer")) >= {"none", "l1", "l2", "l1_l2"}
        assert set(composer.group_options("dropout")) >= {"none", "light", "heavy"}
        assert set(composer.group_options("model")) >= {"mlp", "perceptron"}
        assert set(composer.group_options("data")) >= {
            "xor", "iris", "iris_setosa_2d", "mnist", "fashion_mnist", "auto_mpg", "digits", "csv"
        }
        assert set(composer.group_options("tracking")) >= {"local", "server"}
        assert set(composer.group_options("baselines")) >= {"none", "sklearn"}


def test_option_values():
    assert compose(["dropout=light"]).dropout.rate == 0.2
    assert compose(["dropout=heavy"]).dropout.rate == 0.5
    assert compose(["optimizer=sgd_nesterov"]).optimizer.nesterov is True
    assert compose(["data=iris"]).data.test_size == 0.2
    assert list(compose(["model=perceptron"]).model.hidden_units) == []


def test_experiments_choose_only_groups_that_differ_from_the_defaults():
    for experiment in (CONF_DIR / "experiment").glob("*.yaml"):
        text = experiment.read_text()
        for restated in ("override /model: mlp\n", "override /optimizer: adam\n", "override /baselines: sklearn\n"):
            assert restated not in text, f"{experiment.name} restates the default {restated.strip()}"
        assert "trainer:\n  epochs: 100\n" not in text, f"{experiment.name} restates the default trainer.epochs"


def test_command_line_values_override_experiment():
    cfg = compose(["+experiment=xor", "optimizer=sgd", "optimizer.learning_rate=0.5", "seed=3"])
    assert cfg.optimizer._target_ == "keras.optimizers.SGD"
    assert cfg.optimizer.learning_rate == 0.5
    assert cfg.seed == 3


def test_a_written_primary_config_composes_the_same_and_keeps_group_choices(tmp_path):
    from omegaconf import OmegaConf

    overrides = ["+experiment=iris", "optimizer=rmsprop", "optimizer.learning_rate=0.03",
                 "model.activation=tanh", "trainer.epochs=7"]
    with Composer() as composer:
        (tmp_path / "best.yaml").write_text(OmegaConf.to_yaml(composer.primary_config(overrides)))
    plain = OmegaConf.to_container
    with Composer(tmp_path, "best") as composer:
        same, changed = composer.compose([]), composer.compose(["optimizer=sgd", "seed=3"])
    assert plain(same, resolve=True) == plain(compose(overrides), resolve=True)
    assert changed.optimizer._target_ == "keras.optimizers.SGD"  # a group choice, not a value dump
    assert plain(changed, resolve=True) == plain(compose([*overrides, "optimizer=sgd", "seed=3"]), resolve=True)


def test_environment_tracking_uri_wins(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert compose([]).tracking.uri == "http://127.0.0.1:5999"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert compose([]).tracking.uri == "sqlite:///mlruns/mlflow.db"


def test_multirun_expansion():
    jobs = expand_sweep(["+experiment=xor", "seed=0,1,2"])
    assert [sorted(job) for job in jobs] == [
        sorted(["+experiment=xor", f"seed={s}"]) for s in range(3)
    ]


def test_loss_follows_task_unless_set():
    assert resolve_loss(None, "binary") == "binary_crossentropy"
    assert resolve_loss(None, "multiclass") == "sparse_categorical_crossentropy"
    assert resolve_loss(None, "regression") == "mse"
    assert resolve_loss("mse", "binary") == "mse"
    with pytest.raises(ConfigError, match="trainer.loss='categorical_crossentropy'"):
        resolve_loss("categorical_crossentropy", "binary")


BAD_INPUTS = [
    (["optimizer=adamm"], "optimizer='adamm'", "adam, rmsprop"),
    (["+experiment=nope"], "experiment='nope'", "iris, iris_setosa_2d"),
    (["trainer.epochz=5"], "trainer.epochz", "epochs"),
    (["+trainer.epochz=5"], "trainer.epochz", "epochs"),
    (["+lr=0.1"], "lr", "optimizer"),
    (["trainer.epochs=abc"], "trainer.epochs='abc'", "an integer > 0"),
    (["trainer.epochs=2.5"], "trainer.epochs=2.5", "an integer > 0"),
    (["optimizer.learning_rate=0"], "optimizer.learning_rate=0", "> 0"),
    (["optimizer.learning_rate=-0.1"], "optimizer.learning_rate=-0.1", "> 0"),
    (["optimizer.learning_rate=nan"], "optimizer.learning_rate=nan", "finite"),
    (["optimizer.learning_rate=inf"], "optimizer.learning_rate=inf", "finite"),
    (["dropout.rate=1.0"], "dropout.rate=1.0", "< 1"),
    (["dropout.rate=-0.1"], "dropout.rate=-0.1", ">= 0"),
    (["trainer.epochs=0"], "trainer.epochs=0", "> 0"),
    (["trainer.batch_size=0"], "trainer.batch_size=0", "> 0"),
    (["trainer.batch_size=-4"], "trainer.batch_size=-4", "> 0"),
    (["model.hidden_units=[4,0]"], "model.hidden_units=[4, 0]", "integers > 0"),
    (["seed=-1"], "seed=-1", ">= 0"),
    (["data=iris", "data.test_size=0"], "data.test_size=0", "> 0 and < 1"),
    (["data=iris", "data.test_size=1.5"], "data.test_size=1.5", "> 0 and < 1"),
    (["trainer.loss=hinge"], "trainer.loss='hinge'", "binary_crossentropy"),
    (["model.activation=relux"], "model.activation='relux'", "leaky_relu"),
    (["model.output_activation=foo"], "model.output_activation='foo'", "softmax"),
    (["seed=[1"], "seed=[1", "cannot parse"),
    # a choice of mixed types is matched with its type: true is not 1
    (["trainer.verbose=true"], "trainer.verbose=True", "one of 0, 1, 2"),
    (["trainer.jit_compile=1"], "trainer.jit_compile=1", "one of auto, True, False"),
]


@pytest.mark.parametrize(("overrides", "names", "allowed"), BAD_INPUTS)
def test_bad_input_is_one_clear_error(overrides, names, allowed):
    with pytest.raises(ConfigError) as caught:
        compose(["+experiment=xor", *overrides])
    message = str(caught.value)
    assert "\n" not in message
    assert names in message
    assert allowed in message


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        (["optimizer=adamm"], "optimizer='adamm'"),
        (["+experiment=nope"], "experiment='nope'"),
        (["trainer.epochs=abc"], "trainer.epochs='abc'"),
        (["optimizer.learning_rate=0"], "optimizer.learning_rate=0"),
        (["data=iris", "trainer.loss=binary_crossentropy"], "trainer.loss='binary_crossentropy'"),
        (["+baselines.sklearn_mlp.bogus=1"], "bogus"),
    ],
)
def test_cli_bad_input_exits_nonzero_with_one_line(tmp_path, overrides, names):
    # Promptly too: a baselines' process that never got its job once held the error 60 s.
    result = run_cli("src.train", "+experiment=xor", *overrides, cwd=tmp_path, timeout=45)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert len(result.stderr_lines) == 1, result.stderr
    assert result.stderr_lines[0].startswith("mlplab: error: ")
    assert names in result.stderr_lines[0]


def test_cli_rejects_a_bad_multirun_job_before_running_any(tmp_path):
    result = run_cli("src.train", "-m", "+experiment=xor", "seed=0,-1", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr_lines == ["mlplab: error: bad value seed=-1: expected an integer >= 0"]
    assert "keras_mlp" not in result.stdout


def test_validation_does_not_import_tensorflow():
    code = (
        "import sys; from src.config import compose\n"
        "try:\n    compose(['+experiment=xor', 'trainer.epochs=abc'])\n"
        "except Exception as e:\n    print(type(e).__name__)\n"
        "print('tensorflow' in sys.modules, 'mlflow' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["ConfigError", "False", "False"]


def test_bad_baseline_parameter_fails_its_run_with_one_line(client):
    from src.training import run

    overrides = ["+experiment=xor", "trainer.epochs=2", "baselines.sklearn_mlp.max_iter=-5",
                 "experiment_name=bad_baseline", "tracking.log_models=false"]
    with pytest.raises(ConfigError) as caught:
        run(compose(overrides))
    assert "'max_iter' parameter of MLPClassifier must be an int in the range [1, inf). Got -5" in str(caught.value)
    runs = client.search_runs([client.get_experiment_by_name("bad_baseline").experiment_id])
    assert {r.info.run_name: r.info.status for r in runs}["sklearn_mlp"] == "FAILED"
