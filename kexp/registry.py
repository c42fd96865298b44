"""The component registries and the one resolver behind them.

Everything pluggable is written one way in a config: a bare name, or a mapping of ``type``
plus keyword arguments. A name resolves in this order:

1. components registered with ``@REGISTRY.register()`` (plugins and kexp's built-ins; a name
   may be registered once);
2. Keras itself, by class name (``Dense``, ``RMSprop``) or string identifier (``rmsprop``,
   ``accuracy``, ``mean_squared_error``).

Keras names are checked against ``_keras_catalog.json`` (generated from the installed Keras
by ``python -m kexp.tools.keras_catalog``), so ``kexp validate`` needs no TensorFlow. The
Keras object itself is only imported when something is built.

Example:
    ```python
    from kexp.registry import METRICS

    @METRICS.register()              # registered as "RootMeanSquaredError"
    class RootMeanSquaredError(keras.metrics.Metric): ...
    ```
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from kexp.errors import Problem

__all__ = [
    "Registry",
    "Entry",
    "REGISTRIES",
    "LAYERS",
    "MODELS",
    "OPTIMIZERS",
    "SCHEDULES",
    "LOSSES",
    "METRICS",
    "CALLBACKS",
    "DATASETS",
    "REGULARIZERS",
    "INITIALIZERS",
    "CONSTRAINTS",
    "ACTIVATIONS",
    "registry_for_argument",
    "resolve",
    "unknown",
    "Nested",
    "nested_components",
]

# kexp modules that register built-ins. They must not import TensorFlow at import time.
_BUILTIN_MODULES = ("kexp.data.datasets", "kexp.data.synthetic", "kexp.models.applications")

# Keras base classes whose ``__init__`` takes ``**kwargs`` only to pick out a few by name and
# reject the rest with a message: the keyword names they take beyond their signature.
# (``keras.layers.Layer`` pops ``input_shape`` / ``input_dim``; ``BaseOptimizer`` takes none.)
_CLOSED_BASES = {"Layer.__init__": ("input_shape", "input_dim"), "BaseOptimizer.__init__": ()}
# Keras base classes whose ``__init__(*args, **kwargs)`` hands the keywords to a class further
# up the MRO, skipping the ones in between: ``Model.__init__`` calls ``Trainer.__init__(self)``
# with nothing and ``Layer.__init__(self, *args, **kwargs)`` with everything.
_FORWARDS = {"Model.__init__": "Layer.__init__", "Functional.__init__": "Model.__init__"}

@dataclass(frozen=True)
class Entry:
    """A resolved name: where it comes from and which keyword arguments it accepts.

    ``params`` lists the accepted keyword names, ``required`` those without a default;
    ``open_kwargs`` is true when anything else is accepted too. ``identifier`` marks a Keras
    string identifier (``"accuracy"``) that is handed to Keras as the string itself.
    ``check`` is the component's own rule between its arguments (see ``Registry.register``).
    ``applied`` marks a registered function whose first parameters are ``(y_true, y_pred)``:
    it is the loss or metric itself (``params`` then lists only the keywords after those two),
    not a factory to call.
    """

    name: str
    origin: str  # "plugin", "kexp" or "keras"
    owner: str  # module that defined it
    params: tuple[str, ...] = ()
    required: tuple[str, ...] = ()
    open_kwargs: bool = False
    identifier: bool = False
    obj: Any = None  # the registered object; None for Keras entries until loaded
    applied: bool = False  # a function taking (y_true, y_pred): the loss/metric itself
    kinds: dict[str, str] = field(default_factory=dict, compare=False)
    check: Callable[[dict[str, Any]], list[tuple[str, str]]] | None = field(
        default=None, compare=False)

    def load(self) -> Any:
        """The object behind the entry (imports Keras for Keras entries)."""
        if self.obj is not None:
            return self.obj
        return _load_keras_object(self.owner, self.name)


@dataclass
class Registry:
    """One registry per kind of component (layer, optimizer, ...)."""

    kind: str
    keras_kind: str | None = None  # the key of this kind in the Keras catalog
    _entries: dict[str, Entry] = field(default_factory=dict)

    def register(self, name: str | Callable | None = None, *,
                 check: Callable[[dict[str, Any]], list[tuple[str, str]]] | None = None
                 ) -> Callable:
        """Decorator registering a class or function under its own name or ``name``.

        Usable bare (``@LAYERS.register``) or called (``@LAYERS.register("my_dense")``).
        Registering a taken name is an error naming the first owner. ``check(args)`` is the
        component's own rule between its arguments, run by the config check (``kexp
        validate``) on the arguments a config gives, before anything is built: it returns
        ``(argument, message)`` pairs, ``""`` for the component as a whole. It must not import
        TensorFlow.
        """
        if callable(name):
            return self.register()(name)

        def decorator(obj: Any) -> Any:
            key = name or obj.__name__
            owner = getattr(obj, "__module__", "?")
            if key in self._entries and not _same_object(self._entries[key], obj, owner):
                raise ValueError(
                    f"{self.kind} {key!r} is already registered by {self._entries[key].owner}; "
                    f"{owner} cannot register it again. Register it under another name."
                )
            # the same plugin imported again (a second config in one process) replaces itself
            origin = self._entries[key].origin if key in self._entries else (
                "kexp" if owner.startswith("kexp.") else "plugin")
            self._entries[key] = entry = _entry_from_object(key, obj, origin, owner, check)
            _register_with_keras_serialization(obj, entry.applied)
            return obj

        return decorator

    def unregister(self, name: str) -> None:
        """Remove a registered name (for tests that register throw-away components)."""
        self._entries.pop(name, None)

    def get(self, name: str) -> Entry | None:
        """Resolve ``name``: registered components first, then Keras. None when unknown."""
        _load_builtins()
        if name in self._entries:
            return self._entries[name]
        if self.keras_kind:
            info = _keras_catalog().get(self.keras_kind, {}).get(name)
            if info is not None:
                return Entry(
                    name=name,
                    origin="keras",
                    owner=info["module"],
                    params=tuple(info.get("params", ())),
                    required=tuple(info.get("required", ())),
                    open_kwargs=info.get("open_kwargs", False),
                    identifier=info.get("identifier", False),
                    kinds=info.get("kinds", {}),
                )
        return None

    def registered(self) -> dict[str, Entry]:
        """Names registered by plugins and kexp (not Keras), in registration order."""
        _load_builtins()
        return dict(self._entries)

    def names(self) -> list[str]:
        """Every name this registry resolves: registered ones, then Keras's."""
        keras_names = _keras_catalog().get(self.keras_kind, {}) if self.keras_kind else {}
        return list(self.registered()) + [n for n in keras_names if n not in self._entries]

    def suggest(self, name: str) -> list[str]:
        """The closest known names to a misspelled one."""
        names = self.names()
        lowered = {n.lower(): n for n in names}
        close = difflib.get_close_matches(name.lower(), list(lowered), n=3, cutoff=0.6)
        return [lowered[c] for c in close]


