"""Write ``kexp/_keras_catalog.json``: the Keras names each registry resolves, with their
keyword arguments, so that ``kexp validate`` checks Keras names without importing TensorFlow.

Run after upgrading Keras: ``python -m kexp.tools.keras_catalog`` (``make catalog``). A test
checks that the shipped catalog matches the installed Keras.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

from kexp.registry import signature_of, value_kinds

CATALOG_PATH = Path(__file__).resolve().parent.parent / "_keras_catalog.json"

# Metric names that ``Model.compile`` understands itself and turns into the right variant.
_COMPILE_METRIC_NAMES = ("accuracy", "acc", "crossentropy", "ce")


def build_catalog() -> dict[str, Any]:
    """The catalog for the installed Keras, keyed by registry kind, then by name."""
    import keras
    from keras.src import (
        activations,
        constraints,
        initializers,
        losses,
        metrics,
        optimizers,
        regularizers,
    )

    kinds = {
        "layers": ("keras.layers", keras.layers, keras.layers.Layer, None),
        "optimizers": ("keras.optimizers", keras.optimizers, keras.optimizers.Optimizer,
                       optimizers.ALL_OBJECTS_DICT),
        "schedules": ("keras.optimizers.schedules", keras.optimizers.schedules,
                      keras.optimizers.schedules.LearningRateSchedule, None),
        "losses": ("keras.losses", keras.losses, keras.losses.Loss, losses.ALL_OBJECTS_DICT),
        "metrics": ("keras.metrics", keras.metrics, keras.metrics.Metric,
                    metrics.ALL_OBJECTS_DICT),
        "callbacks": ("keras.callbacks", keras.callbacks, keras.callbacks.Callback, None),
        "regularizers": ("keras.regularizers", keras.regularizers,
                         keras.regularizers.Regularizer, regularizers.ALL_OBJECTS_DICT),
        "initializers": ("keras.initializers", keras.initializers,
                         keras.initializers.Initializer, initializers.ALL_OBJECTS_DICT),
        "constraints": ("keras.constraints", keras.constraints, keras.constraints.Constraint,
                        constraints.ALL_OBJECTS_DICT),
        "activations": ("keras.activations", keras.activations, None,
                        activations.ALL_OBJECTS_DICT),
    }
    catalog: dict[str, Any] = {"keras_version": keras.__version__}
    for kind, (module_name, module, base, identifiers) in kinds.items():
        names: dict[str, Any] = {}
        if base is not None:
            for name in sorted(dir(module)):
                obj = getattr(module, name)
                if inspect.isclass(obj) and issubclass(obj, base) and not name.startswith("_"):
                    names[name] = _describe(module_name, obj, identifier=False)
        for name, obj in sorted((identifiers or {}).items()):
            if name not in names and not name[:1].isupper():
                names[name] = _describe(module_name, obj, identifier=True)
        if kind == "metrics":
            for name in _COMPILE_METRIC_NAMES:
                names.setdefault(name, {"module": module_name, "identifier": True,
                                        "params": [], "required": [], "open_kwargs": False})
        catalog[kind] = names
    catalog["models"] = _applications(keras)
    return catalog


def _applications(keras: Any) -> dict[str, Any]:
    """Every ``keras.applications`` constructor, as a model usable as a layer, with the
    module whose ``preprocess_input`` matches it (None when the model preprocesses its input
    itself: that module's ``preprocess_input`` returns its input unchanged)."""
    import importlib

    import numpy as np

    from kexp.models.applications import KEXP_APPLICATION_ARGS

    names: dict[str, Any] = {}
    sample = np.array([[[[200.0, 100.0, 50.0]]]], dtype="float32")
    for name in sorted(dir(keras.applications)):
        fn = getattr(keras.applications, name)
        if name.startswith("_") or not name[:1].isupper() or not callable(fn):
            continue
        module = "keras.applications." + fn.__module__.rsplit(".", 1)[-1]
        preprocess = importlib.import_module(module).preprocess_input
        changes = not np.array_equal(np.asarray(preprocess(sample.copy())), sample)
        info = _describe("keras.applications", fn, identifier=False)
        info["params"] += [p for p in KEXP_APPLICATION_ARGS if p not in info["params"]]
        info["application"] = {"preprocess": module if changes else None}
        names[name] = info
    return names


def _describe(module_name: str, obj: Any, identifier: bool) -> dict[str, Any]:
    params, required, open_kwargs = signature_of(obj)
    if identifier and not inspect.isclass(obj):
        params, required = (), ()  # a function identifier is named, not called, by a config
    return {
        "module": module_name,
        "identifier": identifier,
        "params": list(params),
        "required": list(required),
        "open_kwargs": open_kwargs,
        "kinds": {} if identifier else value_kinds(obj),
    }


def main() -> None:
    CATALOG_PATH.write_text(json.dumps(build_catalog(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {CATALOG_PATH}")


if __name__ == "__main__":
    main()
