"""From a YAML file (plus ``--set`` overrides and ``--plugin``s) to a checked ``Config``.

``load_config`` is the one entry point: it loads and merges the YAML, applies overrides,
imports the named plugins, validates the schema and checks every component against the
registry, and raises one ``ConfigError`` listing every problem found.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from kexp.config.check import check_config
from kexp.config.errors import problems_from_validation
from kexp.config.load import Loaded, SourceMap, format_path, load_resolved
from kexp.config.schema import Component, Config
from kexp.errors import ConfigError, Problem
from kexp.monitor import higher_is_better
from kexp.plugins import PluginError, import_plugin
from kexp.registry import CALLBACKS

__all__ = ["load_config", "Config"]


def load_config(path: str | Path, sets: list[str] | tuple[str, ...] = (),
                plugins: list[str] | tuple[str, ...] = (), *, model_only: bool = False) -> Config:
    """Load, merge, override, validate and check a config file.

    Args:
        path: the YAML file.
        sets: ``PATH=VALUE`` overrides, applied after ``extends:`` is merged.
        plugins: extra plugins (``--plugin``), imported after the config's own.
        model_only: a config without ``data:`` is fine (``validate``, ``summary``, ``plot``
            look at the model only); otherwise a missing ``data:`` is one of the problems.

    Raises:
        ConfigError: with every problem found, each located in the YAML.
    """
    loaded = load_resolved(path, sets, plugins)
    _import_plugins(loaded)
    no_data = [] if model_only else _data_required(loaded)
    try:
        cfg = Config.model_validate(loaded.data)
    except ValidationError as exc:
        problems = problems_from_validation(exc, loaded.sources)
        raise ConfigError(no_data + problems + _check_valid_sections(loaded, problems)) from None
    cfg._file = loaded.path
    cfg._sources = loaded.sources
    _locate_components(cfg, (), loaded.sources)
    problems = no_data + check_config(cfg)
    if problems:
        raise ConfigError(problems)
    _set_monitor_modes(cfg)
    return cfg


def _set_monitor_modes(cfg: Config) -> None:
    """A monitoring callback (EarlyStopping, ModelCheckpoint, ReduceLROnPlateau, or a plugin's
    with ``monitor`` and ``mode`` arguments) left in ``mode: auto`` gets kexp's one rule
    (``kexp.monitor``), the one behind ``best.keras`` and ``kexp runs``: Keras's own ``auto``
    knows only its metrics' declared direction and fails on a plugin metric. The resolved
    ``config.yaml`` records the mode chosen."""
    for callback in cfg.train.callbacks:
        entry = CALLBACKS.get(callback.type)
        if entry is None or not {"monitor", "mode"} <= set(entry.params):
            continue
        if callback.args.get("mode", "auto") == "auto":
            monitor = str(callback.args.get("monitor", "val_loss"))
            callback.__pydantic_extra__["mode"] = "max" if higher_is_better(monitor) else "min"


def _data_required(loaded: Loaded) -> list[Problem]:
    """``kexp train`` (and everything that reads data) needs ``data:``; a model-only config
    is for ``validate``, ``summary`` and ``plot``."""
    if loaded.data.get("data") is not None:
        return []
    return [Problem("data", "this key is required to train: give the dataset to train on "
                    "(e.g. `data: {type: npz, path: train.npz}`); a config without `data:` "
                    "works with kexp validate, summary and plot only",
                    loaded.sources.where(("data",)))]


def _check_valid_sections(loaded: Loaded, problems: list[Problem]) -> list[Problem]:
    """Registry checks of the sections that passed the schema, so that a file's schema
    errors and name errors are reported together."""
    bad: dict[str, set[str]] = {}  # section -> its keys with a schema error ('' for itself)
    for p in problems:
        head, _, rest = p.path.partition(".")
        bad.setdefault(head.split("[")[0], set()).add(rest.split(".")[0].split("[")[0])
    sections = {}
    for name, field in Config.model_fields.items():
        if name not in loaded.data:
            continue
        value = loaded.data[name]
        if name in bad:  # check the rest of a section whose keys alone are wrong (train.epoch)
            if "" in bad[name] or not isinstance(value, dict):
                continue
            value = {k: v for k, v in value.items() if k not in bad[name]}
        try:
            sections[name] = TypeAdapter(field.annotation).validate_python(value)
        except ValidationError:
            if name in bad:
                continue
            return []
    partial = Config.model_construct(**sections)
    partial._sources = loaded.sources
    _locate_components(partial, (), loaded.sources)
    return check_config(partial, set(sections))


def _import_plugins(loaded: Loaded) -> None:
    plugins = loaded.data.get("plugins") or []
    if not isinstance(plugins, list):
        return  # the schema reports it
    problems = []
    for i, spec in enumerate(plugins):
        if not isinstance(spec, str):
            continue
        try:
            import_plugin(spec)
        except PluginError as exc:
            problems.append(Problem(f"plugins[{i}]", str(exc),
                                    loaded.sources.where(("plugins", i))))
    if problems:
        raise ConfigError(problems)


def _locate_components(value: Any, path: tuple, sources: SourceMap) -> None:
    """Tell each component where it is in the config, for errors raised while building it."""
    if isinstance(value, Component):
        value.locate(format_path(path), sources.where(path), sources)
    if isinstance(value, BaseModel):
        for name, field in type(value).model_fields.items():
            _locate_components(getattr(value, name, None), (*path, field.alias or name), sources)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _locate_components(item, (*path, i), sources)
    elif isinstance(value, dict):
        for key, item in value.items():
            _locate_components(item, (*path, key), sources)
