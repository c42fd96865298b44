"""kexp.training.callbacks: the run's own callbacks (history, checkpoints, guard, record,
progress) and the user's, driven directly on a tiny model."""

from __future__ import annotations

import io
import json
import zipfile

import keras
import numpy as np
import pytest

from kexp.config.schema import Component
from kexp.runs import Run, RunRecord
from kexp.training import callbacks as cb


def _model() -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    return model


def _run(tmp_path) -> Run:
    path = tmp_path / "run"
    path.mkdir()
    run = Run(path)
    run.write_record(RunRecord(name="t", epochs_completed=0))
    return run


def test_history_csv_has_a_row_per_epoch_with_the_learning_rate_and_drops_redone_epochs(
        tmp_path):
    model = _model()
    path = tmp_path / "history.csv"
    history = cb.HistoryCSV(path)
    history.set_model(model)
    history.on_train_begin()
    for epoch, loss in enumerate([0.5, 0.25, 0.125]):
        history.on_epoch_end(epoch, {"loss": loss, "val_loss": loss * 2})
    rows = cb.read_history(path)
    assert [(r["epoch"], r["loss"], r["val_loss"]) for r in rows] == [
        (0, 0.5, 1.0), (1, 0.25, 0.5), (2, 0.125, 0.25)]
    assert rows[0]["learning_rate"] == pytest.approx(0.05)
    assert path.read_text().splitlines()[0] == "epoch,loss,val_loss,learning_rate"

    resumed = cb.HistoryCSV(path, rows, initial_epoch=1)  # epochs 1 and 2 are redone
    resumed.set_model(model)
    resumed.on_train_begin()
    resumed.on_epoch_end(1, {"loss": 9.0, "val_loss": 9.0})
    assert [(r["epoch"], r["loss"]) for r in cb.read_history(path)] == [(0, 0.5), (1, 9.0)]


def test_read_history_of_a_missing_file_is_empty(tmp_path):
    assert cb.read_history(tmp_path / "none.csv") == []


@pytest.mark.parametrize(("monitor", "values", "best_epoch"), [
    ("val_loss", [3.0, 1.0, 2.0], 1),
    ("val_accuracy", [0.5, 0.9, 0.7], 1),
    ("val_loss", [float("nan"), 2.0, 1.5], 2),
])
def test_checkpoints_keep_last_and_best_with_their_epoch_and_value(tmp_path, monitor, values,
                                                                   best_epoch):
    run = _run(tmp_path)
    model = _model()
    checkpoints = cb.RunCheckpoints(run, monitor)
    checkpoints.set_model(model)
    for epoch, value in enumerate(values):
        checkpoints.on_epoch_end(epoch, {"loss": 1.0, monitor: value})
    assert cb.checkpoint_info(run.file("checkpoints/last.keras")) == {"epoch": 2}
    assert cb.checkpoint_info(run.file("checkpoints/best.keras")) == {
        "epoch": best_epoch, "monitor": monitor, "value": values[best_epoch]}
    loaded = keras.saving.load_model(run.file("checkpoints/best.keras"))
    assert [w.shape for w in loaded.get_weights()] == [(3, 1), (1,)]


def test_a_resumed_checkpoint_never_replaces_a_better_best(tmp_path):
    run = _run(tmp_path)
    checkpoints = cb.RunCheckpoints(run, "val_loss", best=0.1)
    checkpoints.set_model(_model())
    checkpoints.on_epoch_end(3, {"loss": 1.0, "val_loss": 0.2})
    assert not run.file("checkpoints/best.keras").exists()
    assert run.file("checkpoints/last.keras").exists()


def test_no_checkpoint_from_a_non_finite_loss(tmp_path):
    run = _run(tmp_path)
    checkpoints = cb.RunCheckpoints(run, "loss")
    checkpoints.set_model(_model())
    checkpoints.on_epoch_end(0, {"loss": float("inf")})
    assert not run.file("checkpoints").exists()


