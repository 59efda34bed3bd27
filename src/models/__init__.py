"""Models with one estimator-like interface (fit / predict / score), so the
training loop treats the Keras MLP, the NumPy MLP and the scikit-learn baselines
alike. The interface is :class:`src.models.base.Estimator`; this package imports
nothing itself, so a light module (the config schema) can read its tables."""
