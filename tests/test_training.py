"""The training path: every option builds and trains, the documented figures hold,
and the same config and seed give the same metrics."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from src.config import compose, validate
from src.models.baselines import SklearnBaseline
from src.models.keras_mlp import KerasMLP
from src.training import build_models, load_dataset, run, seed_everything

FAST = ["tracking.log_models=false"]


def keras_model_for(*overrides: str) -> tuple[KerasMLP, keras.Model, object]:
    plain = validate(compose(["+experiment=xor", "trainer.epochs=2", *overrides]))
    dataset = load_dataset(plain["data"])
    seed_everything(plain["seed"])
    estimator = build_models(plain)["keras_mlp"].estimator
    estimator.fit(dataset.x_train, dataset.y_train, spec=dataset.spec)
    return estimator, estimator.model_, dataset


OPTIONS = [
    ("model", "mlp"), ("model", "perceptron"),
    *[("optimizer", o) for o in ("sgd", "sgd_momentum", "sgd_nesterov", "rmsprop", "adagrad", "adam")],
    *[("init", o) for o in ("glorot_uniform", "glorot_normal", "he_normal", "he_uniform",
                            "lecun_normal", "random_normal", "zeros")],
    *[("regularizer", o) for o in ("none", "l1", "l2", "l1_l2")],
    *[("dropout", o) for o in ("none", "light", "heavy")],
]


@pytest.mark.parametrize(("group", "option"), OPTIONS)
def test_every_option_builds_and_trains(group, option):
    estimator, _, dataset = keras_model_for(f"{group}={option}")
    estimator.fit(dataset.x_train, dataset.y_train)
    assert len(estimator.history_["loss"]) == 2
    assert all(np.isfinite(estimator.history_["loss"]))
    assert estimator.predict(dataset.x_train).shape == (4,)


def test_options_reach_the_keras_model():
    _, model, _ = keras_model_for("optimizer=sgd_nesterov", "optimizer.learning_rate=0.3")
    assert isinstance(model.optimizer, keras.optimizers.SGD)
    assert model.optimizer.nesterov and model.optimizer.momentum == 0.9
    assert float(model.optimizer.learning_rate) == pytest.approx(0.3)

    _, model, _ = keras_model_for("model.hidden_units=[5,3]", "dropout=heavy", "regularizer=l1_l2")
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    dropout = [layer for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    assert [layer.units for layer in dense] == [5, 3, 1]
    assert [layer.rate for layer in dropout] == [0.5, 0.5]
    assert all(isinstance(layer.kernel_regularizer, keras.regularizers.L1L2) for layer in dense)

    _, model, _ = keras_model_for("init=zeros")
    assert all(not np.any(layer.kernel.numpy()) for layer in model.layers)


def test_output_layer_follows_the_task():
    _, model, _ = keras_model_for()
    assert model.layers[-1].units == 1 and model.layers[-1].activation.__name__ == "sigmoid"
    _, model, _ = keras_model_for("data=iris")
    assert model.layers[-1].units == 3 and model.layers[-1].activation.__name__ == "softmax"
    _, model, _ = keras_model_for("model.output_activation=tanh")
    assert model.layers[-1].activation.__name__ == "tanh"


def test_each_hidden_layer_gets_its_own_initial_weights():
    _, model, _ = keras_model_for("model.hidden_units=[2,2]")
    first, second = (layer.kernel.numpy() for layer in model.layers[:2])
    assert not np.allclose(first, second)


def test_keras_weight_snapshots_start_at_the_initializer():
    estimator, _, dataset = keras_model_for("init=random_normal", "model.hidden_units=[3,5]")
    estimator.fit(dataset.x_train, dataset.y_train)
    snapshots = estimator.weight_snapshots()
    assert [start.shape for start, _ in snapshots.values()] == [(2, 3), (3, 5)]  # hidden layers only
    for start, end in snapshots.values():
        assert np.abs(start).max() < 0.25  # RandomNormal(stddev=0.05): 5 sigma, before any step
        assert not np.allclose(start, end)


def test_baselines_are_built_from_the_config():
    plain = validate(compose(["+experiment=iris_setosa_2d"]))
    models = build_models(plain)
    assert list(models) == ["keras_mlp", "sklearn_perceptron", "sklearn_mlp"]
    perceptron = models["sklearn_perceptron"].estimator
    assert isinstance(perceptron, SklearnBaseline)
    assert perceptron.estimator.get_params()["random_state"] == 32
    assert models["sklearn_mlp"].params["max_iter"] == 1000


def test_image_baselines_follow_the_trainers_epochs_unless_set():
    def passes(*overrides):
        models = build_models(validate(compose(["+experiment=mnist", *overrides])))
        return {name: models[name].estimator.estimator.get_params()["max_iter"]
                for name in ("sklearn_perceptron", "sklearn_mlp")}

    assert passes() == {"sklearn_perceptron": 10, "sklearn_mlp": 10}
    assert passes("trainer.epochs=2") == {"sklearn_perceptron": 2, "sklearn_mlp": 2}  # a quick look is quick
    assert passes("trainer.epochs=2", "baselines.sklearn_mlp.max_iter=7") == {"sklearn_perceptron": 2, "sklearn_mlp": 7}


# ---------------------------------------------------------------- the figures
@pytest.mark.parametrize("seed", [0, 1])
def test_xor_mlp_solves_xor(seed):
    results = run(compose(["+experiment=xor", f"seed={seed}", *FAST])).metrics
    assert results["keras_mlp"]["train_accuracy"] == 1.0


@pytest.mark.parametrize("seed", [0, 3])
def test_a_single_unit_cannot_solve_xor(seed):
    results = run(compose(["+experiment=xor_perceptron", f"seed={seed}", *FAST])).metrics
    assert results["keras_mlp"]["train_accuracy"] <= 0.75
    assert results["sklearn_perceptron"]["train_accuracy"] <= 0.75
    assert results["keras_mlp"]["n_params"] == 3


def test_iris_setosa_2d_reference_figures():
    results = run(compose(["+experiment=iris_setosa_2d", *FAST])).metrics
    assert results["sklearn_perceptron"]["train_accuracy"] == pytest.approx(0.8533, abs=5e-5)
    assert results["sklearn_mlp"]["train_accuracy"] == pytest.approx(0.9933, abs=5e-5)
    assert results["keras_mlp"]["train_accuracy"] >= 0.99


def test_iris_mlp_beside_its_baselines():
    results = run(compose(["+experiment=iris", *FAST])).metrics
    assert results["keras_mlp"]["test_accuracy"] >= 0.93
    # the README's figures: the baselines do not depend on the Keras settings
    assert results["sklearn_perceptron"]["test_accuracy"] == pytest.approx(0.7667, abs=1e-4)
    assert results["sklearn_mlp"]["test_accuracy"] == 1.0
    assert {"train_loss", "test_loss"} <= set(results["sklearn_mlp"])
    assert "test_loss" not in results["sklearn_perceptron"]  # a Perceptron has no probabilistic loss


def test_validation_split_gives_per_epoch_validation_metrics():
    plain = validate(compose(["+experiment=iris", "data.val_size=0.2", "trainer.epochs=3"]))
    dataset = load_dataset(plain["data"])
    assert (len(dataset.x_train), len(dataset.x_val), len(dataset.x_test)) == (90, 30, 30)
    estimator = build_models(plain)["keras_mlp"].estimator
    estimator.fit(dataset.x_train, dataset.y_train, spec=dataset.spec, validation_data=dataset.validation_data)
    assert len(estimator.history_["val_accuracy"]) == 3


def test_same_config_and_seed_give_identical_metrics():
    overrides = ["+experiment=iris", "trainer.epochs=30", "dropout=light", *FAST]
    first = run(compose(overrides)).metrics
    second = run(compose(overrides)).metrics
    other_seed = run(compose([*overrides, "seed=1"])).metrics
    for results in (first, second, other_seed):
        for metrics in results.values():
            metrics.pop("fit_seconds")
    assert first == second
    assert first != other_seed
