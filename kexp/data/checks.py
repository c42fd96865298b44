"""Checking data against the model it feeds, before training starts, so a name or shape
mismatch is one clear message instead of a Keras traceback from inside ``fit``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kexp.data.splits import Arrays, Split, Splits
from kexp.errors import DataError

__all__ = ["check_against_model", "first_non_finite", "input_spec", "match_input_structure",
           "shapes_compatible"]


def input_spec(splits: Splits) -> tuple[int, ...] | dict[str, tuple[int, ...]]:
    """Per-sample shapes of the training features (no batch axis): a tuple for one array, a
    mapping for named inputs. Builds a model without ``input_shape`` on a dummy batch:
    ``model.build((None, *shape))``, or call it on zeros of ``(1, *shape)``."""
    x = splits.train.x
    if isinstance(x, dict):
        return {name: tuple(array.shape[1:]) for name, array in x.items()}
    return tuple(x.shape[1:])


def check_against_model(splits: Splits, model: Any) -> None:
    """Check that every split fits ``model``: named features and targets match the model's
    input and output names, feature shapes match its input shapes, and x and y have as many
    samples. Models without a graph (an unbuilt Sequential, a subclassed model) get only the
    sample-count check.

    Raises:
        DataError: naming the split, its source, and both sides of the mismatch.
    """
    graph = _Graph.of(model)
    for role in ("train", "validation", "test"):
        split = getattr(splits, role)
        if split is None:
            continue
        what = f"{role} data ({split.source})" if split.source else f"{role} data"
        _check_counts(split, what)
        if graph is not None:
            _check_names(split.x, graph.input_names, "inputs", "features", graph, what)
            if split.y is not None:
                _check_names(split.y, graph.output_names, "outputs", "targets", graph, what)
            _check_shapes(split.x, graph, what)


def match_input_structure(splits: Splits, model: Any) -> None:
    """Features named by the one input of a Functional model built on a single tensor
    (``{image: x}`` for ``Input(name="image")``) become that array, in place: it is what
    the model takes, and Keras 3 warns on every call that a mapping "doesn't match the
    expected structure" (it unwraps it itself). Call after ``check_against_model``."""
    import keras

    struct = None if isinstance(model, keras.Sequential) else getattr(model, "input", None)
    if struct is None or isinstance(struct, (dict, list, tuple)):
        return
    for role in ("train", "validation", "test"):
        split = getattr(splits, role)
        if split is not None and not hasattr(split, "carve") and isinstance(split.x, dict) \
                and len(split.x) == 1:
            split.x = next(iter(split.x.values()))


@dataclass(frozen=True)
class _Graph:
    """What the data must match in a model with a graph (functional, or a built
    Sequential)."""

    input_names: list[str]
    input_shapes: dict[str, tuple]  # batch shape per input name
    output_names: list[str]
    sequential: bool

    @classmethod
    def of(cls, model: Any) -> _Graph | None:
        import keras

        try:  # subclassed models and unbuilt Sequential models have no inputs yet
            inputs, outputs = list(model.inputs), list(model.outputs)
        except (AttributeError, ValueError, TypeError):
            return None
        if not inputs:
            return None
        sequential = isinstance(model, keras.Sequential)
        in_struct = None if sequential else getattr(model, "input", None)
        if isinstance(in_struct, dict):  # keras.Model(inputs={"a": ...}): the keys count
            shapes = {name: tuple(t.shape) for name, t in in_struct.items()}
        else:
            shapes = {t.name: tuple(t.shape) for t in inputs}
        out_struct = None if sequential else getattr(model, "output", None)
        if isinstance(out_struct, dict):
            output_names = list(out_struct)
        else:
            output_names = list(getattr(model, "output_names", None) or
                                [t.name for t in outputs])
        return cls(list(shapes), shapes, output_names, sequential)


