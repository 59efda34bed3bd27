"""The figures a refactoring must not move: the same config and seed give these
metrics on CPU, before and after any change to the code's shape.

Pinned on 2026-12-02 from ``src.training.run`` (plots and model logging off, which
do not touch the training). Losses are compared to 1e-5 relative: a reordering
of float32 sums may move the last digits, and so do another CPU's kernels (an
Iris test loss moved by 1.0e-6 relative on another machine's CPU, an AMD EPYC
with AVX2); any change to what is trained moves them by far more.
"""

from __future__ import annotations

import pytest

from src.config import compose
from src.training import run

QUIET = ["tracking.plots=false", "tracking.log_models=false"]
LOSS_RTOL = 1e-5
"""How far a pinned loss may move: float32 rounding, not a change to what is trained."""
PINNED = {
    "xor": (
        ["+experiment=xor"],
        {
            "keras_mlp": {"train_accuracy": 1.0, "train_loss": 0.0017684337217360735, "n_params": 33},
            "sklearn_perceptron": {"train_accuracy": 0.5},
            "sklearn_mlp": {"train_accuracy": 1.0, "train_loss": 0.028853589668869972},
        },
    ),
    "iris": (
        ["+experiment=iris"],
        {
            "keras_mlp": {"train_accuracy": 0.9833333333333333, "train_loss": 0.030454758554697037,
                          "test_accuracy": 1.0, "test_loss": 0.02326086536049843, "n_params": 131},
            "sklearn_perceptron": {"train_accuracy": 0.8166666666666667, "test_accuracy": 0.7666666666666667},
            "sklearn_mlp": {"train_accuracy": 0.9833333333333333, "train_loss": 0.06177027305739709,
                            "test_accuracy": 1.0, "test_loss": 0.04078763788462898},
        },
    ),
    "numpy_mlp": (
        ["+experiment=xor", "model=numpy_mlp", "optimizer=sgd", "optimizer.learning_rate=2",
         "trainer.epochs=3000", "trainer.loss=mse", "baselines=none"],
        {"numpy_mlp": {"train_accuracy": 1.0, "train_loss": 6.946086131089166e-05, "n_params": 33}},
    ),
}


@pytest.mark.parametrize("case", PINNED)
def test_pinned_metrics(case):
    overrides, expected = PINNED[case]
    results = run(compose([*overrides, *QUIET, f"experiment_name=pinned_{case}"])).metrics
    assert set(results) == set(expected)
    for model, metrics in expected.items():
        got = {k: v for k, v in results[model].items() if k != "fit_seconds"}
        assert set(got) == set(metrics), model
        for key, value in metrics.items():
            if key.endswith("loss"):
                assert got[key] == pytest.approx(value, rel=LOSS_RTOL), f"{model}.{key}"
            else:
                assert got[key] == value, f"{model}.{key}"
