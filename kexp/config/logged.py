"""The names a run logs (``history.csv`` columns), derived from the config before anything is
built, so that ``kexp validate`` rejects a ``monitor`` no epoch will ever log. No TensorFlow is
imported.

Keras names a loss ``loss`` (``<output>_loss`` per output of a multi-output model), a metric
given as a string by that string, a metric given as a class by its ``name:`` or its class name
in snake case, a function by the function's name, each prefixed with ``<output>_`` on a
multi-output model and repeated with ``val_``. When kexp cannot tell a name for sure (a plugin
class without ``name:``, a model class with its own ``train_step``, one metric list for several
outputs), it derives nothing and checks nothing.
"""

from __future__ import annotations

import re
from typing import Any

from kexp.config.schema import Component, Config
from kexp.registry import METRICS

__all__ = ["logged_names"]

# Logged besides the losses and metrics (the learning rate, kexp's and Keras's callbacks).
_ALWAYS = ("loss", "learning_rate")


def logged_names(cfg: Config, outputs: tuple[str, ...]) -> set[str] | None:
    """Every name the run can log, or None when kexp cannot tell them all."""
    if cfg.model.kind == "class" or (cfg.model.kind == "functional" and cfg.model.class_):
        return None  # a model class may log anything from its own train_step
    plain = _logged_metrics(cfg.compile.metrics, outputs)
    weighted = _logged_metrics(cfg.compile.weighted_metrics, outputs)
    if plain is None or weighted is None:
        return None
    names: set[str] = set(_ALWAYS) | {f"{o}{n}" for o, n in plain}
    if len(outputs) > 1:
        names |= {f"{o}_loss" for o in outputs}
    # Keras logs a weighted metric under its own name, or as `weighted_<name>` when an
    # unweighted metric of that output already has it.
    names |= {f"{o}{n}" if (o, n) not in plain else f"{o}weighted_{n}" for o, n in weighted}
    return names | {f"val_{n}" for n in names}


def _logged_metrics(metrics: Any, outputs: tuple[str, ...]) -> set[tuple[str, str]] | None:
    """``(output prefix, name)`` of each metric of ``metrics`` (or ``weighted_metrics``); the
    prefix is ``<output>_`` on a multi-output model, else ''. None when kexp cannot tell."""
    if len(outputs) > 1:
        if metrics is not None and not isinstance(metrics, dict):
            return None  # one list for several outputs: see the per-output rule
        pairs: set[tuple[str, str]] = set()
        for output, items in (metrics or {}).items():
            found = _metric_names(items)
            if found is None:
                return None
            pairs |= {(f"{output}_", n) for n in found}
        return pairs
    if isinstance(metrics, dict):
        metrics = [m for v in metrics.values() for m in _as_list(v)]
    found = _metric_names(metrics or [])
    return None if found is None else {("", n) for n in found}


def _as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def _metric_names(items: Any) -> set[str] | None:
    names = set()
    for item in _as_list(items):
        name = _metric_name(item) if isinstance(item, Component) else None
        if name is None:
            return None
        names.add(name)
    return names


def _metric_name(comp: Component) -> str | None:
    if isinstance(comp.args.get("name"), str):
        return comp.args["name"]
    entry = METRICS.get(comp.type)
    if entry is None:
        return None
    if entry.origin == "keras":
        if entry.identifier and not comp.args:
            return comp.type  # a string identifier names itself: `mae` logs `mae`
        return _snake_case(comp.type)
    if entry.applied:
        return getattr(entry.obj, "__name__", None)  # a function: its own name
    return None  # a plugin class or a factory: the name is its own business


def _snake_case(name: str) -> str:
    """Keras's default name of a class: ``MeanAbsoluteError`` -> ``mean_absolute_error``."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()
