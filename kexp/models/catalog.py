"""Which names are Keras applications, and the module of each one's ``preprocess_input``:
catalog look-ups with no TensorFlow, shared by the application builders
(``kexp.models.applications``) and the ``Preprocess`` layer (``kexp.models.preprocess``)."""

from __future__ import annotations

from typing import Any

from kexp.config.errors import closest
from kexp.registry import MODELS, _keras_catalog

__all__ = ["application_info", "application_names", "preprocess_module"]


def application_info(name: str) -> dict[str, Any] | None:
    """``{"preprocess": module or None}`` for a Keras application's name; None for any other
    name (or one a plugin registered)."""
    if name in MODELS.registered():
        return None
    info = _keras_catalog().get("models", {}).get(name)
    return info.get("application") if info else None


def application_names() -> list[str]:
    return [n for n, i in _keras_catalog().get("models", {}).items() if "application" in i]


def preprocess_module(application: str) -> str:
    """The module whose ``preprocess_input`` matches ``application``.

    Raises:
        ValueError: not a Keras application, or one that preprocesses its input itself.
    """
    info = application_info(application)
    if info is None:
        near = closest(application, application_names())
        raise ValueError(f"{application!r} is not a Keras application"
                         + (f"; did you mean {near}?" if near else
                            " (kexp list models lists them)"))
    if info["preprocess"] is None:
        raise ValueError(f"{application} includes its own preprocessing (its "
                         "preprocess_input returns the input unchanged): feed it raw pixel "
                         "values in [0, 255] without a Preprocess layer")
    return info["preprocess"]
