"""What a model tells while it trains, and who listens: the per-epoch hook shared
by the model families, the training loop (divergence guard), tracking (metric
logger), sweeps (pruning reporter) and the terminal (progress), so none of them
imports another for it."""

from __future__ import annotations

from collections.abc import Mapping


class EpochListener:
    """Receives per-epoch metrics from an iteratively trained model.

    Listeners log metrics, stop a diverging training or report to a pruner. Any of
    them may raise to stop training; the exception leaves ``fit``.
    """

    def on_epoch_end(self, epoch: int, logs: Mapping[str, float]) -> None:
        """Called after each epoch; ``epoch`` counts from 1."""

    def on_progress(self, epoch: int, logs: Mapping[str, float]) -> None:
        """Called as a model that reports no epoch metrics of its own (a scikit-learn
        baseline) says it finished an epoch; only for showing progress."""

    def on_train_end(self) -> None:
        """Called once when training ends normally."""
