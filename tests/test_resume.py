"""Resume and crash safety: the state sets (kexp.training.resume), `kexp train --resume` and
its refusals, NaN, SIGTERM and concurrent runs. Kill -9 and determinism: test_determinism.py."""

from __future__ import annotations

import csv
import json
import random
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from kexp.runs import Run
from kexp.training import resume as rs
from kexp.training.callbacks import checkpoint_info
from tests.conftest import REPO, run_dir_of
from tests.conftest import read_run_json as info

# A small deterministic job with shuffling and dropout (digits: 1,437 training images).
CONFIG = """
name: resumable
seed: 7
deterministic: true
data: {type: digits, batch_size: 32, validation_split: 0.2, shuffle: true}
model:
  type: sequential
  name: small
  input_shape: [64]
  layers:
    - {type: Dense, units: 32, activation: relu}
    - {type: Dropout, rate: 0.3}
    - {type: Dense, units: 10, activation: softmax}
compile:
  optimizer: {type: Adam, learning_rate: 1e-3}
  loss: sparse_categorical_crossentropy
  metrics: [accuracy]
train:
  epochs: 6
"""


# --- helpers shared with test_determinism.py ---------------------------------------------

def epochs_in(path: Path) -> list[int]:
    with open(path, newline="") as f:
        return [int(float(row["epoch"])) for row in csv.DictReader(f)]


def weights(path: Path) -> list[np.ndarray]:
    return keras.saving.load_model(path, compile=False).get_weights()


def assert_same_weights(a: Path, b: Path) -> None:
    left, right = weights(a), weights(b)
    assert len(left) == len(right)
    for x, y in zip(left, right, strict=True):
        assert np.array_equal(x, y), f"max abs diff {np.max(np.abs(x - y))}"


def start_kexp(*args, log: Path) -> subprocess.Popen:
    """`kexp` in a fresh process, its output in `log`."""
    out = open(log, "w")
    return subprocess.Popen([sys.executable, "-m", "kexp.cli.app", *map(str, args)],
                            cwd=REPO, stdout=out, stderr=subprocess.STDOUT)


