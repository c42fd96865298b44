"""The bad-input corpus (issue 5): bad configs, overrides and data files, each run through the
real ``kexp train``.

Every case must give exit code 2 (1 for what only training can detect), a short message on
stderr naming the config path and ``file:line`` (or the data file and row), no traceback, and
no run directory when the error is found before training. The configs are
``tests/fixtures/bad/*.yaml``; most extend ``_base.yaml`` (or ``_functional.yaml``) and break
one thing, so each file's line numbers are those the message must name. The test copies the
folder, writes the data files a case needs next to it, and runs the case there.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_kexp

FIXTURES = Path(__file__).parent / "fixtures" / "bad"
ROWS = 64


def _npz(name: str, x_shape=(ROWS, 3), y_rows: int = ROWS, nan_row: int | None = None):
    def build(folder: Path) -> None:
        rng = np.random.default_rng(0)
        y = rng.normal(size=(y_rows, 1)).astype("float32")
        if nan_row is not None:
            y[nan_row] = np.nan
        np.savez(folder / name, x=rng.normal(size=x_shape).astype("float32"), y=y)

    return build


def _empty_file(name: str):
    return lambda folder: (folder / name).write_bytes(b"")


def _npz_without_arrays(folder: Path) -> None:
    np.savez(folder / "no_arrays.npz")


def _npz_of_objects(folder: Path) -> None:
    x = np.empty(ROWS, dtype=object)
    x[:] = [{"row": i} for i in range(ROWS)]
    np.savez(folder / "objects.npz", x=x, y=np.zeros((ROWS, 1), "float32"))


def _directory(name: str):
    return lambda folder: (folder / name).mkdir()


def _lambda_model(folder: Path) -> None:
    """A functional model whose Lambda layer writes a marker file whenever it runs: loading
    the model unsafely would rebuild it and run the code."""
    import keras

    marker = folder / "lambda_ran"
    code = f"lambda x: (open({str(marker)!r}, 'w').close(), x * 2)[1]"
    inputs = keras.Input(shape=(3,), name="x")
    doubled = keras.layers.Lambda(eval(code), name="double")(inputs)
    outputs = keras.layers.Dense(1, name="out")(doubled)
    keras.Model(inputs, outputs).save(folder / "lambda.keras")
    marker.unlink()


@dataclass(frozen=True)
class Case:
    """One bad input: the config to train, ``--set`` overrides and other options, the data
    files to write, and what must be said. ``stage`` is where it is found: ``config``
    (``kexp validate`` finds it, without TensorFlow, with the message ``kexp train`` gives), ``build`` (Keras refuses to build the
    model), ``compile`` (Keras refuses a compile argument), ``data`` (reading the data or
    matching it to the model), ``train`` (only training can tell)."""

    id: str
    config: str
    expect: tuple[str, ...]
    sets: tuple[str, ...] = ()
    data: Callable[[Path], None] | None = None
    code: int = 2
    stage: str = "config"
    options: tuple[str, ...] = ()


CASES = [
    # --- YAML itself
    Case("malformed_yaml", "malformed_yaml.yaml", ("invalid YAML", "malformed_yaml.yaml:5:")),
    Case("tabs", "tabs.yaml", ("tabs.yaml:4:", "tab")),
    Case("duplicate_key", "duplicate_key.yaml",
         ("duplicate_key.yaml:5:", "train.epochs", "duplicate key 'epochs'",
          "duplicate_key.yaml:4:")),
    Case("python_object_tag", "python_object_tag.yaml",
         ("python_object_tag.yaml:4:", "compile.optimizer", "python/object/apply",
          "not allowed")),
    Case("python_name_tag", "python_name_tag.yaml",
         ("python_name_tag.yaml:5:", "train.callbacks[0]", "not allowed")),
    Case("not_a_mapping", "not_a_mapping.yaml", ("not_a_mapping.yaml", "must be a mapping")),
    Case("missing_sections", "missing_sections.yaml",
         ("missing_sections.yaml:2:", "model: this key is required")),  # data: tests/test_model_only
    Case("config_file_missing", "no_such_config.yaml", ("no_such_config.yaml", "does not exist")),
    # --- wrong types and values
    Case("epochs_wrong_type", "epochs_wrong_type.yaml",
         ("epochs_wrong_type.yaml:4:", "train.epochs", "expected an integer", "'ten'")),
    Case("epochs_negative", "epochs_negative.yaml",
         ("epochs_negative.yaml:3:", "train.epochs", "greater than 0", "-1")),
    Case("batch_size_zero", "batch_size_zero.yaml",
         ("batch_size_zero.yaml:2:", "data.batch_size", "greater than 0")),
    Case("validation_split_too_big", "validation_split_too_big.yaml",
         ("validation_split_too_big.yaml:3:", "data.validation_split", "less than 1", "1.5")),
    Case("input_shape_negative", "input_shape_negative.yaml",
         ("input_shape_negative.yaml:3:", "model.input_shape[0]", "greater than 0")),
    Case("seed_negative", "seed_negative.yaml",
         ("seed_negative.yaml:2:", "seed", "greater than or equal to 0")),
    Case("steps_per_execution_zero", "steps_per_execution_zero.yaml",
         ("steps_per_execution_zero.yaml:2:", "compile.steps_per_execution: input should be "
          "greater than 0, or expected one of auto")),
    Case("units_negative", "units_negative.yaml",
         ("units_negative.yaml:6:", "model.layers[1].units", "positive integer", "-3")),
    Case("units_not_a_number", "units_not_a_number.yaml",
         ("units_not_a_number.yaml:4:", "model.layers[0].units", "positive integer", "abc")),
    Case("dropout_rate_too_big", "dropout_rate_too_big.yaml",
         ("dropout_rate_too_big.yaml:7:", "model.layers[1].rate", "between 0 and 1"),
         stage="build"),
    Case("learning_rate_not_a_number", "learning_rate_not_a_number.yaml",
         ("learning_rate_not_a_number.yaml:3:", "compile.optimizer", "learning_rate", "fast")),
    Case("layer_incompatible_with_input", "layer_incompatible_with_input.yaml",
         ("layer_incompatible_with_input.yaml:6:", "model.layers[1]", "conv2d"),
         stage="build"),
    Case("activation_not_a_name", "activation_not_a_name.yaml",
         ("activation_not_a_name.yaml:4:", "model.layers[0].activation",
          "expected an activation name", "received 3")),
    Case("reshape_wrong_size", "reshape_wrong_size.yaml",
         ("reshape_wrong_size.yaml:5:", "model.layers[0]", "total size", "target_shape=(7,)"),
         stage="build"),
    Case("concatenate_mismatched_shapes", "concatenate_mismatched_shapes.yaml",
         ("concatenate_mismatched_shapes.yaml:5:", "model.layers[0]", "matching shapes"),
         stage="build"),
    Case("metric_argument_wrong_type", "metric_argument_wrong_type.yaml",
         ("metric_argument_wrong_type.yaml:5:", "compile.metrics[0].name", "MeanAbsoluteError",
          "expects a string", "received 3")),
    Case("name_not_a_string", "name_not_a_string.yaml",
         ("name_not_a_string.yaml:4:", "model.layers[0].name", "expects a string")),
    Case("zero_layers", "zero_layers.yaml",
         ("zero_layers.yaml:3:", "model.layers", "at least one layer")),
    Case("multi_worker_fit", "multi_worker_fit.yaml",
         ("train.loop", "multi_worker", "custom", "_base.yaml:")),
    # --- rules between keys (kexp.config.rules)
    Case("distribute_devices_default", "distribute_devices_default.yaml",
         ("distribute_devices_default.yaml:2:", "distribute.devices",
          "only the mirrored strategy takes devices")),
    Case("distribute_communication_mirrored", "distribute_communication_mirrored.yaml",
         ("distribute_communication_mirrored.yaml:4:", "distribute.communication",
          "only the multi_worker strategy")),
    Case("steps_per_execution_under_strategy", "steps_per_execution_under_strategy.yaml",
         ("steps_per_execution_under_strategy.yaml:4:", "compile.steps_per_execution",
          "received 4 with distribute.strategy: mirrored", "train.loop: custom")),
    Case("validation_twice", "validation_twice.yaml",
         ("validation_twice.yaml:3:", "data.validation_split", "not both")),
    Case("cache_empty_name", "cache_empty_name.yaml",
         ("cache_empty_name.yaml:3:", "data.cache", "expected memory, a file path")),
    Case("imdb_mode", "imdb_mode.yaml",
         ("imdb_mode.yaml:2:", "data.mode", "imdb: expected multi_hot or sequences", "'bag'")),
    # --- misspelled keys
    Case("misspelled_top_level_key", "misspelled_top_level_key.yaml",
         ("misspelled_top_level_key.yaml:2:", "trian", "did you mean 'train'")),
    Case("misspelled_train_key", "misspelled_train_key.yaml",
         ("misspelled_train_key.yaml:3:", "train.epoch", "did you mean 'epochs'")),
    Case("misspelled_layer_argument", "misspelled_layer_argument.yaml",
         ("misspelled_layer_argument.yaml:4:", "model.layers[0].unitz",
          "did you mean 'units'")),
    Case("misspelled_callback_argument", "misspelled_callback_argument.yaml",
         ("misspelled_callback_argument.yaml:4:", "train.callbacks[0].patiense",
          "did you mean 'patience'")),
    Case("component_without_type", "component_without_type.yaml",
         ("component_without_type.yaml:5:", "train.callbacks[0]", "`type:`")),
    Case("unknown_loop", "unknown_loop.yaml",
         ("unknown_loop.yaml:2:", "train.loop", "did you mean 'fit'")),
    # --- unknown names
    Case("unknown_layer", "unknown_layer.yaml",
         ("unknown_layer.yaml:4:", "model.layers[0].type", "'Dens'", "did you mean 'Dense'")),
    Case("unknown_optimizer", "unknown_optimizer.yaml",
         ("unknown_optimizer.yaml:3:", "compile.optimizer.type", "did you mean 'adam'")),
    Case("unknown_loss", "unknown_loss.yaml",
         ("unknown_loss.yaml:3:", "compile.loss.type", "did you mean 'mean_squared_error'")),
    Case("unknown_metric", "unknown_metric.yaml",
         ("unknown_metric.yaml:3:", "compile.metrics[1].type", "did you mean 'accuracy'")),
    Case("unknown_callback", "unknown_callback.yaml",
         ("unknown_callback.yaml:4:", "train.callbacks[0].type",
          "did you mean 'EarlyStopping'")),
    Case("unknown_dataset", "unknown_dataset.yaml",
         ("unknown_dataset.yaml:2:", "data.type", "did you mean 'npz'")),
    Case("unknown_activation", "unknown_activation.yaml",
         ("unknown_activation.yaml:4:", "model.layers[0].activation", "did you mean 'relu'")),
    Case("unknown_initializer", "unknown_initializer.yaml",
         ("unknown_initializer.yaml:4:", "model.layers[0].kernel_initializer",
          "did you mean 'glorot_uniform'")),
    Case("unknown_schedule", "unknown_schedule.yaml",
         ("unknown_schedule.yaml:5:", "compile.optimizer.learning_rate.type",
          "did you mean 'ExponentialDecay'")),
    Case("unknown_model_class", "unknown_model_class.yaml",
         ("unknown_model_class.yaml:3:", "model.type", "'TicketModel'")),
    # --- the functional graph
    Case("dangling_inputs", "dangling_inputs.yaml",
         ("dangling_inputs.yaml:5:", "model.layers[1].inputs", "'hiden'",
          "did you mean 'hidden'")),
    Case("graph_cycle", "graph_cycle.yaml",
         ("graph_cycle.yaml:4:", "model.layers[0].inputs", "cycle", "a -> b -> a")),
    Case("outputs_name_nothing", "outputs_name_nothing.yaml",
         ("outputs_name_nothing.yaml:3:", "model.outputs", "'output'", "did you mean 'out'")),
    Case("functional_zero_layers", "functional_zero_layers.yaml",
         ("functional_zero_layers.yaml:3:", "model.layers", "at least one layer")),
    Case("duplicate_layer_names", "duplicate_layer_names.yaml",
         ("duplicate_layer_names.yaml:5:", "model.layers[1].name", "used twice")),
    # --- compile keyed by outputs
    Case("loss_unknown_output", "loss_unknown_output.yaml",
         ("loss_unknown_output.yaml:3:", "compile.loss.output", "did you mean 'out'")),
    Case("loss_weights_wrong_length", "loss_weights_wrong_length.yaml",
         ("loss_weights_wrong_length.yaml:4:", "compile.loss_weights",
          "2 weights for 1 loss")),
    Case("loss_keyed_by_output_of_sequential", "loss_keyed_by_output_of_sequential.yaml",
         ("loss_keyed_by_output_of_sequential.yaml:4:", "compile.loss", "sequential",
          "no name")),
    Case("metrics_keyed_by_output_of_sequential", "metrics_keyed_by_output_of_sequential.yaml",
         ("metrics_keyed_by_output_of_sequential.yaml:4:", "compile.metrics", "sequential")),
    # --- extends
    Case("extends_cycle", "extends_cycle_a.yaml",
         ("extends_cycle_b.yaml:1:", "extends", "cycle",
          "extends_cycle_a.yaml -> ", "extends_cycle_b.yaml -> ")),
    Case("extends_missing", "extends_missing.yaml",
         ("extends_missing.yaml:1:", "extends", "'no_such_base.yaml'", "does not exist")),
    Case("extends_wrong_type", "extends_wrong_type.yaml",
         ("extends_wrong_type.yaml:1:", "extends", "file name")),
    # --- --set overrides
    Case("set_index_out_of_range", "_base.yaml", ("--set model.layers[5].units=3",
                                                  "model.layers[5]", "2 item(s)"),
         sets=("model.layers[5].units=3",)),
    Case("set_through_a_number", "_base.yaml", ("--set train.epochs.value=3", "train.epochs"),
         sets=("train.epochs.value=3",)),
    Case("set_unknown_key", "_base.yaml", ("--set train.epoch=3", "train.epoch",
                                           "did you mean 'epochs'"),
         sets=("train.epoch=3",)),
    Case("set_wrong_type", "_base.yaml", ("--set data.batch_size=big", "data.batch_size",
                                          "expected an integer"),
         sets=("data.batch_size=big",)),
    Case("set_without_value", "_base.yaml", ("--set train.epochs", "PATH=VALUE"),
         sets=("train.epochs",)),
    Case("set_bad_yaml", "_base.yaml", ("--set train.epochs=[1", "train.epochs"),
         sets=("train.epochs=[1",)),
    Case("set_bad_path", "_base.yaml", ("--set model..units=3", "config path"),
         sets=("model..units=3",)),
    # --- data files
    Case("npz_missing", "data_missing_npz.yaml",
         ("data_missing_npz.yaml:2:", "data: ", "no_such.npz", "not found"), stage="data"),
    Case("npz_empty", "data_empty_npz.yaml", ("data_empty_npz.yaml:3:", "empty.npz", "empty"),
         data=_empty_file("empty.npz"), stage="data"),
    Case("npz_without_arrays", "data_npz_without_arrays.yaml", ("no_arrays.npz", "no arrays"),
         data=_npz_without_arrays, stage="data"),
    Case("npz_ragged", "data_ragged_npz.yaml",
         ("data_ragged_npz.yaml:3:", "ragged.npz", "x 64, y 50"),
         data=_npz("ragged.npz", y_rows=50), stage="data"),
    Case("npz_unknown_array", "data_unknown_array.yaml",
         ("train.npz", "'X'", "Did you mean 'x'"), stage="data"),
    Case("npz_object_array", "data_object_array.yaml", ("objects.npz", "'x'", "pickle"),
         data=_npz_of_objects, stage="data"),
    Case("npz_wider_than_model", "data_wider_than_model.yaml", ("wide.npz", "(3,)", "(5,)"),
         data=_npz("wide.npz", x_shape=(ROWS, 5)), stage="data"),
    Case("data_names_not_the_model_inputs", "data_names_not_the_model_inputs.yaml",
         ("train.npz", "[title]", "[x]"), stage="data"),
    Case("validation_npz_missing", "data_validation_missing.yaml",
         ("data_validation_missing.yaml:3:", "data.validation: ", "no_such_validation.npz",
          "not found"), stage="data"),
    Case("csv_missing", "csv_missing.yaml",
         ("csv_missing.yaml:2:", "no_such.csv", "not found"), stage="data"),
    Case("csv_empty", "csv_empty.yaml", ("empty.csv", "empty"), stage="data"),
    Case("csv_header_only", "csv_header_only.yaml", ("header_only.csv", "no data rows"),
         stage="data"),
    Case("csv_ragged", "csv_ragged.yaml",
         ("csv_ragged.yaml:2:", "ragged.csv", "row 3", "5 cells", "expected 4"), stage="data"),
    Case("csv_non_numeric", "csv_non_numeric.yaml",
         ("non_numeric.csv", "row 4", "column 'b'", "'high' is not a number"), stage="data"),
    Case("csv_question_mark", "csv_question_mark.yaml",
         ("question_mark.csv", "row 3", "column 'b'", "missing value '?'"), stage="data"),
    Case("csv_unknown_column", "csv_unknown_column.yaml", ("good.csv", "'mpg'", "a, b, c, y"),
         stage="data"),
    Case("layer_incompatible_with_data", "layer_incompatible_with_data.yaml",
         ("layer_incompatible_with_data.yaml:7:", "model.layers[1]", "conv2d"), stage="data"),
    Case("nan_targets", "nan_targets.yaml", ("nan_targets.npz", "targets", "sample 7"),
         data=_npz("nan_targets.npz", nan_row=7), code=1, stage="train"),
    # --- base: models
    Case("base_text_file", "base_text_file.yaml",
         ("base_text_file.yaml:3:", "model.base", "notes.txt", "not a .keras model")),
    Case("base_directory_without_model", "base_directory.yaml",
         ("base_directory.yaml:4:", "model.base", "not_a_run", "without model.keras"),
         data=_directory("not_a_run")),
    Case("base_missing", "base_missing.yaml",
         ("base_missing.yaml:3:", "model.base", "no_such_model.keras", "does not exist")),
    Case("base_not_a_zip", "base_not_a_zip.yaml",
         ("base_not_a_zip.yaml:3:", "model.base", "not a readable .keras model")),
    Case("base_with_lambda_layer", "base_lambda.yaml",
         ("base_lambda.yaml:4:", "model.base", "Lambda", "safe mode"), data=_lambda_model),
    # --- plugins
    Case("plugin_raises_on_import", "plugin_raises.yaml",
         ("plugin_raises.yaml:2:", "plugins[0]", "raises.py", "ZeroDivisionError", "line 5")),
    Case("plugin_registers_a_name_twice", "plugin_registers_twice.yaml",
         ("plugin_registers_twice.yaml:2:", "plugins[0]", "'bad_corpus_twice'",
          "already registered", "line 11 of")),
    Case("plugin_missing_module", "plugin_missing_module.yaml",
         ("plugin_missing_module.yaml:3:", "plugins[0]", "no_such_kexp_plugin_module")),
    Case("cli_plugin_missing_module", "_base.yaml",
         ("--plugin no_such_cli_plugin", "plugins[0]", "no module named"),
         options=("--plugin", "no_such_cli_plugin")),
    Case("plugin_missing_file", "plugin_missing_file.yaml",
         ("plugin_missing_file.yaml:3:", "plugins[0]", "no_such_plugin.py", "does not exist")),
]


def _prepare(tmp_path: Path, case: Case) -> Path:
    folder = tmp_path / "bad"
    shutil.copytree(FIXTURES, folder)
    _npz("train.npz")(folder)
    if case.data is not None:
        case.data(folder)
    return folder


def _check_exit(result, case: Case, runs_dir: Path) -> None:
    message = result.stderr
    assert result.exit_code == case.code, message or result.stdout
    assert "Traceback" not in message + result.stdout
    missing = [s for s in case.expect if s not in message]
    assert not missing, f"{missing} not in:\n{message}"
    assert "\n\n" not in message.strip(), message
    runs = sorted(runs_dir.glob("*/*"))
    if case.code == 2:
        assert runs == [], "a config-time error left a run directory behind"
    else:
        assert len(runs) == 1
        info = json.loads((runs[0] / "run.json").read_text())
        assert info["status"] == "failed" and "sample 7" in info["reason"]


def _options(case: Case) -> list[str]:
    return [arg for s in case.sets for arg in ("--set", s)] + list(case.options)


def _train(kexp, tmp_path: Path, case: Case):
    folder = _prepare(tmp_path, case)
    return kexp("train", folder / case.config, "--runs-dir", tmp_path / "runs",
                *_options(case))


@pytest.fixture(autouse=True)
def _forget_test_registrations():
    yield
    from kexp.registry import METRICS

    METRICS.unregister("bad_corpus_twice")


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_clear_message(kexp, tmp_path, case):
    """One clear message from `kexp train`; and `kexp validate` accepts exactly what `kexp
    train` accepts: every config rule runs in the config check, without TensorFlow, with the
    same message. What only Keras (``build``, ``compile``), the data or training can tell is
    found later, and validate lets it pass."""
    trained = _train(kexp, tmp_path, case)
    _check_exit(trained, case, tmp_path / "runs")
    validated = kexp("validate", tmp_path / "bad" / case.config, *_options(case))
    if case.stage == "config":
        assert validated.exit_code == 2, validated.stdout
        assert validated.stderr == trained.stderr
    else:
        assert validated.exit_code == 0, validated.stderr


@pytest.mark.parametrize("case", [c for c in CASES if c.stage == "build"],
                         ids=[c.id for c in CASES if c.stage == "build"])
def test_build_errors_are_located_by_summary(kexp, tmp_path, case):
    folder = _prepare(tmp_path, case)
    result = kexp("summary", folder / case.config, *_options(case))
    assert result.exit_code == 2, result.stdout
    missing = [s for s in case.expect if s not in result.stderr]
    assert not missing, f"{missing} not in:\n{result.stderr}"


def test_the_bases_of_the_corpus_are_valid(kexp, tmp_path):
    folder = _prepare(tmp_path, CASES[0])
    for name in ("_base.yaml", "_functional.yaml"):
        result = kexp("validate", folder / name)
        assert result.exit_code == 0, result.stderr


def test_the_base_config_trains(kexp, tmp_path):
    case = Case("good", "_base.yaml", ())
    result = _train(kexp, tmp_path, case)
    assert result.exit_code == 0, result.stderr


def test_a_yaml_tag_runs_no_code(kexp, tmp_path):
    case = next(c for c in CASES if c.id == "python_object_tag")
    result = _train(kexp, tmp_path, case)
    assert result.exit_code == 2
    assert not list(tmp_path.rglob("pwned-by-config")) and not Path("pwned-by-config").exists()


def test_a_lambda_base_model_runs_no_code(kexp, tmp_path):
    case = next(c for c in CASES if c.id == "base_with_lambda_layer")
    result = _train(kexp, tmp_path, case)
    assert result.exit_code == 2
    assert not (tmp_path / "bad" / "lambda_ran").exists()


def test_debug_shows_the_traceback(tmp_path):
    case = next(c for c in CASES if c.id == "misspelled_train_key")
    config = _prepare(tmp_path, case) / case.config
    plain = run_kexp("validate", config)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    assert "did you mean 'epochs'" in plain.stderr
    debug = run_kexp("--debug", "validate", config)
    assert debug.returncode != 0 and "Traceback" in debug.stderr
    assert "ConfigError" in debug.stderr
