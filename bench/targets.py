"""Issue 14's speed targets, each with the figure measured when the issue was filed,
printed by the benches beside what they measured.

The filed figures are the issue's (a 2-core machine, quiet, before the work on it);
a bench's own figure comes from the minutes it ran in, so compare it with the
target, and with the filed figure only for scale.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    what: str
    at_most: bool
    """True: the figure must be at most ``limit`` (a time); False: at least (a ratio)."""
    limit: float
    unit: str
    filed: str

    def line(self, measured: float, how: str = "") -> str:
        met = (operator.le if self.at_most else operator.ge)(measured, self.limit)
        bound = "<=" if self.at_most else ">="
        return (
            f"issue 14 target: {self.what} {bound} {self.limit:g} {self.unit} (when filed: {self.filed}); "
            f"measured {measured:.3g} {self.unit}{f' {how}' if how else ''}: {'met' if met else 'NOT met'}"
        )


TARGETS = {
    "main_job": Target("the main job (+experiment=xor or iris)", True, 6, "s", "19-20 s for XOR"),
    "last_line_to_exit": Target("last printed line to exit", True, 1, "s", "2.4 s"),
    "quick_look": Target("+experiment=mnist trainer.epochs=2", True, 30, "s", "142 s"),
    "sweep": Target("the 20-trial XOR sweep, imports included", True, 10, "s", "26-29 s"),
    "plain_ratio": Target("plain Optuna over model.fit / the sweep", False, 18, "x", "182-193 s / 26-29 s, ~7x"),
    "trial_overhead": Target("a trial's overhead beside its arithmetic", True, 40, "ms",
                             "~420 ms (0.45 s a trial, 26 ms of it arithmetic)"),
    "two_workers": Target("a 100-trial XOR sweep, 1 worker / 2 workers", False, 1.6, "x",
                          "~1x on the 20-trial search"),
    "mnist_epoch": Target("a batch-32 MNIST epoch of the seed model", True, 0.6, "s", "1.16-1.86 s"),
}


def report(key: str, measured: float, how: str = "") -> None:
    """Prints target ``key``'s line with the figure a bench ``measured`` (``how``:
    the way it ran, when not a command on its own)."""
    print(TARGETS[key].line(measured, how))
