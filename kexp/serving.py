"""``kexp export``: a run's model as a serving artifact, checked against ``kexp predict``.

- ``saved_model``: a TensorFlow SavedModel written with Keras's ``ExportArchive``, whose
  ``serve`` signature takes the model's inputs by name and returns its outputs by name
  (``priority``, ``department``; a single-output model's output is named like its output
  layer). Loading it needs TensorFlow only: plugin code is traced into the graph.
- ``tflite``: that SavedModel converted by TensorFlow Lite's converter (a ``serve``
  signature with the same names).

The artifact is written to a temporary path beside its destination, loaded back with plain
TensorFlow (``tf.saved_model.load`` / ``tf.lite.Interpreter``), run on one batch of the run's
validation data and compared with what ``kexp predict`` computes (the Keras model's
``predict``). Only when the largest difference is within the tolerance is it renamed into
place; otherwise nothing is written and ``ExportCheckError`` says by how much it differs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kexp.errors import ConfigError, KexpError

__all__ = ["FORMATS", "TOLERANCE", "Export", "ExportCheckError", "export_run", "default_path"]

FORMATS = ("saved_model", "tflite")
# The largest absolute difference from `kexp predict` an artifact may show.
TOLERANCE = {"saved_model": 1e-5, "tflite": 1e-4}
SIGNATURE = "serve"


class ExportCheckError(KexpError):
    """The exported artifact's predictions differ from the model's by more than allowed."""

    exit_code = 1


@dataclass(frozen=True)
class Export:
    """What ``export_run`` wrote and how closely the artifact matches ``kexp predict``."""

    path: Path
    format: str
    checkpoint: str
    inputs: list[str]
    outputs: list[str]
    samples: int
    max_abs_diff: float
    tolerance: float


def default_path(run_dir: Path, fmt: str, checkpoint: str) -> Path:
    """``<run>/export/<checkpoint>/saved_model`` or ``<run>/export/<checkpoint>/model.tflite``."""
    name = "saved_model" if fmt == "saved_model" else "model.tflite"
    return Path(run_dir) / "export" / checkpoint / name


def export_run(run_dir: Path, checkpoint: str = "final", fmt: str = "saved_model",
               output: Path | None = None) -> Export:
    """Export a run's model and check the artifact against ``kexp predict``.

    Args:
        run_dir: the run directory (or ``runs/<name>``: its newest run).
        checkpoint: ``final`` (``model.keras``), ``best`` or ``last``.
        fmt: ``saved_model`` or ``tflite``.
        output: where the artifact goes (default ``default_path``); replaced if present.

    Raises:
        ConfigError, DataError: a run, checkpoint or format that cannot be used.
        ExportCheckError: the artifact's predictions differ by more than ``TOLERANCE``;
            nothing is written.
    """
    from kexp.data.checks import match_input_structure
    from kexp.evaluation import (
        checkpoint_file,
        find_run,
        load_run_config,
        load_run_model,
        load_run_splits,
    )

    if fmt not in FORMATS:
        raise ConfigError(f"--format: expected one of {', '.join(FORMATS)}; received {fmt!r}")
    run_dir = find_run(Path(run_dir), checkpoint)
    file = checkpoint_file(run_dir, checkpoint)
    target = Path(output) if output is not None else default_path(run_dir, fmt, checkpoint)
    _check_target(target, fmt)
    cfg = load_run_config(run_dir)
    splits = load_run_splits(cfg)
    model = load_run_model(file, compile=False)
    match_input_structure(splits, model)
    batch = _check_batch(splits, cfg.data.batch_size)
    specs = _input_specs(model, batch)
    names = _output_names(model, batch)
    expected = _as_list(model.predict(batch, verbose=0))
    with _staged(target) as tmp:
        if fmt == "saved_model":
            _write_saved_model(model, specs, names, tmp)
            got = _run_saved_model(tmp, batch, names)
        else:
            with tempfile.TemporaryDirectory(prefix=".kexp-export-") as saved:
                _write_saved_model(model, specs, names, Path(saved) / "m")
                _write_tflite(Path(saved) / "m", tmp)
            got = _run_tflite(tmp, batch, names)
        diff = _max_abs_diff(expected, got)
        if not diff <= TOLERANCE[fmt]:
            raise ExportCheckError(
                f"export check failed: the {fmt} artifact's predictions differ from kexp "
                f"predict's by {diff:.3g} (allowed: {TOLERANCE[fmt]:g}) on "
                f"{_samples(batch)} validation samples; nothing was written.")
    return Export(target, fmt, checkpoint, list(specs), names, _samples(batch), diff,
                  TOLERANCE[fmt])


# --------------------------------------------------------------------------- the model's names


def _check_batch(splits: Any, batch_size: int) -> Any:
    """The first ``batch_size`` samples of the validation split (else test, else train)."""
    import numpy as np

    from kexp.data.splits import num_samples, take

    split = splits.validation or splits.test or splits.train
    n = min(batch_size, num_samples(split.x))
    return take(split, np.arange(n)).x


def _samples(x: Any) -> int:
    from kexp.data.splits import num_samples

    return num_samples(x)


def _input_specs(model: Any, batch: Any) -> dict[str, Any]:
    """One ``tf.TensorSpec`` per model input, named like it, batch dimension ``None``."""
    import tensorflow as tf

    arrays = batch if isinstance(batch, dict) else {_single_input_name(model): batch}
    return {name: tf.TensorSpec((None, *a.shape[1:]), tf.as_dtype(a.dtype), name=name)
            for name, a in arrays.items()}


def _single_input_name(model: Any) -> str:
    with contextlib.suppress(AttributeError, ValueError, TypeError):
        if model.inputs:
            return model.inputs[0].name
    return "inputs"


def _output_names(model: Any, batch: Any) -> list[str]:
    """The model's output names: its output layers' names for a functional or Sequential
    model, a subclassed model's dict keys, else ``output_<i>``."""
    names = list(getattr(model, "output_names", None) or [])
    outputs = model(_first(batch), training=False)
    if isinstance(outputs, dict):
        return list(outputs)
    count = len(outputs) if isinstance(outputs, (list, tuple)) else 1
    if len(names) == count and not any(n.startswith("keras_tensor") for n in names):
        return names
    if count == 1 and getattr(model, "layers", None):
        return [model.layers[-1].name]
    return [f"output_{i}" for i in range(count)]


