"""kexp train (fit loop): the run directory, callbacks, plugins, failures — end to end."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from tests.conftest import CONFIGS, REPO, run_dir_of
from tests.conftest import read_history as history

SPEC_FILES = ("config.yaml", "run.json", "history.csv", "logs", "checkpoints/last.keras",
              "checkpoints/best.keras", "model.keras", "metrics.json", "summary.txt")


def train(kexp, *args):
    """The result, and the run directory it printed (None when it printed none)."""
    result = kexp("train", *args)
    return result, run_dir_of(result) if "run directory: " in result.stdout else None


def test_digits_run_directory_has_every_file_of_the_spec(kexp, tmp_path):
    result, run = train(kexp, CONFIGS / "digits_mlp.yaml", "--runs-dir", tmp_path)
    assert result.exit_code == 0, result.stderr
    assert run.parent.parent == tmp_path and run.parent.name == "digits-mlp"
    for name in SPEC_FILES:
        assert (run / name).exists(), name
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "completed" and info["seed"] == 42
    assert set(info["versions"]) == {"python", "tensorflow", "keras", "kexp"}
    rows = history(run)
    assert [int(r["epoch"]) for r in rows] == list(range(len(rows)))
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"} <= set(rows[0])
    assert float(rows[-1]["val_accuracy"]) >= 0.90
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["validation"]["accuracy"] == pytest.approx(float(rows[-1]["val_accuracy"]))
    assert list(Path(run / "logs").rglob("events.out.tfevents.*"))
    assert "digits_mlp" in (run / "summary.txt").read_text()
    rerun = kexp("validate", run / "config.yaml")
    assert rerun.exit_code == 0, rerun.stderr
    for name in ("model.keras", "checkpoints/best.keras", "checkpoints/last.keras"):
        model = keras.saving.load_model(run / name)
        assert model.count_params() == 64 * 128 + 128 + 128 * 10 + 10


def test_runs_are_never_overwritten(kexp, tmp_path):
    _, first = train(kexp, CONFIGS / "digits_mlp.yaml", "--runs-dir", tmp_path, "--smoke")
    _, second = train(kexp, CONFIGS / "digits_mlp.yaml", "--runs-dir", tmp_path, "--smoke")
    assert first != second and first.exists() and second.exists()
    assert first.parent == tmp_path / "_smoke" / "digits-mlp"


def test_smoke_runs_two_batches_for_one_epoch(kexp, tmp_path):
    result, run = train(kexp, CONFIGS / "digits_mlp.yaml", "--runs-dir", tmp_path, "--smoke")
    assert result.exit_code == 0, result.stderr
    assert len(history(run)) == 1
    info = json.loads((run / "run.json").read_text())
    assert info["smoke"] is True and info["epochs_completed"] == 1


def test_ticket_model_with_outputs_keyed_by_name(kexp, tmp_path):
    result, run = train(kexp, CONFIGS / "listing_7_11_ticket_named.yaml", "--runs-dir", tmp_path)
    assert result.exit_code == 0, result.stderr
    columns = set(history(run)[0])
    assert {"priority_loss", "department_loss", "priority_mean_absolute_error",
            "department_accuracy", "val_department_accuracy"} <= columns


def test_early_stopping_with_zero_learning_rate_stops_after_three_epochs(kexp, tmp_path):
    result, run = train(kexp, CONFIGS / "listing_7_19_callbacks.yaml", "--runs-dir", tmp_path,
                        "--set", "compile.optimizer.learning_rate=0")
    assert result.exit_code == 0, result.stderr
    assert len(history(run)) == 3
    model = keras.saving.load_model(run / "checkpoint_path.keras")
    assert model.name == "digits_mlp"


def test_plugin_metric_and_callback_named_only_in_the_config(kexp, tmp_path):
    result, run = train(kexp, CONFIGS / "listing_7_18_custom_metric.yaml", "--runs-dir",
                        tmp_path, "--set", "train.epochs=1")
    assert result.exit_code == 0, result.stderr
    assert {"rmse", "val_rmse"} <= set(history(run)[0])
    result, run = train(kexp, CONFIGS / "listing_7_20_custom_callback.yaml", "--runs-dir",
                        tmp_path, "--set", "train.epochs=2")
    assert result.exit_code == 0, result.stderr
    pdf = (run / "training_loss.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and pdf.count(b"/Type /Page\n") + pdf.count(b"/Type /Page ") >= 2


def test_learning_rate_callbacks_change_the_logged_rate(kexp, tmp_path):
    result, run = train(kexp, CONFIGS / "callbacks_learning_rate.yaml", "--runs-dir", tmp_path,
                        "--set", "train.epochs=3")
    assert result.exit_code == 0, result.stderr
    rates = [float(r["learning_rate"]) for r in history(run)]
    assert rates[0] == pytest.approx(1e-3) and rates[2] <= rates[0] / 2
    assert (run / "keras_log.csv").exists()


@pytest.mark.parametrize("override, words", [
    ("data={type: npz, path: missing.npz, features: x, targets: y}", "missing.npz"),
    ("train.callbacks=[{type: EarlyStopping, patiance: 2}]", "did you mean 'patience'"),
])
def test_config_time_failures_write_nothing(kexp, tmp_path, override, words):
    result = kexp("train", CONFIGS / "digits_mlp.yaml", "--runs-dir", tmp_path, "--set", override)
    assert result.exit_code == 2
    assert words in result.stderr and "Traceback" not in result.stderr
    assert not any(tmp_path.iterdir())


def test_data_model_name_mismatch_lists_both_sides(kexp, tmp_path, write):
    data = tmp_path / "t.npz"
    np.savez(data, title=np.zeros((8, 10000)), body=np.zeros((8, 10000)), tags=np.zeros((8, 100)),
             priority=np.zeros((8, 1)), department=np.zeros((8, 4)))
    result = kexp("train", CONFIGS / "ticket_model.yaml", "--runs-dir", tmp_path / "runs",
                  "--set", f"data={{type: npz, path: {data}, features: [title, body, tags],"
                  " targets: [priority, department]}")
    assert result.exit_code == 2, result.stderr
    assert "body" in result.stderr and "text_body" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_nan_data_fails_the_run_with_the_reason(kexp, tmp_path):
    data = tmp_path / "nan.npz"
    x = np.random.default_rng(0).normal(size=(64, 64)).astype("float32")
    x[5, 3] = np.nan
    np.savez(data, x=x, y=np.zeros(64, "int64"))
    result, _ = train(kexp, CONFIGS / "digits_mlp.yaml", "--runs-dir", tmp_path / "runs",
                      "--set", f"data={{type: npz, path: {data}, features: x, targets: y}}")
    assert result.exit_code == 1
    run = next((tmp_path / "runs").glob("*/*"))
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "failed" and "nan" in info["reason"].lower()
    assert "non-finite" in result.stderr and "Traceback" not in result.stderr
    assert "sample 5" in info["reason"]


SLOW_PLUGIN = """
import time
import keras
from kexp.registry import CALLBACKS