def wait_for(condition, proc: subprocess.Popen, timeout: float = 120) -> bool:
    """Poll until `condition()`; False if the process ended first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        if proc.poll() is not None:
            return bool(condition())
        time.sleep(0.02)
    raise AssertionError("timed out")


def only_run(runs: Path) -> Path | None:
    found = [p.parent for p in runs.glob("*/*/run.json")]
    return found[0] if len(found) == 1 else None


# --- the state sets ----------------------------------------------------------------------

def _small_model() -> keras.Model:
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dropout(0.5), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    model.fit(x, np.zeros((32, 2)), epochs=1, verbose=0)
    return model


def _callbacks(model, tmp_path) -> list:
    early = keras.callbacks.EarlyStopping(patience=5, restore_best_weights=True)
    plateau = keras.callbacks.ReduceLROnPlateau(patience=3)
    checkpoint = keras.callbacks.ModelCheckpoint(tmp_path / "c.keras", save_best_only=True)
    for callback in (early, plateau, checkpoint):
        callback.set_model(model)
    return [early, plateau, checkpoint]


def _draws(model) -> list:
    """The next value of every generator a training step could use."""
    x = np.ones((3, 4), "float32")
    return [random.random(), float(np.random.rand()),
            keras.ops.convert_to_numpy(keras.random.uniform((2,))),
            tf.random.get_global_generator().normal([2]).numpy(),
            keras.ops.convert_to_numpy(model(x, training=True))]


def test_state_round_trip_restores_weights_optimizer_callbacks_and_random_generators(tmp_path):
    keras.utils.set_random_seed(3)
    # An earlier test in this process may have turned on op determinism, under which TF
    # refuses to create its global generator implicitly.
    tf.random.set_global_generator(tf.random.Generator.from_seed(3))
    model = _small_model()
    early, plateau, checkpoint = callbacks = _callbacks(model, tmp_path)
    early.wait, early.best, early.best_epoch = 2, 0.5, 1
    best_weights = [w * 2 for w in model.get_weights()]
    early.best_weights = best_weights
    plateau.wait, plateau.best, plateau.cooldown_counter = 1, 0.4, 2
    checkpoint.best = 0.3
    _draws(model)  # the Keras and TF global generators exist and have moved
    expected_vars = [keras.ops.convert_to_numpy(v) for v in model.variables]
    expected_opt = [keras.ops.convert_to_numpy(v) for v in model.optimizer.variables]

    path = rs.save_state(tmp_path, epoch=3, model=model, callbacks=callbacks, stopped=False)
    assert path == tmp_path / "state" / "epoch-0003"
    expected_draws = _draws(model)

    # Everything moves on, is reset, or is re-seeded ...
    keras.utils.set_random_seed(99)
    for variable in model.variables + model.optimizer.variables:
        variable.assign(keras.ops.zeros_like(variable))
    for callback in callbacks:
        callback.on_train_begin()
    _draws(model)

    # ... and comes back.
    saved = rs.load_state(tmp_path)
    assert saved.epoch == 3 and not saved.stopped and saved.non_finite() == ""
    rs.restore_state(saved, model, callbacks)
    for got, want in zip(model.variables + model.optimizer.variables,
                         expected_vars + expected_opt, strict=True):
        assert np.array_equal(keras.ops.convert_to_numpy(got), want), got.path
    assert (early.wait, early.best, early.best_epoch) == (2, 0.5, 1)
    assert all(np.array_equal(a, b) for a, b in zip(early.best_weights, best_weights,
                                                    strict=True))
    assert (plateau.wait, plateau.best, plateau.cooldown_counter) == (1, 0.4, 2)
    assert checkpoint.best == 0.3
    for got, want in zip(_draws(model), expected_draws, strict=True):
        assert np.array_equal(got, want)


def test_restore_refuses_a_model_that_does_not_match(tmp_path):
    model = _small_model()
    rs.save_state(tmp_path, epoch=1, model=model, callbacks=[], stopped=False)
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(9), keras.layers.Dropout(0.5),
                              keras.layers.Dense(2)])
    other.compile(optimizer="adam", loss="mse")
    with pytest.raises(rs.ResumeError, match="shape"):
        rs.restore_state(rs.load_state(tmp_path), other, [])


def test_only_the_two_newest_sets_are_kept_and_non_finite_weights_are_never_saved(tmp_path):
    model = _small_model()
    for epoch in (1, 2, 3):
        rs.save_state(tmp_path, epoch=epoch, model=model, callbacks=[], stopped=False)
    assert [p.name for p in rs.state_sets(tmp_path)] == ["epoch-0002", "epoch-0003"]
    model.layers[0].kernel.assign(np.full((4, 8), np.nan, "float32"))
    assert rs.save_state(tmp_path, epoch=4, model=model, callbacks=[], stopped=False) is None
    assert rs.load_state(tmp_path).epoch == 3


@pytest.mark.parametrize("damage", ["truncate npz", "garbage json", "missing npz"])
def test_a_damaged_newest_set_falls_back_to_the_previous_one_with_a_warning(tmp_path, damage):
    model = _small_model()
    for epoch in (1, 2):
        rs.save_state(tmp_path, epoch=epoch, model=model, callbacks=[], stopped=False)
    newest = tmp_path / "state" / "epoch-0002"
    npz = newest / "variables.npz"
    if damage == "truncate npz":
        npz.write_bytes(npz.read_bytes()[: npz.stat().st_size // 2])
    elif damage == "garbage json":
        (newest / "state.json").write_text('{"format": 1, "epo')
    else:
        npz.unlink()
    warnings: list[str] = []
    saved = rs.load_state(tmp_path, warn=warnings.append)
    assert saved.epoch == 1
    assert len(warnings) == 1 and "epoch-0002" in warnings[0]


def test_a_save_killed_midway_leaves_the_previous_set_current(tmp_path, monkeypatch):
    model = _small_model()
    rs.save_state(tmp_path, epoch=1, model=model, callbacks=[], stopped=False)
    # What `kill -9` leaves: a temporary directory with half a file, never renamed.
    partial = tmp_path / "state" / ".tmp-epoch-0002-x1y2"
    partial.mkdir()
    (partial / "variables.npz").write_bytes(b"PK\x03\x04 half")
    assert rs.load_state(tmp_path).epoch == 1
    # An interrupted save (Ctrl-C) cleans up after itself.
    monkeypatch.setattr(rs.os, "rename", _raise(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        rs.save_state(tmp_path, epoch=2, model=model, callbacks=[], stopped=False)
    monkeypatch.undo()
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == [
        partial.name, "epoch-0001"]
    assert rs.load_state(tmp_path).epoch == 1
    rs._discard_after(tmp_path, 1)
    assert [p.name for p in (tmp_path / "state").iterdir()] == ["epoch-0001"]


def _raise(exc):
    def fail(*args, **kwargs):
        raise exc
    return fail


def test_checkpoints_record_their_value_inside_the_file(tmp_path):
    from kexp.training.callbacks import save_model

    model = _small_model()
    save_model(model, tmp_path / "best.keras", {"epoch": 2, "monitor": "val_loss", "value": 0.25})
    assert checkpoint_info(tmp_path / "best.keras") == {
        "epoch": 2, "monitor": "val_loss", "value": 0.25}
    assert keras.saving.load_model(tmp_path / "best.keras").count_params() == model.count_params()


def test_one_save_writes_last_and_best_each_with_its_own_record(tmp_path):
    import zipfile

    from kexp.training.callbacks import save_model

    model = _small_model()
    best = {"epoch": 4, "monitor": "val_loss", "value": 0.5}
    save_model(model, tmp_path / "last.keras", {"epoch": 4},
               copies=[(tmp_path / "best.keras", best)])
    assert checkpoint_info(tmp_path / "last.keras") == {"epoch": 4}
    assert checkpoint_info(tmp_path / "best.keras") == best
    for name in ("last.keras", "best.keras"):
        with zipfile.ZipFile(tmp_path / name) as archive:  # one record, no duplicate entry
            assert [i.filename for i in archive.infolist()].count("kexp.json") == 1
        loaded = keras.saving.load_model(tmp_path / name)
        for a, b in zip(loaded.get_weights(), model.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.keras", "last.keras"]


# --- kexp train --resume: refusals and extension ------------------------------------------

@pytest.fixture(scope="module")
def completed_run(tmp_path_factory):
    """A completed 2-epoch run (shared: tests copy it before changing anything)."""
    from typer.testing import CliRunner

    from kexp.cli.app import app

    base = tmp_path_factory.mktemp("completed")
    config = base / "c.yaml"
    config.write_text(CONFIG)
    result = CliRunner().invoke(app, ["train", str(config), "--runs-dir", str(base / "runs"),
                                      "--set", "train.epochs=2"], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return run_dir_of(result)


@pytest.fixture
def run_copy(completed_run, tmp_path):
    """A copy of the completed run, marked as if it had been interrupted."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(completed_run, run)
    data = info(run)
    data.update(status="interrupted")
    (run / "run.json").write_text(json.dumps(data))
    return run


