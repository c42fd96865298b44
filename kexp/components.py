"""Building a config component into a live object — the one place that does it.

``build(component, LAYERS)`` resolves the component's name (registered first, then Keras),
builds the components nested in its arguments (``kernel_regularizer: {type: L2, l2: 0.01}``,
``learning_rate: {type: ExponentialDecay, ...}``), calls the constructor with the remaining
keyword arguments plus any run-time ones, and turns a constructor's complaint into a
``ConfigError`` located at the component's line.
"""

from __future__ import annotations

import copy
import functools
import inspect
import re
from typing import Any

from kexp.config.schema import Component
from kexp.errors import ConfigError, Problem, error_line
from kexp.registry import Entry, Nested, Registry, nested_components, resolve, unknown

__all__ = ["build", "build_value"]

# Keras modules whose ``get(identifier)`` turns a string identifier into an object.
_KERAS_GETTERS = {
    "optimizers": "keras.optimizers",
    "losses": "keras.losses",
    "metrics": "keras.metrics",
    "regularizers": "keras.regularizers",
    "initializers": "keras.initializers",
    "constraints": "keras.constraints",
    "activations": "keras.activations",
}


def build(comp: Component, *registries: Registry, skip: tuple[str, ...] = (),
          **runtime: Any) -> Any:
    """Build ``comp`` with the first registry that knows its name.

    ``skip`` names config keys that are not constructor arguments; ``runtime`` adds keyword
    arguments that exist only at run time (e.g. ``inputs``/``outputs`` for a Model class).
    A bare Keras string identifier (``accuracy``, ``mse``) is returned as the string itself,
    for Keras's ``compile`` to resolve as it always does.
    """
    args = {k: v for k, v in comp.args.items() if k not in skip}
    try:
        return build_value(comp.type, args, registries, comp.path, comp.where, **runtime)
    except ConfigError as exc:  # the same error (or subclass), located at the argument
        exc.problems = [_at_key(p, comp) for p in exc.problems]
        raise exc from None


def _at_key(problem: Problem, comp: Component) -> Problem:
    """A problem with one of the component's arguments, located at that argument's line."""
    prefix = f"{comp.path}."
    if problem.where != comp.where or not comp.path or not problem.path.startswith(prefix):
        return problem
    where = comp.where_of(problem.path.removeprefix(prefix))
    return Problem(problem.path, problem.message, where, problem.suggestion)


def build_value(name: str, args: dict[str, Any], registries: tuple[Registry, ...], path: str,
                where: str, **runtime: Any) -> Any:
    """Build ``name(**args, **runtime)`` from the first registry that resolves ``name``."""
    found = resolve(name, registries)
    if found is None:
        raise ConfigError(unknown(name, registries, f"{path}.type" if path else "type", where))
    entry, registry = found
    kwargs = _with_nested_built(args, path, where, registry)
    try:
        if entry.identifier:
            if not kwargs and not runtime and registry.keras_kind in ("losses", "metrics",
                                                                      "activations"):
                return name
            return _from_identifier(entry, registry, kwargs, runtime)
        if entry.applied:
            return _applied(entry.load(), kwargs)
        return entry.load()(**kwargs, **runtime)
    except ConfigError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        message = error_line(exc)
        arg = _argument_named(message, args)
        path = f"{path}.{arg}" if arg else path
        raise ConfigError(Problem(path, f"{name}: {message}", where)) from None


def _applied(fn: Any, kwargs: dict[str, Any]) -> Any:
    """A function taking ``(y_true, y_pred)``, passed to Keras as it is; its other keyword
    arguments given in the config (``{type: weighted_mse, weight: 2}``) bound to it, under the
    function's own name (the name Keras logs)."""
    if not kwargs:
        return fn
    inspect.signature(fn).bind_partial(None, None, **kwargs)  # TypeError: an unknown keyword
    bound = functools.partial(fn, **kwargs)
    functools.update_wrapper(bound, fn)
    return bound


def _from_identifier(entry: Entry, registry: Registry, kwargs: dict, runtime: dict) -> Any:
    import importlib

    module = importlib.import_module(_KERAS_GETTERS[registry.keras_kind])
    obj = module.get(entry.name)
    if kwargs or runtime:
        return type(obj)(**kwargs, **runtime)
    return obj


def _with_nested_built(args: dict[str, Any], path: str, where: str,
                       registry: Registry) -> dict[str, Any]:
    """``args`` with every component written inside them built (``nested_components``: the
    walk the config check makes too)."""
    found = nested_components(args, (registry,))
    if not found:
        return dict(args)
    built = copy.deepcopy(args)
    for nested in found:
        target = built
        for key in nested.keys[:-1]:
            target = target[key]
        target[nested.keys[-1]] = _build_nested(nested, path, where)
    return built


def _build_nested(nested: Nested, path: str, where: str) -> Any:
    value = nested.value
    if nested.is_mapping:
        rest = {k: v for k, v in value.items() if k != "type"}
        return build_value(str(value["type"]), rest, nested.registries, nested.path(path),
                           where)
    if nested.keys[-1] == "learning_rate" and type(value) is int:
        return float(value)  # YAML's `0` or `1` is an int; Keras optimizers insist on a float
    registry = nested.registries[0]
    if isinstance(value, str) and registry.kind == "schedule":
        entry = registry.get(value)
        if entry is not None and entry.obj is not None and not isinstance(entry.obj, type):
            return entry.obj  # a registered schedule function, passed as the function itself
    return value


def _argument_named(message: str, args: dict[str, Any]) -> str:
    """The one given argument a constructor's complaint names (Keras writes `units` or
    units=-3), so the error points at the bad value; '' when it names none or several."""
    named = [a for a in args if re.search(rf"`{re.escape(a)}`|\b{re.escape(a)}=", message)]
    return named[0] if len(named) == 1 else ""