def test_save_model_copies_share_the_archive_but_not_the_info(tmp_path):
    model = _model()
    cb.save_model(model, tmp_path / "a.keras", {"n": 1}, copies=[(tmp_path / "b.keras", {"n": 2})])
    assert cb.checkpoint_info(tmp_path / "a.keras") == {"n": 1}
    assert cb.checkpoint_info(tmp_path / "b.keras") == {"n": 2}
    with zipfile.ZipFile(tmp_path / "a.keras") as a, zipfile.ZipFile(tmp_path / "b.keras") as b:
        assert a.read("model.weights.h5") == b.read("model.weights.h5")
    assert cb.checkpoint_info(tmp_path / "missing.keras") is None
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_the_guard_stops_at_a_nan_loss_or_a_nan_weight():
    model = _model()
    guard = cb.NonFiniteGuard()
    guard.set_model(model)
    guard.on_epoch_begin(0)
    guard.on_train_batch_end(4, {"loss": 1.0})
    assert guard.reason is None and not model.stop_training
    guard.on_train_batch_end(5, {"loss": float("nan")})
    assert guard.reason == "loss became nan at batch 5 of epoch 0" and model.stop_training

    model = _model()
    guard = cb.NonFiniteGuard()
    guard.set_model(model)
    model.layers[0].kernel.assign(np.full((3, 1), np.inf, "float32"))
    guard.on_epoch_begin(1)
    guard.on_epoch_end(1, {"loss": 1.0})
    assert "became NaN or Inf in epoch 1" in guard.reason and model.stop_training


def test_the_recorder_keeps_run_json_current(tmp_path):
    run = _run(tmp_path)
    recorder = cb.RunRecorder(run)
    recorder.on_epoch_end(4, {"loss": np.float32(0.5)})
    record = run.record()
    assert record.epochs_completed == 5 and record.last_metrics == {"loss": 0.5}
    assert json.loads(run.file("run.json").read_text())["name"] == "t"


def test_progress_prints_one_line_per_epoch_off_a_terminal():
    out = io.StringIO()
    progress = cb.Progress(epochs=3, steps=10, stream=out)
    progress.on_epoch_begin(0)
    progress.on_train_batch_end(9, {"loss": 0.5})
    progress.on_epoch_end(0, {"loss": 0.5, "val_accuracy": 0.875})
    progress.on_train_end()
    [line] = out.getvalue().splitlines()
    assert line.startswith("epoch 1/3  loss 0.5  val_accuracy 0.875  (")


def test_which_callbacks_need_every_batch():
    class Plotter(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            pass

    class OnlyEpochs(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            pass

    keras_own = [keras.callbacks.EarlyStopping(), keras.callbacks.TerminateOnNaN(),
                 keras.callbacks.ModelCheckpoint("x.keras", save_freq=5)]
    assert not cb.needs_every_batch(keras_own + [OnlyEpochs(), cb.NonFiniteGuard()])
    assert cb.needs_every_batch([Plotter()])
    assert cb.needs_every_batch([keras.callbacks.LambdaCallback(on_batch_end=print)])
    assert not cb.needs_every_batch([Plotter()], cb.TEST_BATCH_HOOKS)
    assert cb.needs_every_batch([keras.callbacks.LambdaCallback(on_test_batch_end=print)],
                                cb.TEST_BATCH_HOOKS)


def test_resolve_monitor_falls_back_to_the_training_metric():
    assert cb.resolve_monitor("val_loss", has_validation=True) == "val_loss"
    assert cb.resolve_monitor("val_accuracy", has_validation=False) == "accuracy"
    assert cb.resolve_monitor("loss", has_validation=False) == "loss"


def test_user_callbacks_write_relative_paths_inside_the_run(tmp_path):
    specs = [Component.model_validate({"type": "ModelCheckpoint", "filepath": "ckpt/m.keras"}),
             Component.model_validate({"type": "CSVLogger",
                                       "filename": str(tmp_path / "abs.csv")})]
    checkpoint, logger = cb.build_user_callbacks(specs, tmp_path / "run")
    assert isinstance(checkpoint, keras.callbacks.ModelCheckpoint)
    assert checkpoint.filepath == str(tmp_path / "run" / "ckpt" / "m.keras")
    assert (tmp_path / "run" / "ckpt").is_dir()
    assert logger.filename == str(tmp_path / "abs.csv")
