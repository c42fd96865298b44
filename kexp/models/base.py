"""``model.base:`` — feature extraction from a saved model (a ``.keras`` file or a run
directory), as in the chapter's Listing 7.13.

``describe_base`` reads a ``.keras`` file's layer names without TensorFlow (the archive's
``config.json``), so ``kexp validate`` can check references to base layers; ``load_base``
loads the model with Keras's safe mode.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["BaseInfo", "resolve_base_file", "describe_base", "load_base", "BaseError"]

_RUN_FILES = {
    "final": "model.keras",
    "best": "checkpoints/best.keras",
    "last": "checkpoints/last.keras",
}


class BaseError(Exception):
    """``base:`` does not name a usable model; the message says why."""


@dataclass(frozen=True)
class BaseInfo:
    """What a base model offers: its file, the run directory it came from, its layers."""

    file: Path
    run_dir: Path | None
    layers: tuple[str, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def resolve_base_file(base: str, checkpoint: str | None = None) -> tuple[Path, Path | None]:
    """The ``.keras`` file ``base:`` names, and its run directory when it names one
    (``runs/<name>`` names that name's newest run)."""
    path = Path(base)
    if path.is_dir():
        from kexp.runs import resolve_run_dir

        path = resolve_run_dir(path) or path  # runs/<name> means its newest run
        name = _RUN_FILES[checkpoint or "final"]
        file = path / name
        if not file.is_file():
            raise BaseError(f"{path} is a directory without {name}: `base:` takes a kexp run "
                            "directory (with model.keras) or a .keras file")
        return file, path
    if not path.exists():
        raise BaseError(f"{path} does not exist")
    if path.suffix != ".keras":
        raise BaseError(f"{path} is not a .keras model file")
    return path, None


def describe_base(base: str, checkpoint: str | None = None) -> BaseInfo:
    """Layer, input and output names of a saved functional model, read from its archive."""
    file, run_dir = resolve_base_file(base, checkpoint)
    try:
        with zipfile.ZipFile(file) as archive:
            config = json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, OSError) as exc:
        raise BaseError(f"{file} is not a readable .keras model ({exc})") from None
    lambdas = _python_lambdas(config)
    if lambdas:
        names = ", ".join(repr(n) for n in lambdas)
        raise BaseError(_LAMBDA_REFUSED.format(file=file, what=f"Lambda layer {names}"))
    inner = config.get("config", {})
    layers = tuple(layer.get("config", {}).get("name") or layer.get("name", "")
                   for layer in inner.get("layers", []))
    if "input_layers" not in inner:
        raise BaseError(f"{file} holds a {config.get('class_name')} model without a layer "
                        "graph (a subclassed model): its layers cannot be named in `inputs:`")
    return BaseInfo(file, run_dir, layers, _endpoints(inner["input_layers"]),
                    _endpoints(inner.get("output_layers", [])))


_LAMBDA_REFUSED = (
    "{file} contains Python code ({what}) that kexp will not run: models are "
    "loaded in Keras's safe mode. Rebuild the model from registered layers (a plugin)."
)


def _python_lambdas(config: Any, layer: str = "") -> list[str]:
    """Names of the Lambda layers whose function is Python bytecode (``__lambda__``), which
    Keras's safe mode refuses to load."""
    if isinstance(config, list):
        return [n for item in config for n in _python_lambdas(item, layer)]
    if not isinstance(config, dict):
        return []
    if config.get("class_name") == "__lambda__":
        return [layer or "?"]
    if config.get("class_name") == "Lambda":
        layer = str(config.get("config", {}).get("name") or "?")
    return [n for value in config.values() for n in _python_lambdas(value, layer)]


def _endpoints(spec: Any) -> tuple[str, ...]:
    """Layer names from Keras's ``[["name", 0, 0], ...]``, a single such triple, or a
    mapping of them (a model with named inputs)."""
    if isinstance(spec, dict):
        return tuple(item[0] for item in spec.values())
    if spec and isinstance(spec[0], str):
        return (spec[0],)
    return tuple(item[0] for item in spec)


def load_base(info: BaseInfo) -> Any:
    """Load the base model with Keras's safe mode (a ``Lambda`` layer is refused)."""
    import keras

    import kexp.models.preprocess  # noqa: F401 - kexp's own layers, for Keras to rebuild

    try:
        return keras.saving.load_model(info.file, safe_mode=True, compile=False)
    except ValueError as exc:
        if "safe_mode" in str(exc) or "Lambda" in str(exc):
            message = _LAMBDA_REFUSED.format(file=info.file, what="a Lambda layer")
            raise BaseError(message) from None
        raise BaseError(f"cannot load {info.file}: {exc}") from None