def test_resume_refuses_a_completed_run(kexp, completed_run):
    result = kexp("train", "--resume", completed_run)
    assert result.exit_code == 2
    assert "completed" in result.stderr and "--set train.epochs=N" in result.stderr
    assert "Traceback" not in result.stderr


def test_resume_refuses_an_edited_config(kexp, run_copy):
    config = run_copy / "config.yaml"
    config.write_text(config.read_text().replace("units: 32", "units: 33"))
    result = kexp("train", "--resume", run_copy)
    assert result.exit_code == 2
    assert "no longer matches" in result.stderr and "kexp train" in result.stderr
    assert info(run_copy)["status"] == "interrupted"


@pytest.mark.parametrize("args, words", [
    (["--set", "train.loop=custom"], "the one change allowed is --set train.epochs=N"),
    (["--name", "x"], "--name cannot be given"),
    (["--smoke"], "--smoke cannot be given"),
])
def test_resume_refuses_other_changes(kexp, run_copy, args, words):
    result = kexp("train", "--resume", run_copy, *args)
    assert result.exit_code == 2
    assert words in result.stderr


def test_resume_refuses_what_is_not_a_run(kexp, tmp_path):
    result = kexp("train", "--resume", tmp_path)
    assert result.exit_code == 2 and "not a run directory" in result.stderr
    result = kexp("train")
    assert result.exit_code == 2 and "--resume RUN_DIR" in result.stderr


