"""Turning pydantic's validation errors into kexp ``Problem``s: config path, source line,
what was received, what was expected, and a "did you mean" where one is close."""

from __future__ import annotations

import difflib
import re
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from kexp.config.load import SourceMap, format_path
from kexp.config.schema import UNION_TAGS, Config
from kexp.errors import Problem

__all__ = ["problems_from_validation", "closest", "describe_value"]


def closest(name: str, candidates: typing.Iterable[str]) -> str:
    """``'epochs'`` for ``'epoch'`` among the candidates, quoted and joined with "or"; or ''."""
    matches = difflib.get_close_matches(name, list(candidates), n=2, cutoff=0.6)
    return " or ".join(repr(m) for m in matches)


def describe_value(value: Any) -> str:
    """A short description of a received value: ``'abc' (a string)``."""
    kinds = {str: "a string", bool: "a boolean", int: "an integer", float: "a number",
             list: "a list", dict: "a mapping", type(None): "nothing (null)"}
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({kinds.get(type(value), type(value).__name__)})"


def problems_from_validation(error: ValidationError, sources: SourceMap) -> list[Problem]:
    """One ``Problem`` per pydantic error, located in the YAML."""
    problems = []
    for err in error.errors():
        loc = tuple(p for p in err["loc"] if p not in UNION_TAGS)
        path = format_path(loc)
        received = describe_value(err.get("input"))
        kind = err["type"]
        suggestion = ""
        if kind == "extra_forbidden":
            key = str(loc[-1])
            allowed = _keys_at(loc[:-1])
            message = f"unknown key {key!r}"
            suggestion = closest(key, allowed)
            if allowed and not suggestion:
                message += f" (expected one of: {', '.join(sorted(allowed))})"
        elif kind == "missing":
            message = "this key is required"
        elif kind == "literal_error":
            expected = re.findall(r"'([^']*)'", err["msg"])
            message = f"expected one of {', '.join(expected)}; received {received}"
            if isinstance(err.get("input"), str):
                suggestion = closest(err["input"], expected)
        else:
            message = err["msg"].removeprefix("Value error, ")
            message = _EXPECTED.get(kind, message[:1].lower() + message[1:])
            message += f"; received {received}"
        problems.append(Problem(path, message, sources.where(loc), suggestion))
    return problems


_EXPECTED = {
    "int_type": "expected an integer",
    "int_from_float": "expected a whole number",
    "float_type": "expected a number",
    "bool_type": "expected true or false",
    "string_type": "expected a string",
    "list_type": "expected a list",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
}


def _keys_at(loc: tuple) -> set[str]:
    """The keys the schema allows at a config path (for "did you mean")."""
    annotation: Any = Config
    for part in loc:
        annotation = _step(annotation, part)
        if annotation is None:
            return set()
    model = _model_in(annotation)
    if model is None:
        return set()
    return {f.alias or name for name, f in model.model_fields.items()}


def _step(annotation: Any, part: Any) -> Any:
    model = _model_in(annotation)
    if model is not None and isinstance(part, str) and part in _fields(model):
        return _fields(model)[part]
    for arg in _flatten(annotation):
        origin = typing.get_origin(arg)
        if origin is list and isinstance(part, int):
            return typing.get_args(arg)[0]
        if origin is dict and isinstance(part, str):
            return typing.get_args(arg)[1]
    return None


def _fields(model: type[BaseModel]) -> dict[str, Any]:
    return {(f.alias or name): f.annotation for name, f in model.model_fields.items()}


def _flatten(annotation: Any) -> list[Any]:
    """The members of a (possibly Annotated, Optional or Union) annotation."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _flatten(typing.get_args(annotation)[0])
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        return [m for a in typing.get_args(annotation) for m in _flatten(a)]
    return [annotation]


def _model_in(annotation: Any) -> type[BaseModel] | None:
    for arg in _flatten(annotation):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None
