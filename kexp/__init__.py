"""kexp: a command-line experiment runner for TensorFlow/Keras driven by YAML configs."""

import os

# TensorFlow's C++ start-up chatter drowns kexp's own output; users can still override it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
__all__ = ["__version__"]
