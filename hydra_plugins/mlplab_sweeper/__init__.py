"""mlplab's Hydra sweeper: ``python -m src.train -m hparams_search=NAME`` runs a sweep
on mlplab's own engine (:func:`src.sweep.run_sweep`). Hydra finds it because it
lives in the ``hydra_plugins`` namespace package."""