def test_resume_refuses_non_finite_saved_weights(kexp, run_copy):
    newest = rs.state_sets(run_copy)[-1]
    with np.load(newest / "variables.npz") as data:
        arrays = dict(data)
    arrays["model.0"] = np.full_like(arrays["model.0"], np.nan)
    np.savez(newest / "variables.npz", **arrays)
    meta = json.loads((newest / "state.json").read_text())
    meta["sha256"]["variables.npz"] = rs._sha256(newest / "variables.npz")
    (newest / "state.json").write_text(json.dumps(meta))
    result = kexp("train", "--resume", run_copy)
    assert result.exit_code == 2
    assert "NaN or Inf" in result.stderr and "epoch-0002" in result.stderr


def test_extending_a_completed_run_equals_training_longer(kexp, completed_run, tmp_path, write):
    import shutil

    run = tmp_path / "extended"
    shutil.copytree(completed_run, run)
    result = kexp("train", "--resume", run, "--set", "train.epochs=4")
    assert result.exit_code == 0, result.stderr
    assert "resuming" in result.stderr and "at epoch 2 of 4" in result.stderr
    data = info(run)
    assert data["status"] == "completed" and data["epochs_completed"] == 4
    assert [r["epoch"] for r in data["resumed"]] == [2]
    assert epochs_in(run / "history.csv") == [0, 1, 2, 3]
    assert "epochs: 4" in (run / "config.yaml").read_text()
    again = kexp("train", "--resume", run)
    assert again.exit_code == 2 and "completed" in again.stderr

    config = write("c.yaml", CONFIG)
    longer = kexp("train", config, "--runs-dir", tmp_path / "runs", "--set", "train.epochs=4")
    assert longer.exit_code == 0, longer.stderr
    assert_same_weights(run / "model.keras", run_dir_of(longer) / "model.keras")


def test_a_run_stopped_early_and_killed_before_finishing_is_finished_without_training(
        kexp, write, tmp_path):
    config = write("c.yaml", CONFIG)
    result = kexp("train", config, "--runs-dir", tmp_path / "runs",
                  "--set", "compile.optimizer.learning_rate=0", "--set",
                  "train.callbacks=[{type: EarlyStopping, patience: 1, restore_best_weights: true}]")
    assert result.exit_code == 0, result.stderr
    run = run_dir_of(result)
    assert epochs_in(run / "history.csv") == [0, 1]
    assert rs.load_state(run).stopped
    # As if killed after the last state save, before the final model was written.
    final = (run / "model.keras").rename(tmp_path / "final.keras")
    (run / "metrics.json").unlink()
    data = info(run)
    data["status"] = "running"
    (run / "run.json").write_text(json.dumps(data))

    result = kexp("train", "--resume", run)
    assert result.exit_code == 0, result.stderr
    assert "at epoch 2 of 6" in result.stderr
    assert epochs_in(run / "history.csv") == [0, 1]
    assert info(run)["status"] == "completed" and info(run)["epochs_completed"] == 2
    assert (run / "metrics.json").exists()
    assert_same_weights(run / "model.keras", final)


# --- NaN, SIGTERM, concurrent runs --------------------------------------------------------

POISON_PLUGIN = """
import numpy as np
import keras
from kexp.registry import CALLBACKS

@CALLBACKS.register("Poison{name}")
class Poison(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 2:
            bias = self.model.layers[{layer}].bias
            bias.assign(np.full(bias.shape, np.nan, "float32"))
"""


