"""The compiled engine trains as ``keras.Model.fit`` does: the same weights and
per-epoch losses, and the same callbacks acting on it (listeners, early stopping)."""

from __future__ import annotations


import numpy as np
import pytest

from src.config import compose, validate
from src.errors import ConfigError, DivergenceError
from src.listeners import EpochListener
from src.training import DivergenceGuard, build_models, load_dataset, seed_everything


def trained(*overrides: str, engine: str, listeners=()):
    plain = validate(compose([*overrides, f"trainer.engine={engine}"]))
    dataset = load_dataset(plain["data"])
    seed_everything(plain["seed"])
    estimator = build_models(plain, only=["keras_mlp"])["keras_mlp"].estimator
    if callable(listeners):  # listeners that need the estimator
        listeners = listeners(estimator)
    estimator.fit(dataset.x_train, dataset.y_train, spec=dataset.spec, validation_data=dataset.validation_data,
                  listeners=listeners)
    return estimator, dataset


def assert_same_training(a, b, rtol=0.0, atol=0.0):
    assert set(a.history_) == set(b.history_)
    for key in a.history_:
        np.testing.assert_allclose(a.history_[key], b.history_[key], rtol=rtol, atol=atol, err_msg=key)
    for wa, wb in zip(a.native.get_weights(), b.native.get_weights(), strict=True):
        np.testing.assert_allclose(wa, wb, rtol=rtol, atol=atol)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("dropout", ["none", "light"])
@pytest.mark.parametrize("experiment", ["xor", "iris"])
def test_compiled_engine_matches_fit(experiment, optimizer, dropout):
    overrides = [f"+experiment={experiment}", f"optimizer={optimizer}", f"dropout={dropout}",
                 "trainer.epochs=60", "optimizer.learning_rate=0.1"]
    fit, _ = trained(*overrides, engine="fit")
    compiled, _ = trained(*overrides, engine="compiled")
    assert compiled.resolved_engine(np.zeros((4, 2), np.float32)) == "compiled"
    assert len(compiled.history_["loss"]) == 60
    # Full batch without XLA runs the very same ops: equal to float32 rounding.
    assert_same_training(fit, compiled, rtol=1e-5, atol=1e-6)


def test_compiled_engine_matches_fit_with_an_adapted_normalization_layer():
    for split in (0, 1):  # one structure and shape, two adaptations: no trace may keep the first's mean
        overrides = ["+experiment=iris", "model.normalize=true", "data.standardize=false",
                     f"data.random_state={split}", "trainer.epochs=40"]
        fit, _ = trained(*overrides, engine="fit")
        compiled, dataset = trained(*overrides, engine="compiled")
        assert_same_training(fit, compiled, rtol=1e-5, atol=1e-6)
        assert compiled.score(dataset.x_test, dataset.y_test) >= 0.9


def test_compiled_engine_with_xla_matches_fit_within_float32_rounding():
    overrides = ["+experiment=iris", "trainer.epochs=100"]
    fit, _ = trained(*overrides, engine="fit")
    xla, _ = trained(*overrides, "trainer.jit_compile=true", engine="compiled")
    assert xla.resolved_jit_compile(120, 120)
    assert_same_training(fit, xla, rtol=1e-4, atol=1e-4)



def test_dropout_under_xla_drops_reproducibly_and_the_model_keeps_keras_dropout():
    import keras

    overrides = ["+experiment=iris", "trainer.epochs=100", "trainer.batch_size=16", "trainer.jit_compile=true"]
    first, dataset = trained(*overrides, "dropout=heavy", engine="compiled")
    again, _ = trained(*overrides, "dropout=heavy", engine="compiled")
    plain, _ = trained(*overrides, "dropout=none", engine="compiled")
    assert_same_training(first, again)  # the same seed draws the same masks
    # Dropout is active in training (a noisier, higher loss than the same model without it) ...
    assert first.history_["loss"][-1] > 1.5 * plain.history_["loss"][-1]
    assert first.score(dataset.x_test, dataset.y_test) >= 0.9
    # ... and the model users get and log is Keras's own.
    assert [type(layer) for layer in first.native.layers if "dropout" in layer.name] == [keras.layers.Dropout]


def test_one_process_trains_the_same_model_again_and_again_on_either_engine():
    # A sweep worker trains every trial in one process, and seeding resets
    # TensorFlow's seed only when it changes (seed_everything): each training must
    # still give the numbers of the first.
    overrides = ["+experiment=iris", "trainer.batch_size=16", "trainer.epochs=5"]
    fit_first, _ = trained(*overrides, engine="fit")
    compiled_first, _ = trained(*overrides, engine="compiled")
    compiled_again, _ = trained(*overrides, engine="compiled")
    fit_again, _ = trained(*overrides, engine="fit")
    fit_third, _ = trained(*overrides, engine="fit")
    assert_same_training(compiled_first, compiled_again)
    assert_same_training(fit_first, fit_again)
    assert_same_training(fit_first, fit_third)

