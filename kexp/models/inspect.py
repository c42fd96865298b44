"""Looking at a model: its summary, its graph as an image."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from kexp.config.schema import Config
from kexp.errors import ConfigError, KexpError, Problem, error_line
from kexp.runs import atomic_path

__all__ = ["built_model", "summary_text", "plot_model"]


def built_model(cfg: Config) -> tuple[Any, str]:
    """The config's model with its weights created, and a note for the reader ('' if none).

    A model that declares its input shapes is built already. One that does not (a Sequential
    without ``input_shape``, a subclassed model) is called once on a dummy batch shaped like
    the config's data, as Keras itself builds on the first batch.
    """
    from kexp.models.build import build_model

    model, _ = build_model(cfg.model)
    if model.built:
        return model, ""
    if cfg.data is None:
        return model, ("The model has no weights yet: it declares no input shape and the config "
                       "has no `data:` to build it from. Declare `input_shape:` (or functional "
                       "`inputs:`) to see its parameters without data.")
    try:
        from kexp.data.checks import input_spec
        from kexp.data.load import load_data

        shapes = input_spec(load_data(cfg))
    except KexpError as exc:
        return model, (f"The model has no weights yet: it is built from the first batch of data, "
                       f"and the data could not be read ({exc}). Declare `input_shape:` to see "
                       "its parameters without data.")
    _build_on_dummy_batch(model, shapes, cfg.model.where)
    return model, ("Built on a dummy batch shaped like the config's data (the model declares "
                   "no input shape).")


def _build_on_dummy_batch(model: Any, shapes: Any, where: str) -> None:
    import numpy as np

    def zeros(shape: tuple) -> Any:
        return np.zeros((1, *[d or 1 for d in shape]), dtype="float32")

    batch = {k: zeros(s) for k, s in shapes.items()} if isinstance(shapes, dict) else zeros(shapes)
    try:
        model(batch, training=False)
    except Exception as exc:  # the model's own call failed on data of the config's shape
        raise ConfigError(Problem("model", "calling the model on a batch shaped like the data "
                                  f"failed: {error_line(exc)}", where)) from None


def summary_text(model: Any) -> str:
    """Keras's ``model.summary()`` as text: layers, output shapes, connections, parameters."""
    import os

    lines: list[str] = []
    # Keras sizes the table to the terminal; a captured summary (a pipe, summary.txt) would
    # otherwise be cut at 80 columns, losing the "Connected to" column.
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "140"
    try:
        model.summary(print_fn=lambda line, *a, **k: lines.append(line))
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous
    return "\n".join(lines).rstrip()


def plot_model(model: Any, output: Path, *, show_shapes: bool, where: str = "") -> None:
    """Write the model's layer graph with ``keras.utils.plot_model``."""
    import keras

    from kexp.models.build import has_graph

    if not model.built:
        raise ConfigError(Problem(
            "model", "the model has no layer graph yet: it declares no input shape and the "
            "config has no `data:` to build it from; declare `input_shape:` (or functional "
            "`inputs:`) to plot it", where))
    if not has_graph(model):
        raise ConfigError(
            f"model: {type(model).__name__} is a subclassed model: its layers are connected by "
            "Python code in call(), so there is no layer graph to draw (the chapter's Listing "
            "7.14 notes this). Use `kexp summary` to see its layers and parameters, or write "
            "the model as `type: functional` to plot it."
        )
    if shutil.which("dot") is None:
        raise ConfigError("kexp plot needs Graphviz's `dot` program, which is not installed: "
                          "install Graphviz (apt-get install graphviz, brew install graphviz, "
                          "or see https://graphviz.org/download/) and try again.")
    with atomic_path(Path(output)) as tmp:  # a half-drawn image never replaces the old one
        keras.utils.plot_model(model, to_file=str(tmp), show_shapes=show_shapes,
                               show_layer_names=True, expand_nested=True, dpi=96)