# A NaN output bias makes the loss NaN; a NaN hidden bias may not (ReLU(NaN) is 0 on some
# CPUs), but leaves NaN weights: either fails the run.
@pytest.mark.parametrize("name, layer", [("Output", -1), ("Hidden", 0)])
def test_non_finite_values_fail_the_run_and_keep_the_last_finite_state(kexp, write, tmp_path,
                                                                       name, layer):
    plugin = write(f"poison_{name}.py", POISON_PLUGIN.format(name=name, layer=layer))
    config = write("c.yaml", CONFIG)
    result = kexp("train", config, "--runs-dir", tmp_path / "runs", "--plugin", plugin,
                  "--set", f"train.callbacks=[Poison{name}]")
    assert result.exit_code == 1 and "non-finite values" in result.stderr
    run = next((tmp_path / "runs").glob("*/*"))
    assert info(run)["status"] == "failed" and "epoch 2" in info(run)["reason"]
    saved = rs.load_state(run)
    assert saved.epoch == 2 and saved.non_finite() == ""
    assert checkpoint_info(run / "checkpoints" / "last.keras")["epoch"] == 1


SLOW_PLUGIN = """
import time
import keras
from kexp.registry import CALLBACKS

@CALLBACKS.register()
class Slow(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        time.sleep(0.4)
"""


def test_sigterm_keeps_the_state_and_resume_completes_every_epoch_once(kexp, write, tmp_path):
    plugin = write("slow.py", SLOW_PLUGIN)
    config = write("c.yaml", CONFIG)
    runs = tmp_path / "runs"
    # CSVLogger writes its row before Slow sleeps: SIGTERM lands after a row whose state is
    # never saved, the case where Keras's CSVLogger alone would repeat an epoch.
    proc = start_kexp("train", config, "--runs-dir", runs, "--plugin", plugin, "--set",
                      "train.callbacks=[{type: CSVLogger, filename: keras_log.csv}, Slow]",
                      log=tmp_path / "log")
    assert wait_for(lambda: (run := only_run(runs)) is not None
                    and info(run).get("epochs_completed", 0) >= 2, proc)
    run = only_run(runs)

    busy = kexp("train", "--resume", run)
    assert busy.exit_code == 2 and "another process is training it" in busy.stderr

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 130, (tmp_path / "log").read_text()
    assert info(run)["status"] == "interrupted"
    saved = rs.load_state(run)
    assert saved is not None and saved.epoch >= 2

    # The best checkpoint records its value; a restart never replaces it with a worse one.
    best = run / "checkpoints" / "best.keras"
    _set_recorded_value(best, -1.0)
    before = best.read_bytes()

    result = kexp("train", "--resume", run)
    assert result.exit_code == 0, result.stderr
    assert f"at epoch {saved.epoch} of 6" in result.stderr
    assert info(run)["status"] == "completed" and info(run)["epochs_completed"] == 6
    assert epochs_in(run / "history.csv") == list(range(6))
    assert epochs_in(run / "keras_log.csv") == list(range(6))
    assert best.read_bytes() == before


def _set_recorded_value(path: Path, value: float) -> None:
    with zipfile.ZipFile(path) as old:
        entries = {name: old.read(name) for name in old.namelist()}
    recorded = json.loads(entries["kexp.json"])
    recorded["value"] = value
    entries["kexp.json"] = json.dumps(recorded).encode()
    with zipfile.ZipFile(path, "w") as new:
        for name, data in entries.items():
            new.writestr(name, data)


def test_two_trains_started_at_once_get_their_own_directories(write, tmp_path):
    config = write("c.yaml", CONFIG)
    runs = tmp_path / "runs"
    procs = [start_kexp("train", config, "--runs-dir", runs, "--set", "train.epochs=1",
                        "--set", "train.progress=false", log=tmp_path / f"log{i}")
             for i in range(2)]
    assert [p.wait(timeout=180) for p in procs] == [0, 0]
    found = sorted(p.parent for p in runs.glob("resumable/*/run.json"))
    assert len(found) == 2
    assert all(info(run)["status"] == "completed" for run in found)


def test_run_create_gives_every_concurrent_caller_its_own_directory(tmp_path):
    barrier = threading.Barrier(8)
    made: list[Path] = []

    def create():
        barrier.wait()
        made.append(Run.create(tmp_path, "same").path)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(made)) == 8 and all(p.is_dir() for p in made)