LAYERS = Registry("layer", "layers")
MODELS = Registry("model", "models")
OPTIMIZERS = Registry("optimizer", "optimizers")
SCHEDULES = Registry("schedule", "schedules")
LOSSES = Registry("loss", "losses")
METRICS = Registry("metric", "metrics")
CALLBACKS = Registry("callback", "callbacks")
DATASETS = Registry("dataset")
REGULARIZERS = Registry("regularizer", "regularizers")
INITIALIZERS = Registry("initializer", "initializers")
CONSTRAINTS = Registry("constraint", "constraints")
ACTIVATIONS = Registry("activation", "activations")

REGISTRIES: dict[str, Registry] = {
    "layers": LAYERS,
    "models": MODELS,
    "optimizers": OPTIMIZERS,
    "schedules": SCHEDULES,
    "losses": LOSSES,
    "metrics": METRICS,
    "callbacks": CALLBACKS,
    "datasets": DATASETS,
    "regularizers": REGULARIZERS,
    "initializers": INITIALIZERS,
    "constraints": CONSTRAINTS,
    "activations": ACTIVATIONS,
}


# Where a ``{type: ...}`` mapping under an argument that names no registry resolves.
_ANYWHERE = (LAYERS, MODELS, OPTIMIZERS, SCHEDULES, LOSSES, METRICS, CALLBACKS, REGULARIZERS,
             INITIALIZERS, CONSTRAINTS, ACTIVATIONS)


