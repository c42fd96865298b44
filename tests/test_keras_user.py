"""What a Keras user writes works (issue #21): plain-function losses and metrics, loss
factories, monitor names checked by `validate`, every config error reported at once —
end to end through the real `kexp` command, as a Keras user writes configs and plugins."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import read_history, read_run_json, run_dir_of, run_kexp

PLUGIN = '''
import keras
from kexp.registry import LOSSES, METRICS


@LOSSES.register()
def scaled_mse(y_true, y_pred):
    return 0.5 * keras.ops.mean(keras.ops.square(y_true - y_pred), axis=-1)


@METRICS.register()
def max_abs_error(y_true, y_pred):
    return keras.ops.max(keras.ops.abs(y_true - y_pred), axis=-1)


@LOSSES.register()
def make_scaled_loss(scale=1.0):
    def scaled_loss(y_true, y_pred):
        return scale * keras.ops.mean(keras.ops.square(y_true - y_pred), axis=-1)
    return scaled_loss
'''

REGRESSION = """
plugins: [user_losses.py]
data: {type: csv, path: houses.csv, targets: price, validation_split: 0.25, batch_size: 16}
model:
  type: sequential
  input_shape: [4]
  layers: [{type: Dense, units: 1}]
compile:
  optimizer: {type: SGD, learning_rate: 0.01}
  loss: %s
  metrics: [max_abs_error, mse]
train: {epochs: 2}
seed: 1
"""


def user_dir(tmp_path, loss: str):
    (tmp_path / "user_losses.py").write_text(PLUGIN)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(64, 4))
    y = x @ np.array([1.0, -2.0, 0.5, 3.0]) + 1.0
    rows = [",".join(f"{v:.5f}" for v in (*xi, yi)) for xi, yi in zip(x, y, strict=True)]
    (tmp_path / "houses.csv").write_text("a,b,c,d,price\n" + "\n".join(rows) + "\n")
    config = tmp_path / "regression.yaml"
    config.write_text(textwrap.dedent(REGRESSION % loss).lstrip())
    return config


def train_ok(*args, cwd):
    result = run_kexp("train", *args, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return run_dir_of(result)


@pytest.mark.parametrize("loop", ["fit", "custom"])
def test_a_plain_function_is_the_loss_and_a_factory_is_called(tmp_path, loop):
    config = user_dir(tmp_path, "scaled_mse")
    plain = train_ok(config, "--runs-dir", tmp_path / "runs", "--set", f"train.loop={loop}",
                     cwd=tmp_path)
    rows = read_history(plain, numbers=True)
    assert len(rows) == 2
    # the plain function is the loss itself: half the mean squared error Keras logs beside it
    for row in rows:
        assert math.isclose(row["loss"], 0.5 * row["mse"], rel_tol=1e-4)
        assert row["max_abs_error"] > 0 and "val_max_abs_error" in row
    # a factory given arguments in the config is called with them; what it returns is the loss
    factory_config = user_dir(tmp_path, "{type: make_scaled_loss, scale: 2.0}")
    factory = train_ok(factory_config, "--runs-dir", tmp_path / "runs", "--set",
                       f"train.loop={loop}", cwd=tmp_path)
    for row in read_history(factory, numbers=True):
        assert math.isclose(row["loss"], 2.0 * row["mse"], rel_tol=1e-4)
    assert read_run_json(factory)["status"] == "completed"
    # the saved models reload with the plugin's functions, and evaluate scores them
    for run in (plain, factory) if loop == "fit" else (factory,):
        result = run_kexp("evaluate", run, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "max_abs_error" in result.stdout


def test_validate_accepts_a_plain_function_and_checks_a_factory_arguments(tmp_path):
    config = user_dir(tmp_path, "scaled_mse")
    assert run_kexp("validate", config, cwd=tmp_path).returncode == 0
    bad = user_dir(tmp_path, "{type: make_scaled_loss, scael: 2.0}")
    result = run_kexp("validate", bad, cwd=tmp_path)
    assert result.returncode == 2
    assert "compile.loss.scael" in result.stderr and "scale" in result.stderr
    assert "regression.yaml:" in result.stderr and "Traceback" not in result.stderr


TICKETS = """
data: {type: synthetic_tickets, num_samples: 64, validation_split: 0.25}
model:
  type: functional
  inputs: [{name: title, shape: [100]}, {name: text_body, shape: [100]}, {name: tags, shape: [10]}]
  layers:
    - {type: Concatenate, inputs: [title, text_body, tags], name: features}
    - {type: Dense, units: 1, activation: sigmoid, inputs: features, name: priority}
    - {type: Dense, units: 4, activation: softmax, inputs: features, name: department}
  outputs: [priority, department]
