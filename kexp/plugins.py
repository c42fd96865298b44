"""Importing the plugins a config or the command line names — and nothing else.

A plugin is a module path (``my_pkg.layers``) or a ``.py`` file; importing it runs its
``@REGISTRY.register()`` decorators. Plugins are the only way a config runs code.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from kexp._tf import quiet_tensorflow_start

__all__ = ["import_plugin", "PluginError"]

_loaded_files: dict[Path, ModuleType] = {}


class PluginError(Exception):
    """A plugin that cannot be imported; the message says which and why."""


def import_plugin(spec: str) -> ModuleType:
    """Import a plugin given as a module path or a ``.py`` file path (absolute, or relative
    to the working directory). Importing the same plugin twice is a no-op."""
    if spec.endswith(".py") or "/" in spec:
        return _import_file(Path(spec).resolve())
    if str(Path.cwd()) not in sys.path:
        sys.path.append(str(Path.cwd()))  # `kexp` as a console script has no cwd on sys.path
    try:
        with quiet_tensorflow_start():
            return importlib.import_module(spec)
    except ModuleNotFoundError as exc:
        if exc.name and spec.startswith(exc.name):
            raise PluginError(
                f"cannot import plugin {spec!r}: no module named {exc.name!r} "
                "(give a module importable from here, or a path to a .py file)"
            ) from None
        raise PluginError(f"plugin {spec!r} failed to import: {_describe(exc)}") from None
    except Exception as exc:  # the plugin's own code failed
        raise PluginError(f"plugin {spec!r} failed to import: {_describe(exc)}") from None


def _import_file(path: Path) -> ModuleType:
    if path in _loaded_files:
        return _loaded_files[path]
    if not path.is_file():
        raise PluginError(f"plugin file {path} does not exist")
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:8]
    name = f"kexp_plugins.{path.stem}_{digest}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise PluginError(f"plugin file {path} is not a Python module")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        with quiet_tensorflow_start():
            module_spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        detail = _describe(exc, path)
        raise PluginError(f"plugin file {path} failed to import: {detail}") from None
    _loaded_files[path] = module
    return module


def _describe(exc: BaseException, path: Path | None = None) -> str:
    """The error and the line that raised it: the plugin file's own line when it is in the
    traceback (a ``register`` refusal is raised inside kexp, called from the plugin)."""
    tb = exc.__traceback__
    line = ""
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if path is None or Path(filename) == path or not line:
            line = f" (line {tb.tb_lineno} of {filename})"
        tb = tb.tb_next
    return f"{type(exc).__name__}: {exc}{line}"
