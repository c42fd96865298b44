"""Shell completion for ``kexp`` (Typer's mechanism: ``kexp --install-completion``).

Completes config files, run directories, component names after ``--set ...type=`` (and
after ``--set compile.optimizer=``), and ``--set`` paths from the config schema
(``--set train.`` offers ``train.epochs=``, ``train.loop=``, ...). Nothing here imports
TensorFlow: names come from kexp's registries and the Keras catalog.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

__all__ = ["config_files", "run_dirs", "set_values"]

_YAML = (".yaml", ".yml")


def _listing(incomplete: str) -> list[tuple[str, Path]]:
    """``(text to offer, path)`` for the entries of the folder ``incomplete`` is in."""
    head, sep, _ = incomplete.rpartition("/")
    try:
        children = sorted(Path(head + sep if sep else ".").iterdir())
    except OSError:
        return []
    return [(head + sep + child.name, child) for child in children
            if (head + sep + child.name).startswith(incomplete)
            and not child.name.startswith(".")]


def config_files(incomplete: str) -> list[str]:
    """YAML files, and folders to descend into."""
    return [text + "/" if path.is_dir() else text for text, path in _listing(incomplete)
            if path.is_dir() or path.suffix in _YAML]


def _holds_runs(folder: Path, depth: int = 2) -> bool:
    if (folder / "run.json").is_file():
        return True
    if depth == 0:
        return False
    try:
        return any(child.is_dir() and _holds_runs(child, depth - 1)
                   for child in folder.iterdir())
    except OSError:
        return False


def run_dirs(incomplete: str) -> list[str]:
    """Run directories (``runs/<name>/<time>``), run names (``runs/<name>``: the newest run)
    and the folders that hold them."""
    found = [text + ("" if (path / "run.json").is_file() else "/")
             for text, path in _listing(incomplete) if path.is_dir() and _holds_runs(path)]
    return found


# --------------------------------------------------------------------------- --set


def _model_at(path: tuple[str | int, ...]) -> Any:
    """The pydantic model a config path leads to (through lists and optionals), or None."""
    from kexp.config.schema import Config

    model: Any = Config
    for part in path:
        if isinstance(part, int):
            continue
        fields = getattr(model, "model_fields", None)
        if not fields or part not in {f.alias or n: f for n, f in fields.items()}:
            return None
        field = {f.alias or n: f for n, f in fields.items()}[part]
        model = _first_model(field.annotation)
    return model


def _first_model(annotation: Any) -> Any:
    """The pydantic model inside ``list[X] | None`` and the like (or the annotation)."""
    if hasattr(annotation, "model_fields"):
        return annotation
    for arg in typing.get_args(annotation):
        found = _first_model(arg)
        if hasattr(found, "model_fields"):
            return found
    return annotation


def _literals(annotation: Any) -> list[str]:
    if typing.get_origin(annotation) is typing.Literal:
        return [str(a) for a in typing.get_args(annotation)]
    if annotation is bool:
        return ["true", "false"]
    out: list[str] = []
    for arg in typing.get_args(annotation):
        out += _literals(arg)
    return out


def _component_registry(path: tuple[str | int, ...]) -> Any:
    """The registry whose names fit the component at ``path`` (``model.layers[0]``)."""
    from kexp.registry import REGISTRIES, registry_for_argument

    keys = tuple(p for p in path if isinstance(p, str))
    fixed = {("data",): "datasets", ("data", "validation"): "datasets",
             ("data", "test"): "datasets", ("model",): "models", ("model", "layers"): "layers",
             ("compile", "optimizer"): "optimizers", ("compile", "loss"): "losses",
             ("compile", "metrics"): "metrics", ("train", "callbacks"): "callbacks"}
    if keys in fixed:
        return REGISTRIES[fixed[keys]]
    if len(keys) > 2 and keys[:2] in {("compile", "loss"), ("compile", "metrics")}:
        return REGISTRIES[fixed[keys[:2]]]  # keyed by output name
    return registry_for_argument(keys[-1]) if keys else None


def set_values(incomplete: str) -> list[str]:
    """``--set`` completions: config paths from the schema, then values for them."""
    from kexp.config.load import format_path, parse_path

    text, eq, value = incomplete.partition("=")
    if eq:
        try:
            path = parse_path(text)
        except ValueError:
            return []
        names: list[str] = []
        target = path[:-1] if path[-1] == "type" else path
        registry = _component_registry(target)
        if registry is not None:
            names = registry.names()
            if target == ("model",):
                names = ["sequential", "functional", *names]
        parent = _model_at(path[:-1])
        field = getattr(parent, "model_fields", {}).get(str(path[-1]))
        if field is not None:
            names += _literals(field.annotation)
        return [f"{text}={n}" for n in dict.fromkeys(names) if n.startswith(value)]
    head, dot, prefix = text.rpartition(".")
    try:
        parent_path = parse_path(head) if dot else ()
    except ValueError:
        return []
    model = _model_at(parent_path)
    fields = getattr(model, "model_fields", None) or {}
    out = []
    for name, field in fields.items():
        key = field.alias or name
        if not key.startswith(prefix):
            continue
        full = format_path((*parent_path, key))
        # a section (train, data) goes on with a dot; a value or a bare component with "="
        keys = getattr(_first_model(field.annotation), "model_fields", {})
        out.append(full + ("." if len(keys) > 1 else "="))
    return out