compile:
  optimizer: rmsprop
  loss: {priority: mean_squared_error, department: categorical_crossentropy}
  metrics: {priority: [mean_absolute_error], department: [accuracy]}
train:
  epochs: 1
  monitor: %s
  callbacks: [{type: EarlyStopping, monitor: %s, patience: 2}]
"""


def test_validate_rejects_a_monitor_the_run_never_logs(tmp_path):
    config = tmp_path / "tickets.yaml"
    config.write_text(textwrap.dedent(TICKETS % ("val_department_accuarcy", "val_acc")).lstrip())
    result = run_kexp("validate", config)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "train.monitor" in result.stderr and "'val_department_accuracy'" in result.stderr
    assert "train.callbacks[0].monitor" in result.stderr
    assert "tickets.yaml:16:" in result.stderr and "tickets.yaml:17:" in result.stderr
    good = tmp_path / "good.yaml"
    good.write_text(textwrap.dedent(TICKETS % ("val_department_accuracy",
                                               "val_priority_mean_absolute_error")).lstrip())
    assert run_kexp("validate", good).returncode == 0


EVERYTHING_WRONG = """
data: {type: digits, validaton_split: 0.2, batchsize: 32}
model:
  type: sequential
  input_shape: [64]
  layers: [{type: Dense, units: 10, activation: softmax}]
compile:
  optimizer: {type: Adam, lr: 0.01}
  loss: sparse_categorical_crossentropy
train:
  epoch: 3
  callbacks: [{type: EarlyStoping, patience: 2}]
"""


def test_validate_reports_every_error_at_once_with_did_you_mean(tmp_path):
    config = tmp_path / "wrong.yaml"
    config.write_text(textwrap.dedent(EVERYTHING_WRONG).lstrip())
    result = run_kexp("validate", config)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = {line.split(": ", 2)[1]: line for line in result.stderr.splitlines()
             if line.startswith("  - ")}
    assert set(lines) == {"train.epoch", "data.validaton_split", "data.batchsize",
                          "compile.optimizer.lr", "train.callbacks[0].type"}
    assert "wrong.yaml:10:" in lines["train.epoch"] and "'epochs'" in lines["train.epoch"]
    assert "wrong.yaml:11:" in lines["train.callbacks[0].type"]
    assert "'EarlyStopping'" in lines["train.callbacks[0].type"]
    assert "`data` option" in lines["data.validaton_split"]
    assert "did you mean 'validation_split'" in lines["data.validaton_split"]
    assert "did you mean 'batch_size'" in lines["data.batchsize"]
    assert "did you mean 'learning_rate'" in lines["compile.optimizer.lr"]


def test_print_run_dir_ends_stdout_with_the_bare_path_and_evaluate_data_errors_name_data(
        tmp_path):
    from tests.conftest import CONFIGS

    result = run_kexp("train", CONFIGS / "digits_mlp.yaml", "--runs-dir", tmp_path, "-q",
                      "--print-run-dir", "--set", "train.epochs=1")
    assert result.returncode == 0, result.stderr
    run = Path(result.stdout.splitlines()[-1])
    assert run.is_absolute() and (run / "run.json").is_file() and (run / "model.keras").is_file()
    assert "run directory:" not in result.stdout
    result = run_kexp("evaluate", run, "--data", "validaton_split=0.5")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--data validaton_split=0.5" in result.stderr and "--set" not in result.stderr
    assert "did you mean 'validation_split'" in result.stderr


SHAPE_MISTAKE = """
data: {type: digits, validation_split: 0.2, batch_size: 32}
model:
  type: sequential
  input_shape: [64]
  layers: [{type: Dense, units: 2, activation: softmax}]
