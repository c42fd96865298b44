"""Importing TensorFlow without its start-up chatter.

TensorFlow's C++ runtime writes to file descriptor 2 before Python's logging is set up (oneDNN
notices, "Could not find cuda drivers", a cuInit error on machines without a GPU), and
``TF_CPP_MIN_LOG_LEVEL`` no longer silences all of it. kexp's own messages go to stderr too, so
the first import and device initialisation run with fd 2 pointed at /dev/null. Python
exceptions are unaffected. ``KEXP_TF_VERBOSE=1`` shows everything.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

__all__ = ["import_tensorflow", "muted_stderr", "quiet_tensorflow_start"]


# Set once ``import_tensorflow`` has imported TensorFlow and initialised its devices: a plugin
# that imports Keras imports TensorFlow earlier, but the devices (and the cuInit error) come
# only with the first device query.
_STARTED = False


@contextlib.contextmanager
def quiet_tensorflow_start() -> Iterator[None]:
    """Mute fd 2 while the body runs, until TensorFlow has started (imported, devices
    initialised by ``import_tensorflow``); the body may import it: a plugin that imports
    Keras."""
    if _STARTED:
        yield
        return
    with muted_stderr():
        yield


@contextlib.contextmanager
def muted_stderr() -> Iterator[None]:
    """Point fd 2 at /dev/null while the body runs (TensorFlow's C++ notices, such as TFLite's
    "Created TensorFlow Lite XNNPACK delegate for CPU"); ``KEXP_TF_VERBOSE=1`` keeps it."""
    if os.environ.get("KEXP_TF_VERBOSE"):
        yield
        return
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no real stderr (a test runner's capture)
        yield
        return
    sys.stderr.flush()
    saved, null = os.dup(fd), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, fd)
    try:
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(null)


def import_tensorflow():
    """``import tensorflow`` and its device initialisation, quietly the first time; returns
    the module."""
    global _STARTED
    with quiet_tensorflow_start():
        import tensorflow as tf

        tf.config.list_physical_devices()
    _STARTED = True
    return tf
