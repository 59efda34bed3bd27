"""Optuna sweeps: definitions in ``sweeps/``, trials through ``src.training.run``.

Modules, one job each: ``spec`` (the sweep file), ``study`` (sampler, pruner,
counting), ``storage`` (journal or RDB, with heartbeats), ``trial`` (the
objective), ``workers`` (long-lived worker processes and the progress display),
``summary`` (best config, tables and plots on the sweep's MLflow run).
"""