def test_early_stopping_stops_both_engines_at_the_same_epoch_with_the_best_weights():
    overrides = ["+experiment=iris", "data.val_size=0.2", "trainer.epochs=400", "optimizer.learning_rate=0.1",
                 "trainer.early_stopping.enabled=true", "trainer.early_stopping.patience=5"]
    fit, dataset = trained(*overrides, engine="fit")
    compiled, _ = trained(*overrides, engine="compiled")
    stopped = len(compiled.history_["loss"])
    assert stopped < 400
    assert_same_training(fit, compiled, rtol=1e-5, atol=1e-6)
    best = int(np.argmin(compiled.history_["val_loss"]))
    assert compiled.evaluate_loss(dataset.x_val, dataset.y_val) == pytest.approx(compiled.history_["val_loss"][best], rel=1e-4)


class Recorder(EpochListener):
    def __init__(self):
        self.epochs, self.ended = [], 0

    def on_epoch_end(self, epoch, logs):
        self.epochs.append((epoch, sorted(logs)))

    def on_train_end(self):
        self.ended += 1


def test_listeners_hear_every_epoch_in_order_across_chunks():
    recorder = Recorder()
    estimator, _ = trained("+experiment=xor", "trainer.epochs=3000", engine="compiled", listeners=[recorder])
    assert [epoch for epoch, _ in recorder.epochs] == list(range(1, 3001))  # 12 chunks of 256 epochs
    assert all(keys == ["accuracy", "loss"] for _, keys in recorder.epochs)
    assert recorder.ended == 1
    assert estimator.history_["loss"][-1] < estimator.history_["loss"][0]


def test_non_finite_loss_stops_the_compiled_engine_at_its_epoch():
    recorder = Recorder()
    with pytest.raises(DivergenceError) as caught:
        trained("+experiment=iris", "optimizer=sgd", "optimizer.learning_rate=1e6", "trainer.epochs=50",
                engine="compiled", listeners=lambda estimator: [DivergenceGuard(estimator), recorder])
    # the guard raised at the first non-finite epoch of the chunk; later listeners heard none after it
    assert recorder.epochs[-1][0] == caught.value.epoch - 1
    assert caught.value.epoch < 50


def test_mini_batches_are_shuffled_reproducibly_and_learn():
    # 120 rows in batches of 16: seven full batches and a tail of 8, reshuffled every epoch
    overrides = ["+experiment=iris", "trainer.batch_size=16", "trainer.epochs=40",
                 "data.val_size=0.2", "optimizer.learning_rate=0.01"]
    first, dataset = trained(*overrides, engine="compiled")
    again, _ = trained(*overrides, engine="compiled")
    unshuffled, _ = trained(*overrides, "trainer.shuffle=false", engine="compiled")
    assert_same_training(first, again)
    assert first.history_["loss"] != unshuffled.history_["loss"]
    assert len(first.history_["val_accuracy"]) == 40
    assert first.score(dataset.x_test, dataset.y_test) >= 0.9


def test_mini_batches_without_shuffle_match_fit():
    overrides = ["+experiment=iris", "trainer.batch_size=32", "trainer.epochs=20", "trainer.shuffle=false"]
    fit, _ = trained(*overrides, engine="fit")
    compiled, _ = trained(*overrides, engine="compiled")
    assert_same_training(fit, compiled, rtol=1e-5, atol=1e-6)


def test_engine_choices_are_validated():
    with pytest.raises(ConfigError, match=r"trainer.engine='turbo': expected one of auto, fit, compiled"):
        validate(compose(["+experiment=xor", "trainer.engine=turbo"]))
    with pytest.raises(ConfigError, match=r"trainer.jit_compile='yes'"):
        validate(compose(["+experiment=xor", "trainer.jit_compile=yes"]))


def test_auto_engine_and_xla_choices():
    estimator, dataset = trained("+experiment=xor", "trainer.epochs=1", engine="auto")
    assert estimator.resolved_engine(dataset.x_train) == "compiled"
    assert not estimator.resolved_jit_compile(4, 4)  # 1 step: XLA would not pay
    estimator.epochs = 10
    assert estimator.resolved_jit_compile(54000, 32)  # MNIST-sized
    estimator.dropout_rate = 0.2
    assert estimator.resolved_jit_compile(54000, 32)  # dropout too: its masks are ThreeFry's under XLA


def test_models_of_one_structure_share_a_traced_program_but_no_weights():
    from src.models import compiled

    overrides = ["+experiment=xor", "trainer.epochs=37"]  # an epoch count no other test uses
    first, _ = trained(*overrides, "optimizer.learning_rate=0.05", engine="compiled")
    weights = first.native.get_weights()
    program = compiled._programs.newest()
    second, _ = trained(*overrides, "optimizer.learning_rate=0.2", engine="compiled")
    assert compiled._programs.newest() is program  # reused, not traced again
    reference, _ = trained(*overrides, "optimizer.learning_rate=0.2", engine="fit")
    assert_same_training(reference, second, rtol=1e-5, atol=1e-6)  # its own learning rate and weights
    for before, after in zip(weights, first.native.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)  # training the second left the first alone
