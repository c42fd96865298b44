"""Using a finished run: load its config, plugins, data and model, then evaluate or predict.

A run directory is self-contained: ``config.yaml`` holds absolute paths and names the
plugins, ``run.json`` records them too, and the model files are saved compiled. So
``kexp evaluate runs/digits-mlp`` needs nothing but the directory:

1. ``load_run_config``: import the run's plugins, then ``load_config(run/config.yaml)``;
2. ``load_data(cfg)``: seeded as in training, so the validation split is the one training used;
3. ``load_run_model``: ``keras.saving.load_model(..., safe_mode=True)`` — a ``Lambda`` layer
   (arbitrary code) is refused, never loaded with ``safe_mode=False``.

TensorFlow and Keras are imported inside the functions that need them.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kexp.data.checks import shapes_compatible
from kexp.errors import ConfigError, DataError, Problem, error_line
from kexp.runs import atomic_write, find_runs, now, read_run_plugins, resolve_run_dir

if TYPE_CHECKING:
    import numpy as np

    from kexp.config.schema import Config
    from kexp.data.splits import Arrays, Split, Splits

__all__ = [
    "CHECKPOINTS",
    "Evaluation",
    "find_run",
    "checkpoint_file",
    "load_run_config",
    "load_run_model",
    "choose_split",
    "evaluate_run",
    "load_run_splits",
    "record_evaluation",
    "read_inputs",
    "predict_run",
    "default_output",
    "write_predictions",
    "class_names",
]

# --checkpoint choice -> file inside the run directory.
CHECKPOINTS = {
    "final": "model.keras",
    "best": "checkpoints/best.keras",
    "last": "checkpoints/last.keras",
}
EVALUATION_FILE = "evaluation.json"


# --------------------------------------------------------------------------- the run


def find_run(path: Path, checkpoint: str | None = None) -> Path:
    """The run directory ``path`` names: a run directory itself, or ``runs/<name>`` meaning
    its newest run that has a model (the ``checkpoint`` file when one is named): a newer run
    that failed before saving one is passed over.

    Raises:
        DataError: ``path`` holds no run.
    """
    run_dir = resolve_run_dir(Path(path))
    if run_dir is None:
        what = "does not exist" if not Path(path).exists() else "holds no run (no run.json)"
        raise DataError(f"{path} {what}: give a run directory (runs/<name>/<timestamp>) or "
                        "runs/<name> for its newest run.")
    if run_dir == Path(path) or _has_model(run_dir, checkpoint):
        return run_dir
    with_model = [r for r in find_runs(Path(path)) if _has_model(r, checkpoint)]
    return with_model[-1] if with_model else run_dir


def _has_model(run_dir: Path, checkpoint: str | None) -> bool:
    names = [checkpoint] if checkpoint in CHECKPOINTS else list(CHECKPOINTS)
    return any((run_dir / CHECKPOINTS[name]).is_file() for name in names)


def checkpoint_file(run_dir: Path, checkpoint: str = "final") -> Path:
    """The model file of ``checkpoint`` (``final``, ``best`` or ``last``) in a run.

    Raises:
        DataError: the run has no such file (an unfinished run has no ``model.keras``); the
            message lists the checkpoints it does have.
    """
    if checkpoint not in CHECKPOINTS:
        raise ConfigError(f"--checkpoint: expected one of {', '.join(CHECKPOINTS)}; "
                          f"received {checkpoint!r}")
    file = Path(run_dir) / CHECKPOINTS[checkpoint]
    if file.is_file():
        return file
    present = [name for name, rel in CHECKPOINTS.items() if (Path(run_dir) / rel).is_file()]
    hint = (f"; it has --checkpoint {' / '.join(present)}" if present
            else "; it has no model file at all")
    raise DataError(f"{run_dir}: no {CHECKPOINTS[checkpoint]} (checkpoint {checkpoint!r})"
                    f"{hint}.")


def load_run_config(run_dir: Path, sets: Sequence[str] = ()) -> Config:
    """The run's own ``config.yaml``, after importing the plugins its ``run.json`` records
    (``load_config`` imports the config's ``plugins:`` too).

    Args:
        run_dir: the run directory.
        sets: ``PATH=VALUE`` overrides, as ``--set`` (``data.path=other.npz``).

    Raises:
        ConfigError: a plugin that no longer imports, or an override that does not apply.
        DataError: the run has no ``config.yaml``.
    """
    from kexp.config import load_config
    from kexp.plugins import PluginError, import_plugin

    file = Path(run_dir) / "config.yaml"
    if not file.is_file():
        raise DataError(f"{run_dir}: no config.yaml; the run directory is incomplete.")
    problems = []
    for spec in read_run_plugins(run_dir):
        try:
            import_plugin(spec)
        except PluginError as exc:
            problems.append(Problem("plugins", str(exc), f"{run_dir / 'run.json'}"))
    if problems:
        raise ConfigError(problems)
    return load_config(file, list(sets))


def load_run_model(file: Path, compile: bool = True) -> Any:
    """Load a ``.keras`` model in Keras's safe mode (plugins must be imported first).

    Raises:
        DataError: a model holding code (a ``Lambda`` layer), or one Keras cannot rebuild (a
            custom class whose plugin is not imported).
    """
    from kexp._tf import import_tensorflow

    import_tensorflow()
    import keras

    import kexp.models.preprocess  # noqa: F401 - kexp's own layers, for Keras to rebuild

    try:
        return keras.saving.load_model(file, safe_mode=True, compile=compile)
    except ValueError as exc:
        if "safe_mode" in str(exc) or "Lambda" in str(exc):
            raise DataError(
                f"{file}: the model contains code (a Lambda layer) that kexp will not run: "
                "models are loaded in Keras's safe mode, since running a saved function can "
                "execute anything. Replace the Lambda with a layer registered by a plugin."
            ) from None
        raise DataError(f"{file}: cannot load the model ({error_line(exc)}).") from None
    except (TypeError, OSError, KeyError) as exc:
        raise DataError(
            f"{file}: cannot load the model ({error_line(exc)}). A custom class must be "
            "registered by a plugin named in the run's config (plugins:)."
        ) from None


# --------------------------------------------------------------------------- evaluate


def choose_split(splits: Splits, name: str | None) -> tuple[str, Split]:
    """The split to evaluate: ``name``, or by default ``test`` when the data has one, else
    ``validation``.

    Raises:
        DataError: the split does not exist, or holds no targets.
    """
    if name is None:
        name = "test" if splits.test is not None else "validation"
    if name not in ("test", "validation"):
        raise ConfigError(f"--split: expected test or validation; received {name!r}")
    split = getattr(splits, name)
    if split is None:
        how = ("set data.test (or use a dataset with a test split)" if name == "test" else
               "set data.validation_split or data.validation")
        other = "validation" if name == "test" else "test"
        alt = f"; try --split {other}" if getattr(splits, other) is not None else ""
        raise DataError(f"the run's data has no {name} split ({how}){alt}.")
    if split.y is None:
        raise DataError(f"{split.source or name + ' data'}: no targets to evaluate against; "
                        "set `targets:` in data.")
    return name, split


@dataclass
class Evaluation:
    """What ``evaluate_run`` measured (the record kept in ``evaluation.json``)."""

    checkpoint: str
    split: str
    metrics: dict[str, float]
    samples: int
    evaluated_at: str = field(default_factory=now)
    data: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        """``<checkpoint>/<split>``, plus the data overrides when given."""
        base = f"{self.checkpoint}/{self.split}"
        return f"{base} [{', '.join(self.data)}]" if self.data else base


def evaluate_run(run_dir: Path, checkpoint: str = "final", split: str | None = None,
                 data: Sequence[str] = ()) -> Evaluation:
    """Evaluate a run's model on one split of its data, as ``model.evaluate`` does.

    Args:
        run_dir: the run directory.
        checkpoint: ``final`` (``model.keras``), ``best`` or ``last``.
        split: ``test`` or ``validation``; default as ``choose_split``.
        data: ``P=V`` overrides of the config's ``data.*`` (``path=other.npz``); relative
            paths resolve against the current directory.

    Raises:
        ConfigError, DataError: a run, checkpoint, split or data that cannot be used.
    """
    file = checkpoint_file(run_dir, checkpoint)
    try:
        cfg = load_run_config(run_dir, _data_sets(data))
    except ConfigError as exc:  # located at what the user typed: --data P=V, not --set data.P=V
        exc.problems = [Problem(p.path, p.message, _as_data_option(p.where), p.suggestion)
                        for p in exc.problems]
        raise
    splits = load_run_splits(cfg)
    name, chosen = choose_split(splits, split)
    model = _compiled_run_model(file, cfg)
    if not getattr(model, "compiled", False):
        raise DataError(f"{file}: the model was saved without its compile settings (loss, "
                        "metrics), so it cannot be evaluated.")
    from kexp.data.checks import check_against_model, match_input_structure
    from kexp.data.pipeline import eval_dataset

    check_against_model(splits, model)
    match_input_structure(splits, model)
    result = model.evaluate(eval_dataset(chosen, batch_size=cfg.data.batch_size), verbose=0,
                            return_dict=True)
    metrics = {k: float(v) for k, v in result.items()}
    samples = chosen.count if hasattr(chosen, "count") else len(chosen)  # a stream: all
    return Evaluation(checkpoint, name, metrics, samples, data=list(data))


def _compiled_run_model(file: Path, cfg: Any) -> Any:
    """The saved model with its compile settings; compiled from the run's config when Keras
    cannot restore them (a loss a plugin's factory returned is a closure Keras cannot name)."""
    try:
        return load_run_model(file)
    except DataError:
        model = load_run_model(file, compile=False)  # still failing: the model itself
    from kexp.training.compile import compile_model

    compile_model(model, cfg.compile, steps_per_epoch=1, every_batch=True)
    return model


def _as_data_option(where: str) -> str:
    return "--data " + where.removeprefix("--set data.") if where.startswith(
        "--set data.") else where


def _data_sets(data: Sequence[str]) -> list[str]:
    """``--data P=V`` -> ``--set data.P=V``."""
    sets, problems = [], []
    for item in data:
        key = item.split("=", 1)[0].strip()
        if "=" not in item or not key:
            problems.append(Problem("", "expected P=VALUE, e.g. --data path=other.npz",
                                    f"--data {item}"))
        else:
            sets.append(f"data.{item.strip()}")
    if problems:
        raise ConfigError(problems)
    return sets


def load_run_splits(cfg: Config) -> Splits:
    """The run's data, seeded as in training (so its validation split is the same)."""
    from kexp._tf import import_tensorflow
    from kexp.training.threads import configure_threads

    import_tensorflow()
    import keras

    from kexp.data.load import load_data

    configure_threads(cfg.train.threads, cfg.data.batch_size)
    # As in training: the global seed first (a plugin dataset may draw from it), then the
    # data, whose validation_split is carved with the config's seed.
    keras.utils.set_random_seed(cfg.seed)
    splits = load_data(cfg)
    configure_threads(cfg.train.threads, cfg.data.batch_size, splits.train.x)
    return splits


def record_evaluation(run_dir: Path, evaluation: Evaluation) -> dict[str, Any]:
    """Write ``evaluation.json`` atomically: the latest evaluation at the top level
    (``checkpoint``, ``split``, ``metrics``, ``evaluated_at``) and every evaluation so far
    under ``evaluations``, keyed ``"<checkpoint>/<split>"``. Returns what was written."""
    path = Path(run_dir) / EVALUATION_FILE
    try:
        previous = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        previous = {}
    record = asdict(evaluation)
    if not record["data"]:
        del record["data"]
    earlier = previous.get("evaluations") if isinstance(previous, dict) else None
    evaluations = dict(earlier) if isinstance(earlier, dict) else {}
    evaluations[evaluation.key] = record
    content = {**record, "evaluations": evaluations}
    atomic_write(path, json.dumps(content, indent=2) + "\n")
    return content


# --------------------------------------------------------------------------- predict


@dataclass(frozen=True)
class _Input:
    name: str
    shape: tuple  # per sample, None for any size


def _model_inputs(model: Any) -> list[_Input] | None:
    """The model's named inputs, or None for a model without a graph (subclassed)."""
    try:
        tensors = list(model.inputs or [])
    except (AttributeError, ValueError, TypeError):
        return None
    try:  # a Sequential model raises here; a functional one may hold a dict of inputs
        struct = model.input
    except (AttributeError, ValueError):
        struct = None
    if isinstance(struct, dict):  # keras.Model(inputs={...}): the keys are the names
        return [_Input(name, tuple(t.shape[1:])) for name, t in struct.items()]
    return [_Input(t.name, tuple(t.shape[1:])) for t in tensors] or None


def read_inputs(file: Path, model: Any, cfg: Config) -> Arrays:
    """Read the features to predict on from an ``.npz`` or ``.csv`` file, matched to the
    model's inputs.

    - npz: one array per model input, named like the input. A single-input model takes the
      array named like its input, like the config's ``data.features``, ``x``, or the only one.
    - csv: the columns the config's csv ``data.features`` names; otherwise every numeric
      column except the config's targets (one ``(n, k)`` array), or, for a multi-input
      model, the columns named like its inputs.

    Raises:
        DataError: an unreadable file, or names / shapes that do not match the model's (the
            message lists what the model expects and what the file gives).
    """
    file = Path(file)
    inputs = _model_inputs(model)
    if file.suffix == ".npz":
        x, label = _npz_inputs(file, inputs, cfg), "the array"
    elif file.suffix == ".csv":
        x, label = _csv_inputs(file, inputs, cfg), "the columns"
    else:
        raise DataError(f"{file}: expected an .npz or .csv file to predict on.")
    return x if inputs is None else _match_inputs(x, inputs, file, label)


def _npz_inputs(file: Path, inputs: list[_Input] | None, cfg: Config) -> Arrays:
    import numpy as np

    from kexp.data.files import display_path, load_npz

    if not file.is_file():
        raise DataError(f"{display_path(file)}: file not found.")
    try:
        with np.load(file, allow_pickle=False) as archive:
            available = list(archive.files)
    except (OSError, ValueError) as exc:
        raise DataError(f"{display_path(file)}: not a readable .npz file ({exc}).") from None
    features = cfg.data.args.get("features") if cfg.data.type == "npz" else None
    if inputs is not None and len(inputs) > 1:
        # An input's array: named like the input, or as the config's {input: array} maps it.
        aliases = features if isinstance(features, dict) else {}
        selection = {i.name: i.name if i.name in available else aliases.get(i.name)
                     for i in inputs}
        missing = [name for name, array in selection.items() if array not in available]
        if missing:
            raise DataError(_mismatch(file, inputs, {n: None for n in available},
                                      f"missing {', '.join(missing)}"))
        return load_npz(file, selection).x
    candidates = [inputs[0].name] if inputs else []
    candidates += [features] if isinstance(features, str) else []
    candidates += ["x"]
    chosen = next((c for c in candidates if c in available), None)
    if chosen is None and len(available) == 1:
        chosen = available[0]
    if chosen is None:
        if inputs is None:  # no graph to match: hand the model every array by name
            return load_npz(file, available).x
        raise DataError(
            f"{display_path(file)}: cannot tell which array to feed the model's input; name "
            f"it {' or '.join(repr(c) for c in candidates)} (the file has "
            f"{', '.join(available) or 'no arrays'}).")
    return load_npz(file, chosen).x


def _csv_inputs(file: Path, inputs: list[_Input] | None, cfg: Config) -> Arrays:
    from kexp.data.files import load_csv

    args = cfg.data.args if cfg.data.type == "csv" else {}
    delimiter = args.get("delimiter", ",")
    header = args.get("header", True)
    features = args.get("features")
    targets = None
    if features is None:
        columns = _csv_columns(file, delimiter, header)
        names = [i.name for i in inputs or []]
        if len(names) > 1 and all(n in columns for n in names):
            features = {n: n for n in names}  # one column per named input
        else:
            # The file may still hold the target columns: leave them out of the features.
            targets = [c for c in _column_names(args.get("targets")) if c in columns] or None
    split = load_csv(file, features, targets, delimiter=delimiter, header=header,
                     drop_missing=bool(args.get("drop_missing", False)))
    return split.x


def _column_names(spec: Any) -> list[str]:
    """The columns a csv ``features`` / ``targets`` selection names."""
    if spec is None:
        return []
    if isinstance(spec, (str, int)):
        return [str(spec)]
    if isinstance(spec, dict):
        return [str(c) for v in spec.values() for c in ([v] if isinstance(v, str) else v)]
    return [str(c) for c in spec]


def _csv_columns(file: Path, delimiter: str | None, header: bool) -> list[str]:
    from kexp.data.files import display_path

    try:
        with open(file, encoding="utf-8-sig", newline="") as f:
            first = next((line for line in f if line.strip()), "")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{display_path(file)}: cannot read the file ({exc}).") from None
    if delimiter is None or delimiter == " ":
        cells = first.split()
    else:
        cells = next(csv.reader([first], delimiter=delimiter), [])
    cells = [c.strip().strip('"') for c in cells]
    return cells if header else [str(i) for i in range(len(cells))]


def _match_inputs(x: Arrays, inputs: list[_Input], file: Path, label: str) -> Arrays:
    """Check ``x`` against the model's inputs; return it as the model takes it. ``label``
    names a single unnamed array in messages."""
    given = ({name: tuple(a.shape[1:]) for name, a in x.items()} if isinstance(x, dict)
             else {label: tuple(x.shape[1:])})
    if len(inputs) == 1 and len(given) == 1:
        pairs = [(next(iter(given.values())), inputs[0])]
        if isinstance(x, dict):  # one named array: whatever its name, it is the input
            x = next(iter(x.values()))
    elif set(given) == {i.name for i in inputs}:
        pairs = [(given[i.name], i) for i in inputs]
    else:
        raise DataError(_mismatch(file, inputs, given, "the names differ"))
    if not all(shapes_compatible(shape, i.shape) for shape, i in pairs):
        raise DataError(_mismatch(file, inputs, given, "the shapes differ"))
    return x


def _mismatch(file: Path, inputs: list[_Input], given: dict[str, tuple | None],
              why: str) -> str:
    from kexp.data.files import display_path

    def shown(shape: tuple | None) -> str:
        if shape is None:
            return ""
        dims = ", ".join("None" if d is None else str(d) for d in shape)
        return f" ({dims}{',' if len(shape) == 1 else ''})"

    expected = ", ".join(f"{i.name}{shown(i.shape)}" for i in inputs)
    gave = ", ".join(f"{name}{shown(shape)}" for name, shape in given.items()) or "nothing"
    return (f"{display_path(file)}: the inputs do not match the model's ({why}).\n"
            f"  expected: {expected}\n  given:    {gave}\n"
            "Shapes are per sample; npz arrays and csv columns are matched by name.")


def predict_run(run_dir: Path, input_file: Path | Arrays,
                checkpoint: str = "final") -> dict[str, np.ndarray]:
    """Predictions of a run's model for the features in ``input_file`` (or for arrays: one
    array, or ``{input name: array}``), one array per model output
    (``{"priority": (n, 1), "department": (n, 4)}``); a single-output model gives
    ``{"predictions": ...}``.

    Raises:
        ConfigError, DataError: a run, checkpoint or input that cannot be used.
    """
    file = checkpoint_file(run_dir, checkpoint)
    cfg = load_run_config(run_dir)
    model = load_run_model(file, compile=False)
    if cfg.data.type in FOLDER_DATASETS and isinstance(input_file, (str, Path)):
        return _predict_files(run_dir, model, cfg, Path(input_file))
    if isinstance(input_file, (str, Path)):
        x, source = read_inputs(input_file, model, cfg), str(input_file)
    else:
        x, source = _given_arrays(input_file, model), "the arrays given"
    from kexp.data.pipeline import eval_dataset
    from kexp.data.splits import Split

    dataset = eval_dataset(Split(x, None, source), batch_size=cfg.data.batch_size)
    return _named_outputs(model, model.predict(dataset, verbose=0))


def _given_arrays(x: Arrays, model: Any) -> Arrays:
    """Arrays handed to ``predict_run`` directly, checked against the model's inputs."""
    import numpy as np

    x = {k: np.asarray(v) for k, v in x.items()} if isinstance(x, dict) else np.asarray(x)
    inputs = _model_inputs(model)
    return x if inputs is None else _match_inputs(x, inputs, Path("<arrays>"), "the array")


FOLDER_DATASETS = ("image_directory", "text_directory")


def _predict_files(run_dir: Path, model: Any, cfg: Config,
                   input_file: Path) -> dict[str, np.ndarray]:
    """Predictions for image (text) files — one, or a folder of them — read as the run's
    folder dataset reads its files: ``path``, the predicted ``class`` (named as the run's
    ``class_names`` in run.json) and the ``predictions`` (probabilities)."""
    import numpy as np
    import tensorflow as tf

    from kexp.data.folders import predict_stream
    from kexp.data.pipeline import eval_dataset

    stream = predict_stream(input_file, cfg.data.type, cfg.data.args)
    stream.probe  # noqa: B018 - an unreadable first file is a data error here
    try:
        raw = model.predict(eval_dataset(stream, batch_size=cfg.data.batch_size), verbose=0)
    except tf.errors.OpError as exc:
        raise DataError(stream.locate_error() or str(exc).splitlines()[0]) from None
    outputs = _named_outputs(model, raw)
    result: dict[str, np.ndarray] = {"path": np.array(stream.files)}
    names = class_names(run_dir)
    probabilities = outputs.get("predictions")
    if names and probabilities is not None:
        width = probabilities.reshape(len(probabilities), -1).shape[1]
        if width == len(names):
            result["class"] = np.array(names)[np.argmax(probabilities, axis=-1)]
        elif width == 1 and len(names) == 2:
            result["class"] = np.array(names)[(probabilities[:, 0] > 0.5).astype(int)]
    return {**result, **outputs}


def class_names(run_dir: Path) -> list[str] | None:
    """The class names a run recorded (a folder dataset's sub-folders), or None."""
    import json

    try:
        info = json.loads((Path(run_dir) / "run.json").read_text())
    except (OSError, ValueError):
        return None
    names = info.get("class_names") if isinstance(info, dict) else None
    return [str(n) for n in names] if isinstance(names, list) else None


def _named_outputs(model: Any, raw: Any) -> dict[str, np.ndarray]:
    import numpy as np

    if isinstance(raw, dict):
        return {name: np.asarray(value) for name, value in raw.items()}
    if not isinstance(raw, (list, tuple)):
        return {"predictions": np.asarray(raw)}
    names = list(getattr(model, "output_names", None) or [])
    if len(names) != len(raw):
        names = [f"output_{i}" for i in range(len(raw))]
    return {name: np.asarray(value) for name, value in zip(names, raw, strict=True)}


def default_output(input_file: Path) -> Path:
    """``<input stem>.predictions.npz`` in the current directory."""
    return Path.cwd() / f"{Path(input_file).stem}.predictions.npz"


def write_predictions(predictions: dict[str, np.ndarray], path: Path,
                      class_names: list[str] | None = None) -> None:
    """Write predictions atomically: ``.npz`` with one array per output, or ``.csv`` with one
    column per output unit (``<output>`` for one unit, else ``<output>_<i>``). With
    ``class_names`` (a folder dataset's run), the npz file holds them as ``class_names`` and
    the csv file names the probability columns after the classes.

    Raises:
        ConfigError: ``path`` is neither ``.npz`` nor ``.csv``.
    """
    import numpy as np

    path = Path(path)
    if path.suffix == ".npz":
        buffer = io.BytesIO()
        extra = {"class_names": np.array(class_names)} if class_names else {}
        np.savez(buffer, **predictions, **extra)
        atomic_write(path, buffer.getvalue())
    elif path.suffix == ".csv":
        atomic_write(path, _predictions_csv(predictions, class_names))
    else:
        raise ConfigError(f"--output {path}: expected a .npz or .csv file name.")


def _predictions_csv(predictions: dict[str, np.ndarray],
                     class_names: list[str] | None = None) -> str:
    columns, blocks = [], []
    for name, array in predictions.items():
        block = array.reshape(len(array), -1)
        width = block.shape[1]
        if name == "predictions" and class_names and width == len(class_names):
            columns += list(class_names)
        elif name == "predictions" and class_names and width == 1 and len(class_names) == 2:
            columns += [class_names[1]]  # a sigmoid: the probability of the second class
        else:
            columns += [name] if width == 1 else [f"{name}_{i}" for i in range(width)]
        blocks.append(block)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in zip(*(block.tolist() for block in blocks), strict=True):
        # float32 round-trips through 9 significant digits
        writer.writerow([v if isinstance(v, str) else format(v, ".9g")
                         for part in row for v in part])
    return out.getvalue()
