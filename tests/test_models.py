"""One ``instantiate(cfg.model)`` builds the whole configured network, and every
model keeps scikit-learn's estimator contract (get_params, clone, fit returns self)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from hydra.utils import instantiate
from sklearn.base import clone

from src.config import compose, validate
from src.errors import ConfigError
from src.models.baselines import SklearnBaseline
from src.models.keras_mlp import KerasMLP
from src.models.numpy_mlp import NumpyMLP
from src.training import evaluate, load_dataset, seed_everything
from tests.test_pinned import LOSS_RTOL, PINNED


def test_one_instantiate_of_the_model_node_trains_to_the_pinned_iris_result():
    cfg = compose(["+experiment=iris"])
    dataset = load_dataset(validate(cfg)["data"])
    model = instantiate(cfg.model)
    assert isinstance(model, KerasMLP)
    assert (model.epochs, model.dropout_rate, model.hidden_units) == (100, 0.0, [16])
    assert float(model.optimizer().learning_rate) == pytest.approx(0.05)
    seed_everything(cfg.seed)
    assert model.fit(dataset.x_train, dataset.y_train, spec=dataset.spec) is model
    metrics = evaluate(model, dataset)
    pinned = PINNED["iris"][1]["keras_mlp"]
    assert metrics["test_accuracy"] == pinned["test_accuracy"]
    assert metrics["train_loss"] == pytest.approx(pinned["train_loss"], rel=LOSS_RTOL)
    # without being told, fit infers the task and the classes from y
    seed_everything(cfg.seed)
    alone = instantiate(cfg.model).fit(dataset.x_train, dataset.y_train)
    assert (alone.task_, alone.spec_.n_classes) == ("multiclass", 3)
    assert alone.score(dataset.x_test, dataset.y_test) >= 0.9


def test_group_choices_reach_the_model_through_the_config():
    cfg = compose(["+experiment=xor", "optimizer=sgd", "init=he_normal", "dropout=light",
                   "regularizer=l2", "trainer.epochs=50", "optimizer.learning_rate=1"])
    model = instantiate(validate(cfg)["model"], _convert_="all")
    optimizer = model.optimizer()
    assert isinstance(optimizer, keras.optimizers.SGD)
    assert float(optimizer.learning_rate) == pytest.approx(1.0)  # an int from the command line, made a float
    assert isinstance(model.kernel_initializer(), keras.initializers.HeNormal)
    assert isinstance(model.kernel_regularizer, keras.regularizers.L2)
    assert (model.dropout_rate, model.epochs) == (0.2, 50)
    assert instantiate(compose(["+experiment=xor"]).model).kernel_regularizer is None


def test_a_wired_value_is_set_where_it_comes_from():
    with pytest.raises(ConfigError, match=r"model.epochs comes from trainer.epochs: set trainer.epochs=5 instead"):
        compose(["+experiment=xor", "model.epochs=5"])


@pytest.mark.parametrize(
    "estimator",
    [
        KerasMLP([4], "relu", epochs=3),
        NumpyMLP([3], "tanh", learning_rate=0.5, epochs=5),
        SklearnBaseline(__import__("sklearn.linear_model", fromlist=["Perceptron"]).Perceptron(max_iter=7)),
    ],
    ids=["keras_mlp", "numpy_mlp", "sklearn_baseline"],
)
def test_every_model_keeps_the_estimator_contract(estimator):
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
    y = np.array([0, 1, 1, 0])
    params = estimator.get_params()
    copy = clone(estimator)  # raises if __init__ changed a parameter
    assert copy.get_params().keys() == params.keys()
    assert estimator.fit(x, y) is estimator
    assert estimator.task_ == "binary"
    assert estimator.predict(x).shape == (4,)
    fitted_attributes = {name for name in vars(estimator) if name.endswith("_")}
    assert fitted_attributes and not fitted_attributes & set(params)
    assert not {name for name in vars(clone(estimator)) if name.endswith("_")}  # a clone is unfitted


@pytest.mark.parametrize("overrides", [
    ["optimizer=adagrad", "init=he_normal", "regularizer=l2", "dropout=light"],  # Adagrad starts at 0.1, not 0
    ["optimizer=sgd_nesterov", "model.normalize=true", "trainer.batch_size=16"],
    ["trainer.engine=fit", "dropout=light"],  # Keras's own fit on the reused network
])
def test_a_disposable_model_is_reused_and_trains_as_a_fresh_build_does(overrides):
    import random

    from src.models.base import disposable_models
    from src.training import build_models

    def trained(learning_rate, disposable):
        plain = validate(compose(["+experiment=iris", "trainer.epochs=30", *overrides,
                                  f"optimizer.learning_rate={learning_rate}"]))
        dataset = load_dataset(plain["data"])
        seed_everything(plain["seed"])
        estimator = build_models(plain, only=["keras_mlp"])["keras_mlp"].estimator
        if disposable:
            with disposable_models():
                estimator.fit(dataset.x_train, dataset.y_train, spec=dataset.spec,
                              validation_data=dataset.validation_data)
        else:
            estimator.fit(dataset.x_train, dataset.y_train, spec=dataset.spec,
                          validation_data=dataset.validation_data)
        estimator.metrics_ = evaluate(estimator, dataset)
        estimator.random_state_ = (random.getstate(), np.random.get_state()[1].tolist())
        return estimator

    kept = trained(0.05, disposable=True)
    reused = trained(0.01, disposable=True)  # another learning rate: the same recipe
    fresh = trained(0.01, disposable=False)
    assert reused.model_ is kept.model_
    assert fresh.model_ is not reused.model_  # outside disposable_models, every fit builds its own
    assert reused.history_ == fresh.history_
    assert {k: v for k, v in reused.metrics_.items() if k != "fit_seconds"} == {
        k: v for k, v in fresh.metrics_.items() if k != "fit_seconds"}
    for a, b in zip(fresh.model_.get_weights(), reused.model_.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(fresh.model_.optimizer.variables, reused.model_.optimizer.variables, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    assert float(reused.model_.optimizer.learning_rate) == pytest.approx(0.01)
    assert reused.random_state_ == fresh.random_state_  # the same draws, so later draws agree too