@CALLBACKS.register()
class Slow(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        time.sleep(0.3)
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_marks_the_run_interrupted_with_exit_130(tmp_path, sig):
    (tmp_path / "slow.py").write_text(SLOW_PLUGIN)
    runs = tmp_path / "runs"
    proc = subprocess.Popen(
        [sys.executable, "-m", "kexp.cli.app", "train", CONFIGS / "digits_mlp.yaml",
         "--runs-dir", runs, "--plugin", tmp_path / "slow.py", "--set", "train.epochs=200",
         "--set", "train.callbacks=[Slow]"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        infos = [json.loads(p.read_text()) for p in runs.glob("*/*/run.json")] if runs.exists() else []
        if infos and infos[0].get("epochs_completed", 0) >= 2:
            break
        time.sleep(0.2)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    run = next(runs.glob("*/*"))
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "interrupted"
    assert (run / "checkpoints" / "last.keras").exists()
    assert len(history(run)) >= 2


def test_csv_column_list_is_one_matrix_for_a_sequential_model(kexp, write, tmp_path):
    """SPEC 1.4's own example: `features: [cylinders, weight]` feeds one (n, 2) matrix."""
    rng = np.random.default_rng(0)
    cylinders = rng.choice([4.0, 6.0, 8.0], 64)
    weight = rng.uniform(1.5, 5.0, 64)
    rows = "\n".join(f"{c:g},{w:.3f},{40 - 2 * c - 3 * w:.3f},x{i}"
                     for i, (c, w) in enumerate(zip(cylinders, weight, strict=True)))
    write("cars.csv", "cylinders,weight,mpg,name\n" + rows + "\n")
    config = write("cars.yaml", """
        seed: 1
        data: {type: csv, path: cars.csv, features: [cylinders, weight], targets: mpg,
               batch_size: 16}
        model:
          type: sequential
          layers: [{type: Dense, units: 1}]
        compile: {optimizer: {type: Adam, learning_rate: 0.05}, loss: mse}
        train: {epochs: 3}
        """)
    result, run = train(kexp, config, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    kernel = keras.saving.load_model(run / "model.keras").layers[0].kernel
    assert tuple(kernel.shape) == (2, 1)  # one input of two columns, in the listed order
    write("new.csv", "weight,cylinders\n2.0,4\n4.0,8\n")  # other column order in the file
    out = tmp_path / "p.npz"
    predicted = kexp("predict", run, "--input", tmp_path / "new.csv", "-o", out)
    assert predicted.exit_code == 0, predicted.output
    model = keras.saving.load_model(run / "model.keras")
    expected = model.predict(np.array([[4.0, 2.0], [8.0, 4.0]], "float32"), verbose=0)
    np.testing.assert_allclose(np.load(out)["predictions"], expected, rtol=1e-5)