def registry_for_argument(arg: str) -> Registry | None:
    """The registry a nested component argument resolves in, from the argument's name.

    ``kernel_regularizer`` -> REGULARIZERS, ``learning_rate`` -> SCHEDULES, ``layer`` ->
    LAYERS (as in ``Bidirectional(layer=...)``).
    """
    for suffix, registry in (
        ("_regularizer", REGULARIZERS),
        ("_initializer", INITIALIZERS),
        ("_constraint", CONSTRAINTS),
        ("activation", ACTIVATIONS),
    ):
        if arg.endswith(suffix):
            return registry
    return {
        "learning_rate": SCHEDULES,
        "schedule": SCHEDULES,
        "optimizer": OPTIMIZERS,
        "loss": LOSSES,
        "metric": METRICS,
        "layer": LAYERS,
        "backward_layer": LAYERS,
    }.get(arg)


def resolve(name: str, registries: tuple[Registry, ...]) -> tuple[Entry, Registry] | None:
    """The entry of ``name`` in the first of ``registries`` that knows it."""
    for registry in registries:
        entry = registry.get(name)
        if entry is not None:
            return entry, registry
    return None


def unknown(name: str, registries: tuple[Registry, ...], path: str, where: str = "") -> Problem:
    """The one "unknown layer 'Dens'; did you mean 'Dense'?" problem, at ``path`` (the
    ``type:`` key of a mapping, or the argument a bare name was given to)."""
    kinds = ("component" if len(registries) > 3 else
             " or ".join(r.kind for r in registries))
    close = list(dict.fromkeys(n for r in registries for n in r.suggest(name)))[:3]
    return Problem(path, f"unknown {kinds} {name!r}", where,
                   suggestion=" or ".join(repr(c) for c in close))


@dataclass(frozen=True)
class Nested:
    """A component inside another component's arguments, found by ``nested_components``.

    ``keys`` lead to it from the arguments (``("kernel_regularizer",)``, ``("blocks", 0)``);
    ``value`` is a ``{type: ...}`` mapping, or — where the argument's name says which
    registry (``activation``, ``learning_rate``) — a bare name or another plain value;
    ``registries`` are where its name resolves, in order.
    """

    keys: tuple[str | int, ...]
    value: Any
    registries: tuple[Registry, ...]

    @property
    def is_mapping(self) -> bool:
        return isinstance(self.value, dict)

    def path(self, base: str) -> str:
        """The config path of this component below the component at ``base``."""
        text = base
        for key in self.keys:
            text += f"[{key}]" if isinstance(key, int) else (f".{key}" if text else key)
        return text


def nested_components(args: dict[str, Any], parent: tuple[Registry, ...] = ()
                      ) -> list[Nested]:
    """Every component written inside ``args``, outermost only: the one walk of the grammar
    ``{type: Name, **kwargs}`` that both the config check and the builder use.

    An argument whose name says its registry (``kernel_regularizer``, ``activation``,
    ``learning_rate``, ``layer``) holds a mapping with ``type``, a bare name or a plain value
    (``learning_rate: 0.01``), or lists / mappings of them. Anywhere else, a mapping with
    ``type`` in any list or mapping is a component too, resolved in ``parent``'s registries
    first, then every registry.
    """
    found: list[Nested] = []
    for arg, value in args.items():
        registry = registry_for_argument(arg)
        hint = (registry,) if registry else (*parent, *(r for r in _ANYWHERE if r not in parent))
        _walk(value, (arg,), hint, registry is not None, found)
    return found


def _walk(value: Any, keys: tuple, registries: tuple[Registry, ...], named: bool,
          found: list[Nested]) -> None:
    if isinstance(value, dict) and "type" in value:
        found.append(Nested(keys, value, registries))
    elif isinstance(value, dict):
        for key, item in value.items():
            _walk(item, (*keys, key), registries, named, found)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _walk(item, (*keys, i), registries, named, found)
    elif named:
        found.append(Nested(keys, value, registries))


def _entry_from_object(name: str, obj: Any, origin: str, owner: str,
                       check: Callable | None = None) -> Entry:
    params, required, open_kwargs = signature_of(obj)
    applied = not inspect.isclass(obj) and params[:2] == _APPLIED
    if applied:
        params, required = params[2:], tuple(r for r in required if r not in _APPLIED)
    return Entry(name, origin, owner, params, required, open_kwargs, obj=obj,
                 kinds=value_kinds(obj), check=check, applied=applied)


# The first parameters of a function that is a loss or metric itself (Keras's own names).
_APPLIED = ("y_true", "y_pred")


def _same_object(entry: Entry, obj: Any, owner: str) -> bool:
    """True for a plugin's class or function registered again by the same module."""
    return entry.owner == owner and getattr(entry.obj, "__qualname__", None) == getattr(
        obj, "__qualname__", None)


