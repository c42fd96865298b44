"""Importing TensorFlow without its start-up chatter.

TensorFlow's C++ runtime writes to file descriptor 2 before Python's logging is set up (oneDNN
notices, "Could not find cuda drivers", a cuInit error on machines without a GPU), and
``TF_CPP_MIN_LOG_LEVEL`` no longer silences all of it. kexp's own messages go to stderr too, so
the first import and device initialisation run with fd 2 pointed at /dev/null. Python
exceptions are unaffected.
"""

from __future__ import annotations

import os
import sys

__all__ = ["import_tensorflow"]


def import_tensorflow():
    """``import tensorflow``, quietly the first time; returns the module."""
    if "tensorflow" in sys.modules or os.environ.get("KEXP_TF_VERBOSE"):
        import tensorflow as tf

        return tf
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no real stderr (a test runner's capture)
        import tensorflow as tf

        return tf
    sys.stderr.flush()
    saved, null = os.dup(fd), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, fd)
    try:
        import tensorflow as tf

        tf.config.list_physical_devices()
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(null)
    return tf