def _first(batch: Any) -> Any:
    return {k: v[:1] for k, v in batch.items()} if isinstance(batch, dict) else batch[:1]


def _as_list(outputs: Any) -> list[Any]:
    import numpy as np

    if isinstance(outputs, dict):
        return [np.asarray(v) for v in outputs.values()]
    if isinstance(outputs, (list, tuple)):
        return [np.asarray(v) for v in outputs]
    return [np.asarray(outputs)]


# --------------------------------------------------------------------------- writing


def _write_saved_model(model: Any, specs: dict[str, Any], names: list[str], path: Path) -> None:
    import keras

    single = len(specs) == 1 and not _takes_dict(model)

    def serve(inputs):
        outputs = model(next(iter(inputs.values())) if single else inputs, training=False)
        values = list(outputs.values()) if isinstance(outputs, dict) else (
            list(outputs) if isinstance(outputs, (list, tuple)) else [outputs])
        return dict(zip(names, values, strict=True))

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(SIGNATURE, serve, input_signature=[specs])
    archive.write_out(str(path), verbose=False)


def _takes_dict(model: Any) -> bool:
    """Whether a single-input model was built on a dict of inputs (``{name: tensor}``)."""
    with contextlib.suppress(AttributeError, ValueError):
        return isinstance(model.input, dict)
    return False


def _write_tflite(saved_model: Path, path: Path) -> None:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model),
                                                         signature_keys=[SIGNATURE])
    path.write_bytes(converter.convert())


def _check_target(target: Path, fmt: str) -> None:
    """Refuse to replace anything but an earlier artifact of the same kind: ``-o .`` must
    never remove a directory of the user's."""
    from kexp.errors import DataError

    if fmt == "saved_model" and target.exists() and not (target / "saved_model.pb").is_file():
        raise DataError(f"-o {target}: exists and is not a SavedModel directory; kexp "
                        "replaces only an earlier export. Give a new path.")
    if fmt == "tflite" and target.is_dir():
        raise DataError(f"-o {target}: is a directory; give a file name (model.tflite).")


@contextlib.contextmanager
def _staged(target: Path) -> Iterator[Path]:
    """A temporary path beside ``target``; renamed over it (a directory or a file) when the
    block succeeds, removed when it fails."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    tmp = staging / target.name
    try:
        yield tmp
        if target.is_dir():  # replace an earlier export: move it aside, then swap
            old = staging / "previous"
            os.replace(target, old)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# --------------------------------------------------------------------------- checking


def _feed(batch: Any, specs_names: list[str]) -> dict[str, Any]:
    import numpy as np

    if isinstance(batch, dict):
        return {k: np.asarray(v) for k, v in batch.items()}
    return {specs_names[0]: np.asarray(batch)}


def _run_saved_model(path: Path, batch: Any, names: list[str]) -> list[Any]:
    import tensorflow as tf

    serve = tf.saved_model.load(str(path)).signatures[SIGNATURE]
    inputs = list(serve.structured_input_signature[1])
    result = serve(**{k: tf.constant(v) for k, v in _feed(batch, inputs).items()})
    return [result[name].numpy() for name in names]


def _run_tflite(path: Path, batch: Any, names: list[str]) -> list[Any]:
    import tensorflow as tf

    from kexp._tf import muted_stderr

    with warnings.catch_warnings():  # "use ai_edge_litert": tf.lite is what TF 2.21 ships
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_path=str(path))
    with muted_stderr():  # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
        runner = interpreter.get_signature_runner(SIGNATURE)
        inputs = list(interpreter.get_signature_list()[SIGNATURE]["inputs"])
        result = runner(**_feed(batch, inputs))
    return [result[name] for name in names]


def _max_abs_diff(expected: list[Any], got: list[Any]) -> float:
    import numpy as np

    if len(expected) != len(got) or any(e.shape != g.shape
                                        for e, g in zip(expected, got, strict=True)):
        return float("inf")
    return max(float(np.max(np.abs(e.astype("float64") - g.astype("float64"))))
               for e, g in zip(expected, got, strict=True))