# Required Keras arguments (no default to learn the type from) that take a count.
_COUNTS = ("units", "filters", "num_heads", "key_dim", "output_dim", "input_dim")


def value_kinds(obj: Any) -> dict[str, str]:
    """What kind of value each argument takes, where its default tells (``"number"``,
    ``"bool"``), it is a well-known count (``"count"``: a positive integer) or a name
    (``"string"``). Used to reject ``units: abc`` or ``use_bias: maybe`` before anything is
    built."""
    kinds: dict[str, str] = {}
    for _, parameters in _reached_signatures(obj)[0]:
        for p in parameters:
            if p.name in kinds:
                continue
            if p.name == "name":
                kinds[p.name] = "string"  # a Keras object's name
            elif p.name in _COUNTS and p.default is p.empty:
                kinds[p.name] = "count"
            elif isinstance(p.default, bool):
                kinds[p.name] = "bool"
            elif isinstance(p.default, (int, float)):
                kinds[p.name] = "number"
    return kinds


def signature_of(obj: Any) -> tuple[tuple[str, ...], tuple[str, ...], bool]:
    """Keyword names a class or function accepts, the required ones, and whether it takes
    arbitrary ``**kwargs``.

    For a class whose ``__init__`` forwards ``**kwargs`` to its base, the base's keyword names
    are followed up the MRO as Keras passes them on: ``keras.Model.__init__(*args, **kwargs)``
    hands them to ``keras.layers.Layer`` (``name``, ``trainable``, ``dtype``, ...), which takes
    a fixed set; ``Optimizer``, ``Loss``, ``Metric`` and ``Callback`` take their own signature.
    """
    reached, extra, open_kwargs = _reached_signatures(obj)
    params: list[str] = []
    required: list[str] = []
    for i, (_, parameters) in enumerate(reached):
        for p in parameters:
            if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) or p.name in params:
                continue
            params.append(p.name)
            if p.default is p.empty and i == 0:
                required.append(p.name)
    params += [k for k in extra if k not in params]
    return tuple(params), tuple(required), open_kwargs


def _reached_signatures(obj: Any) -> tuple[list[tuple[Any, list]], tuple[str, ...], bool]:
    """The ``__init__`` signatures a keyword argument given to ``obj`` can reach, in order
    (``self`` left out), the names a closed Keras base takes beyond its signature, and
    whether anything else is accepted too (an open ``**kwargs`` at the end of the walk)."""
    if not inspect.isclass(obj):
        try:
            return [(obj, list(inspect.signature(obj).parameters.values()))], (), _has_var(obj)
        except (TypeError, ValueError):
            return [], (), True
    inits = [c.__init__ for c in obj.__mro__ if "__init__" in vars(c)]
    reached: list[tuple[Any, list]] = []
    skip_to = None
    for target in inits:
        qualname = getattr(target, "__qualname__", "")
        if skip_to is not None and qualname != skip_to:
            continue
        skip_to = None
        try:
            parameters = list(inspect.signature(target).parameters.values())[1:]  # self
        except (TypeError, ValueError):
            return reached, (), True
        reached.append((target, parameters))
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            return reached, (), False
        if qualname in _CLOSED_BASES:
            return reached, _CLOSED_BASES[qualname], False
        skip_to = _FORWARDS.get(qualname)
        if target is object.__init__:
            break
    return reached, (), True


def _has_var(fn: Any) -> bool:
    return any(p.kind is p.VAR_KEYWORD for p in inspect.signature(fn).parameters.values())


_builtins_loaded = False


def _load_builtins() -> None:
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


@cache
def _keras_catalog() -> dict[str, dict[str, dict[str, Any]]]:
    path = Path(__file__).with_name("_keras_catalog.json")
    if not path.exists():
        return {}
    return json.loads(path.read_text())


def _load_keras_object(module: str, name: str) -> Any:
    mod = importlib.import_module(module)
    return getattr(mod, name)


def _register_with_keras_serialization(obj: Any, applied: bool = False) -> None:
    """Registered Keras classes and loss/metric functions are also registered for Keras
    serialization, so models that use them reload from ``.keras`` files. Only where Keras is
    already imported (a plugin that uses Keras imported it); kexp built-ins never import Keras
    here."""
    keras = sys.modules.get("keras")
    if keras is None or not (inspect.isclass(obj) or applied):
        return
    try:
        keras.saving.register_keras_serializable(package="kexp")(obj)
    except ValueError:  # already registered under the same name (a plugin re-imported)
        pass
