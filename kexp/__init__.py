"""kexp: a command-line experiment runner for TensorFlow/Keras driven by YAML configs.

The Python API (``kexp.train``, ``kexp.evaluate``, ``kexp.predict``, ``kexp.runs``,
``kexp.compare``, ``kexp.export``, ``kexp.sweep``, ``kexp.Run``; see ``kexp.api``) is loaded
on first use, so ``import kexp`` stays light: no TensorFlow until a function needs it.
"""

import os
import types

# TensorFlow's C++ start-up chatter drowns kexp's own output; users can still override it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

from kexp import runs as _runs_module  # noqa: E402  (light: no TensorFlow)
from kexp import sweep as _sweep_package  # noqa: E402
from kexp.errors import ConfigError, DataError, KexpError, TrainingError  # noqa: E402

_API = ("train", "evaluate", "predict", "compare", "export", "Run", "SweepResult")

__all__ = ["__version__", "ConfigError", "DataError", "KexpError", "TrainingError", "runs",
           "sweep", *_API]


class _CallableModule(types.ModuleType):
    """``kexp.runs`` and ``kexp.sweep`` are submodules (the run directory, the sweep
    machinery) and API functions at once: calling the module calls ``kexp.api.runs`` /
    ``kexp.api.sweep``, and ``from kexp.runs import ...`` keeps working."""

    def __call__(self, *args, **kwargs):
        from kexp import api

        return getattr(api, self.__name__.rpartition(".")[2])(*args, **kwargs)


_runs_module.__class__ = _CallableModule
_sweep_package.__class__ = _CallableModule


def __getattr__(name: str):
    if name in _API:
        from kexp import api

        return getattr(api, name)
    raise AttributeError(f"module 'kexp' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
