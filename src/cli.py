"""``mlplab COMMAND [ARGS ...]``: one console command for every ``python -m src.COMMAND``.

``mlplab train +experiment=xor`` is ``python -m src.train +experiment=xor``: the same
arguments, output, errors and exit codes, since it runs the command module's own
``main`` in this process. The ``python -m`` forms keep working.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from src.warm import SERVED_COMMANDS

COMMANDS = {
    "train": "train a model beside its baselines: mlplab train +experiment=xor",
    "sweep": "run or resume an Optuna sweep: mlplab sweep sweeps/xor_lr_activation.yaml",
    "ui": "browse the runs in the MLflow UI",
    "dashboard": "watch a sweep in optuna-dashboard: mlplab dashboard sweeps/NAME.yaml",
    "predict": "predict with a logged model: mlplab predict --experiment iris --input X.csv",
    "report": "print each experiment's latest results",
    "warm": "keep the imports warm: train, sweep, predict and report hand it their jobs and skip 6-10 s",
}
"""Each command, by the module ``src.<command>`` that runs it, with what it does."""

USAGE = "usage: mlplab {" + ",".join(COMMANDS) + "} [ARGS ...]"


def help_text() -> str:
    width = max(map(len, COMMANDS))
    lines = [USAGE, "", "commands:"]
    lines += [f"  {name:<{width}}  {what}" for name, what in COMMANDS.items()]
    lines += ["", "mlplab COMMAND --help shows a command's own arguments; "
              "mlplab COMMAND ... is python -m src.COMMAND ..."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Runs ``src.<command>``'s ``main`` with the remaining arguments as its own."""
    from src.errors import run_command

    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(help_text(), file=sys.stdout if args else sys.stderr)
        raise SystemExit(0 if args else 2)
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(f"mlplab: error: unknown command {command!r}: choose one of {', '.join(COMMANDS)} "
              "(mlplab --help)", file=sys.stderr)
        raise SystemExit(2)
    if argv is None and command in SERVED_COMMANDS:
        from src.warm import hand_off

        hand_off("src.cli")  # a warm process, if one serves this checkout, runs the job (src/warm.py)
    module = importlib.import_module(f"src.{command}")
    # Every command reads its arguments from sys.argv (Hydra's task among them).
    sys.argv = [f"mlplab {command}", *rest]
    run_command(module.main)


if __name__ == "__main__":
    main()
