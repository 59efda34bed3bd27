"""mlplab: an experiment lab for neural-network fundamentals."""

import os

# Set before anything imports TensorFlow: Keras on TensorFlow, and no C++ info lines.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