compile: {optimizer: adam, loss: mse}
train: {epochs: 1}
"""


@pytest.mark.parametrize("loop", ["fit", "custom"])
def test_a_loss_that_cannot_take_the_data_is_a_config_error_before_the_run(kexp, tmp_path,
                                                                          loop):
    """The start-up probe runs one batch through the loss: exit 2 with TensorFlow's own
    message, the output, the targets and the loss's line; no run directory."""
    config = tmp_path / "shape.yaml"
    config.write_text(textwrap.dedent(SHAPE_MISTAKE).lstrip())
    result = kexp("train", config, "--runs-dir", tmp_path / "runs", "-q", "--set",
                  f"train.loop={loop}")
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    assert "Incompatible shapes" in result.stderr, result.stderr
    assert "compile.loss" in result.stderr and "shape.yaml:6:" in result.stderr
    assert "'mse'" in result.stderr and "shape (32, 2)" in result.stderr
    assert "the targets of digits" in result.stderr and "shape (32,)" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_sparse_crossentropy_on_one_hot_targets_names_the_output_and_its_loss(kexp, tmp_path):
    config = tmp_path / "tickets.yaml"
    text = textwrap.dedent(TICKETS % ("val_loss", "val_loss")).lstrip()
    config.write_text(text.replace("department: categorical_crossentropy",
                                   "department: sparse_categorical_crossentropy").replace(
        "num_samples: 64,", "num_samples: 64, vocabulary_size: 100, num_tags: 10,"))
    result = kexp("train", config, "--runs-dir", tmp_path / "runs", "-q")
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    assert "compile.loss.department" in result.stderr and "tickets.yaml:12:" in result.stderr
    assert "output 'department'" in result.stderr
    assert "'sparse_categorical_crossentropy'" in result.stderr
    assert not (tmp_path / "runs").exists()


SINGLE_INPUT = """
data: {type: npz, path: points.npz, features: {points: x}, targets: y, validation_split: 0.25}
model:
  type: functional
  inputs: [{name: points, shape: [3]}]
  layers: [{type: Dense, units: 2, activation: softmax, name: label}]
  outputs: [label]
compile: {optimizer: adam, loss: sparse_categorical_crossentropy, metrics: [accuracy]}
train: {epochs: 1}
"""


PLUGIN_LOSS = """
import keras
from kexp.registry import LOSSES


@LOSSES.register()
def plain_sparse_ce(y_true, y_pred):
    return keras.losses.sparse_categorical_crossentropy(y_true, y_pred)
"""


@pytest.mark.parametrize("plugin", [False, True], ids=["no-plugin", "plugin-imports-keras"])
def test_a_run_prints_no_keras_structure_warning_nor_tensorflow_probe_lines(tmp_path, plugin):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)).astype("float32")
    np.savez(tmp_path / "points.npz", x=x, y=(x[:, 0] > 0).astype("int64"))
    config = tmp_path / "single.yaml"
    text = textwrap.dedent(SINGLE_INPUT).lstrip()
    if plugin:  # TensorFlow imported by the plugin, before kexp starts it (cuInit leaked)
        (tmp_path / "losses.py").write_text(PLUGIN_LOSS)
        text = "plugins: [losses.py]\n" + text.replace(
            "loss: sparse_categorical_crossentropy", "loss: plain_sparse_ce")
    config.write_text(text)
    # as a user's shell has it: no TF_CPP_MIN_LOG_LEVEL (the test session sets one)
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run(
        [sys.executable, "-m", "kexp.cli.app", "train", str(config), "--runs-dir",
         str(tmp_path / "runs")], cwd=tmp_path, capture_output=True, text=True, env=env,
        timeout=300)
    assert result.returncode == 0, result.stderr
    assert read_run_json(run_dir_of(result))["status"] == "completed"
    for noise in ("UserWarning", "doesn't match the expected structure", "cuda", "CUDA",
                  "cuDNN", "TF-TRT", "absl", "oneDNN", "Traceback"):
        assert noise not in result.stderr, result.stderr


def test_validate_rejects_one_metric_list_for_two_outputs_and_plateau_with_a_schedule(
        tmp_path):
    config = tmp_path / "tickets.yaml"
    text = textwrap.dedent(TICKETS % ("val_loss", "val_loss")).lstrip()
    config.write_text(text.replace(
        "metrics: {priority: [mean_absolute_error], department: [accuracy]}",
        "metrics: [accuracy]").replace(
        "optimizer: rmsprop",
        "optimizer: {type: RMSprop, learning_rate: {type: ExponentialDecay, "
        "initial_learning_rate: 0.01, decay_steps: 10, decay_rate: 0.9}}").replace(
        "EarlyStopping, monitor: val_loss", "ReduceLROnPlateau, monitor: val_loss"))
    result = run_kexp("validate", config)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = {line.split(": ", 2)[1]: line for line in result.stderr.splitlines()
             if line.startswith("  - ")}
    assert set(lines) == {"compile.metrics", "train.callbacks[0].type"}, result.stderr
    assert "2 outputs (priority, department)" in lines["compile.metrics"]
    assert "tickets.yaml:13:" in lines["compile.metrics"]
    assert "schedule" in lines["train.callbacks[0].type"]
    assert "tickets.yaml:17:" in lines["train.callbacks[0].type"]
