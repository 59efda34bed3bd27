"""Per-epoch cost of ``keras.Model.fit`` against the compiled engine on XOR and Iris.

For each experiment and engine (fit; compiled without XLA; compiled with XLA),
trains fresh models for a short and a long run and takes the steady per-epoch cost
as the difference of their times over the difference of their epochs (so tracing
and building cancel out). Then times a whole 2000-epoch Iris training, tracing
included, with each engine as ``trainer.jit_compile=auto`` picks it. Every figure
is the median of ``--repeats`` runs; the ratios are measured in the same run.

    python bench/small_data.py [--repeats 5] [--whole-repeats 3] [--whole-epochs 2000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from src.config import compose, validate  # noqa: E402
from src.training import DivergenceGuard, build_models, load_dataset, seed_everything  # noqa: E402

# Short and long runs per engine: fit is ~30 ms/epoch, the compiled loop ~0.1 ms.
EPOCHS = {"fit": (20, 120), "compiled": (100, 5100)}
# Each engine as measured; XLA pinned so that short and long runs use the same program.
ENGINES = {
    "fit": ["trainer.engine=fit"],
    "compiled": ["trainer.engine=compiled", "trainer.jit_compile=false"],
    "compiled+XLA": ["trainer.engine=compiled", "trainer.jit_compile=true"],
}


def fit_seconds(experiment: str, overrides: list[str], epochs: int) -> float:
    plain = validate(compose([f"+experiment={experiment}", *overrides, f"trainer.epochs={epochs}"]))
    dataset = load_dataset(plain["data"])
    seed_everything(plain["seed"])
    estimator = build_models(plain, only=["keras_mlp"])["keras_mlp"].estimator
    started = time.perf_counter()
    estimator.fit(dataset.x_train, dataset.y_train, spec=dataset.spec, listeners=[DivergenceGuard(estimator)])
    return time.perf_counter() - started


def per_epoch_seconds(experiment: str, engine: str, repeats: int, extra: list[str]) -> float:
    short, long = EPOCHS[engine.split("+")[0]]
    overrides = [*ENGINES[engine], *extra]
    fit_seconds(experiment, overrides, short)  # warm-up: first imports and traces of the process
    samples = [
        (fit_seconds(experiment, overrides, long) - fit_seconds(experiment, overrides, short)) / (long - short)
        for _ in range(repeats)
    ]
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--whole-repeats", type=int, default=3)
    parser.add_argument("--whole-epochs", type=int, default=2000)
    parser.add_argument("extra", nargs="*", help="more overrides, e.g. dropout=light")
    args = parser.parse_args()

    print(f"steady per-epoch cost, median of {args.repeats} ({' '.join(args.extra) or 'defaults'})")
    print(f"{'experiment':<12}{'fit (ms)':>10}{'compiled (us)':>15}{'ratio':>8}{'+XLA (us)':>11}{'ratio':>8}")
    for experiment in ("xor", "iris"):
        fit, compiled, xla = (per_epoch_seconds(experiment, e, args.repeats, args.extra) for e in ENGINES)
        print(f"{experiment:<12}{fit * 1e3:>10.2f}{compiled * 1e6:>15.1f}{fit / compiled:>7.0f}x"
              f"{xla * 1e6:>11.1f}{fit / xla:>7.0f}x", flush=True)

    epochs = args.whole_epochs
    print(f"\nwhole Iris training, {epochs} epochs, tracing included, median of {args.whole_repeats}")
    whole = {
        engine: statistics.median(fit_seconds("iris", overrides, epochs) for _ in range(args.whole_repeats))
        for engine, overrides in (("fit", ["trainer.engine=fit", *args.extra]), ("auto", args.extra))
    }
    print(f"{'fit (s)':>10}{'auto engine (s)':>18}{'ratio':>10}")
    print(f"{whole['fit']:>10.2f}{whole['auto']:>18.3f}{whole['fit'] / whole['auto']:>9.1f}x")


if __name__ == "__main__":
    main()
