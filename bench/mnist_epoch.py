"""MNIST epoch time of the seed model: plain ``fit``, Keras's own ``steps_per_execution``,
mlplab's path, and scikit-learn.

For batch sizes 32 and 128, trains the MNIST experiment's model (784-128-10, ReLU,
dropout 0.2, Adam) for a few epochs with ``trainer.engine=fit`` (plain
``keras.Model.fit``), with ``fit`` compiled with ``steps_per_execution`` (Keras's
own way to run several steps per call), with the default engine, and scikit-learn's
``MLPClassifier(128)`` with the same batch size on the same rows. Prints the
steady epoch time (median of the epochs after the first, which traces), the
achieved training GFLOP/s, and the fraction of this machine's float32 matmul
peak, which the script measures itself.

    python bench/mnist_epoch.py [--epochs 4] [--batch-sizes 32 128] [--steps-per-execution 64] [--xla]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from bench.targets import report  # noqa: E402
from src.config import compose, validate  # noqa: E402
from src.listeners import EpochListener  # noqa: E402
from src.training import build_models, load_dataset, seed_everything  # noqa: E402


class EpochClock(EpochListener):
    def __init__(self) -> None:
        self.times = [time.perf_counter()]

    def on_epoch_end(self, epoch: int, logs: object) -> None:
        self.times.append(time.perf_counter())

    def steady(self) -> float:
        return statistics.median(np.diff(self.times)[1:])


def matmul_peak_gflops(n: int = 2048, repeats: int = 10) -> float:
    """Best float32 matmul rate of TensorFlow and NumPy on this machine."""
    import tensorflow as tf

    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    ta = tf.constant(a)
    best = 0.0
    for matmul in (lambda: tf.linalg.matmul(ta, ta).numpy(), lambda: a @ a):
        matmul()
        seconds = min(_timed(matmul) for _ in range(repeats))
        best = max(best, 2 * n**3 / seconds / 1e9)
    return best


def _timed(fn: object) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def training_flops_per_sample(layer_sizes: list[int]) -> int:
    """Multiply-adds x2 of forward, weight gradients, and input gradients past the first layer."""
    flops = 0
    for i, (n_in, n_out) in enumerate(zip(layer_sizes, layer_sizes[1:], strict=False)):
        flops += 2 * n_in * n_out * (3 if i else 2)
    return flops


def keras_epoch(
    batch_size: int, epochs: int, engine: str, extra: list[str], steps_per_execution: int = 1
) -> tuple[float, float]:
    import keras

    plain = validate(compose(["+experiment=mnist", f"trainer.batch_size={batch_size}",
                              f"trainer.epochs={epochs}", f"trainer.engine={engine}", *extra]))
    dataset = load_dataset(plain["data"])
    seed_everything(plain["seed"])
    estimator = build_models(plain, only=["keras_mlp"])["keras_mlp"].estimator
    clock = EpochClock()
    compile_model = keras.Model.compile

    def compile_with_steps(model: keras.Model, *args: object, **kwargs: object) -> None:
        compile_model(model, *args, **{**kwargs, "steps_per_execution": steps_per_execution})

    if steps_per_execution > 1:
        keras.Model.compile = compile_with_steps  # the model mlplab builds, compiled Keras's way
    try:
        estimator.fit(dataset.x_train, dataset.y_train, spec=dataset.spec, validation_data=dataset.validation_data, listeners=[clock])
    finally:
        keras.Model.compile = compile_model
    return clock.steady(), estimator.score(dataset.x_test, dataset.y_test)


def sklearn_epoch(batch_size: int, epochs: int) -> tuple[float, float]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    plain = validate(compose(["+experiment=mnist"]))
    dataset = load_dataset(plain["data"])
    x_train, x_test = dataset.scaling.apply(dataset.x_train), dataset.scaling.apply(dataset.x_test)  # pixels / 255
    model = MLPClassifier((128,), batch_size=batch_size, max_iter=1, warm_start=True, random_state=0)
    clock = EpochClock()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for epoch in range(epochs):
            model.fit(x_train, dataset.y_train)
            clock.on_epoch_end(epoch + 1, {})
    return clock.steady(), model.score(x_test, dataset.y_test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--steps-per-execution", type=int, default=64,
                        help="steps per call for the keras fit row that uses Keras's own option")
    parser.add_argument("--xla", action="store_true", help="also time the compiled engine forced onto XLA")
    args = parser.parse_args()

    peak = matmul_peak_gflops()
    plain = validate(compose(["+experiment=mnist"]))
    dataset = load_dataset(plain["data"])
    n_rows = len(dataset.x_train)
    sizes = [dataset.n_features, *plain["model"]["hidden_units"], dataset.n_classes]
    flops = training_flops_per_sample(sizes) * n_rows
    print(f"MNIST {n_rows} training rows, layers {'-'.join(map(str, sizes))}, "
          f"{flops / 1e9:.1f} GFLOP per training epoch; {os.cpu_count()} cores, "
          f"float32 matmul peak {peak:.0f} GFLOP/s (measured)")
    print(f"steady epoch: median of epochs 2-{args.epochs}\n")
    print(f"{'batch':>5}  {'what':<34}{'epoch (s)':>10}{'GFLOP/s':>9}{'of peak':>8}{'test acc':>9}{'vs fit':>8}")
    for batch in args.batch_sizes:
        steps = args.steps_per_execution
        rows = [("keras fit (trainer.engine=fit)", keras_epoch(batch, args.epochs, "fit", [])),
                (f"keras fit, steps_per_execution={steps}", keras_epoch(batch, args.epochs, "fit", [], steps)),
                ("mlplab (trainer.engine=auto)", keras_epoch(batch, args.epochs, "auto", []))]
        if args.xla:
            rows.append(("compiled + XLA", keras_epoch(batch, args.epochs, "compiled", ["trainer.jit_compile=true"])))
        rows.append(("sklearn MLPClassifier(128)", sklearn_epoch(batch, args.epochs)))
        fit_seconds = rows[0][1][0]
        for what, (seconds, accuracy) in rows:
            rate = flops / seconds / 1e9
            print(f"{batch:>5}  {what:<34}{seconds:>10.3f}{rate:>9.1f}{rate / peak:>8.1%}"
                  f"{accuracy:>9.4f}{fit_seconds / seconds:>7.2f}x", flush=True)
        if batch == 32:
            report("mnist_epoch", dict(rows)["mlplab (trainer.engine=auto)"][0])


if __name__ == "__main__":
    main()
