"""Optuna sweeps: definitions in ``sweeps/``, trials through ``src.training.run``.

Modules, one job each: ``definition`` (what a checked sweep holds), ``spec``
(reading and checking a sweep: its file, or the Hydra sweeper's settings),
``study`` (sampler, pruner, counting),
``storage`` (journal or RDB; which recovery each gets), ``trial`` (the objective),
``workers`` (long-lived worker processes, dead-worker recovery), ``summary``
(progress lines, best config, tables and plots on the sweep's MLflow run). The
command itself, with its progress display, is ``src/sweep.py``.
"""