def _check_counts(split: Split, what: str) -> None:
    counts = dict(_named(split.x, "x"))
    if split.y is not None:
        counts.update(_named(split.y, "y"))
    sizes = {name: len(array) for name, array in counts.items()}
    if len(set(sizes.values())) > 1:
        listed = ", ".join(f"{name}: {n}" for name, n in sizes.items())
        raise DataError(f"{what}: features and targets have different numbers of samples "
                        f"({listed}).")


def _named(arrays: Arrays, default: str) -> list[tuple[str, Any]]:
    return list(arrays.items()) if isinstance(arrays, dict) else [(default, arrays)]


def _fmt(names) -> str:
    return "[" + ", ".join(names) + "]"


def _check_names(arrays: Arrays, expected: list[str], side: str, key: str, graph: _Graph,
                 what: str) -> None:
    if graph.sequential:
        if isinstance(arrays, dict):
            raise DataError(
                f"{what}: {key} are named {_fmt(arrays)}, but a Sequential model takes one "
                f"array. Give `{key}:` a single array or column name (or, for csv, leave "
                f"`features` out to stack every numeric column)."
            )
        return
    if not isinstance(arrays, dict):
        if len(expected) > 1:
            raise DataError(
                f"{what}: {key} are a single array, but the model has {side} "
                f"{_fmt(expected)}. Name them in `{key}:` (a list, or a mapping "
                f"{{model_name: array}})."
            )
        return
    if set(arrays) != set(expected):
        missing = [n for n in expected if n not in arrays]
        extra = [n for n in arrays if n not in expected]
        detail = "; ".join(part for part in (
            f"missing {_fmt(missing)}" if missing else "",
            f"not in the model {_fmt(extra)}" if extra else "") if part)
        raise DataError(
            f"{what}: data has {side} {_fmt(arrays)}, the model expects {_fmt(expected)} "
            f"({detail}). Rename them with a mapping in `{key}:` "
            f"({{model_name: array_or_column}})."
        )


def _check_shapes(x: Arrays, graph: _Graph, what: str) -> None:
    if isinstance(x, dict):
        pairs = [(name, x[name]) for name in graph.input_names if name in x]
    else:
        pairs = [(graph.input_names[0], x)]
    for name, array in pairs:
        expected = graph.input_shapes[name][1:]
        if not shapes_compatible(tuple(array.shape[1:]), expected):
            shown = "(" + ", ".join("None" if d is None else str(d) for d in expected) + (
                ",)" if len(expected) == 1 else ")")
            which = f"model input {name!r}" if isinstance(x, dict) else "the model's input"
            raise DataError(
                f"{what}: {which} takes samples of shape {shown}, the data's samples have "
                f"shape {tuple(array.shape[1:])}."
            )


def shapes_compatible(actual: tuple, expected: tuple) -> bool:
    """Shapes match, None matching any size; a trailing axis of 1 may be missing or extra
    (Keras adds or squeezes it, as for a ``(n,)`` column fed to ``Input(shape=(1,))``)."""
    if len(actual) == len(expected) + 1 and actual[-1:] == (1,):
        actual = actual[:-1]
    elif len(expected) == len(actual) + 1 and expected[-1:] == (1,):
        expected = expected[:-1]
    return len(actual) == len(expected) and all(
        e is None or a == e for a, e in zip(actual, expected, strict=True))


def first_non_finite(splits: Splits) -> str:
    """Where the first NaN or Inf in the floating-point data is ('' when there is none): a
    run must not train on it (some models mask a NaN: ``relu(NaN)`` is 0 on some CPUs)."""
    import numpy as np

    for split_name in ("train", "validation", "test"):
        split = getattr(splits, split_name)
        if split is None:
            continue
        for role, arrays in (("features", split.x), ("targets", split.y)):
            for name, array in _named(arrays, ""):
                if array is None or not np.issubdtype(array.dtype, np.floating):
                    continue
                rows = ~np.isfinite(array.reshape(len(array), -1)).all(axis=1)
                if rows.any():
                    label = f"{role} {name!r}" if name else role
                    return (f"{split.source or split_name}: {label} of the {split_name} split "
                            f"hold a NaN or Inf at sample {int(np.argmax(rows))}")
    return ""
