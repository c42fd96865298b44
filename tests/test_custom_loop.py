"""Tests for kexp.training.custom_loop: fit_custom behaves like model.fit."""

from __future__ import annotations

import math
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from kexp.training import custom_loop
from kexp.training.custom_loop import fit_custom

MODES = ["eager", "step", "epoch"]
# 210 rows in batches of 32: the last batch is partial (18 rows).
ROWS, BATCH = 210, 32


def _classification_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(ROWS, 4)).astype("float32")
    y = (x.sum(axis=1) > 0).astype("int32")
    return x, y


def _dataset(x, y, batch: int = BATCH) -> tf.data.Dataset:
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)


def _classifier(learning_rate: float = 0.1, **compile_kwargs) -> keras.Model:
    keras.utils.set_random_seed(1)
    model = keras.Sequential([
        keras.Input((4,)),
        keras.layers.Dense(8, activation="relu"),
        keras.layers.Dense(2, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  **compile_kwargs)
    return model


def _ticket_data() -> tf.data.Dataset:
    rng = np.random.default_rng(0)
    inputs = {"title": rng.normal(size=(ROWS, 5)).astype("float32"),
              "tags": rng.normal(size=(ROWS, 3)).astype("float32")}
    targets = {"priority": rng.random((ROWS, 1)).astype("float32"),
               "department": keras.utils.to_categorical(rng.integers(0, 4, ROWS), 4)}
    return tf.data.Dataset.from_tensor_slices((inputs, targets)).batch(BATCH)


def _ticket_model(run_eagerly: bool = False) -> keras.Model:
    """The chapter's two-output ticket model, shrunk, with a kernel regularizer."""
    keras.utils.set_random_seed(1)
    title = keras.Input((5,), name="title")
    tags = keras.Input((3,), name="tags")
    features = keras.layers.Dense(
        16, activation="relu", kernel_regularizer=keras.regularizers.l2(1e-2)
    )(keras.layers.Concatenate()([title, tags]))
    priority = keras.layers.Dense(1, activation="sigmoid", name="priority")(features)
    department = keras.layers.Dense(4, activation="softmax", name="department")(features)
    model = keras.Model({"title": title, "tags": tags},
                        {"priority": priority, "department": department})
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss={"priority": "mean_squared_error", "department": "categorical_crossentropy"},
        loss_weights={"priority": 1.0, "department": 0.5},
        metrics={"priority": ["mean_absolute_error"], "department": ["accuracy"]},
        run_eagerly=run_eagerly,
    )
    return model


def _assert_same_history(custom: dict, reference: dict) -> None:
    assert sorted(custom) == sorted(reference)
    for key in reference:
        # Bit-identical: same ops on the same data in the same order. If a future TF
        # fuses the two loops' graphs differently, loosen to rtol=1e-6.
        np.testing.assert_array_equal(custom[key], reference[key], err_msg=key)


@pytest.mark.parametrize("mode", MODES)
def test_single_output_history_equals_fit(mode):
    x, y = _classification_data()
    model = _classifier()
    reference = model.fit(_dataset(x, y), epochs=2, validation_data=_dataset(x, y),
                          verbose=0).history
    model = _classifier()
    history = fit_custom(model, _dataset(x, y), epochs=2, validation_data=_dataset(x, y),
                         compile_mode=mode)
    assert sorted(history.history) == ["accuracy", "loss", "val_accuracy", "val_loss"]
    _assert_same_history(history.history, reference)


@pytest.mark.parametrize("mode", MODES)
def test_two_outputs_with_loss_weights_and_regularizer_equal_fit(mode):
    # Keras names each output's loss and metrics after the output. Its per-output
    # `<name>_loss` trackers weight batches by the static batch size, which is None in a
    # compiled function: compiled and eager fit disagree on them when the last batch is
    # partial. So eager mode is held to fit(run_eagerly=True), the compiled modes to fit.
    model = _ticket_model(run_eagerly=mode == "eager")
    reference = model.fit(_ticket_data(), epochs=2, validation_data=_ticket_data(),
                          verbose=0).history
    model = _ticket_model()
    history = fit_custom(model, _ticket_data(), epochs=2, validation_data=_ticket_data(),
                         compile_mode=mode)
    assert {"loss", "priority_loss", "department_loss", "priority_mean_absolute_error",
            "department_accuracy", "val_loss", "val_department_accuracy"} <= set(history.history)
    _assert_same_history(history.history, reference)


def test_learning_rate_callbacks_log_learning_rate_as_fit_does():
    x, y = _classification_data()

    def callbacks():
        return [keras.callbacks.LearningRateScheduler(lambda epoch, lr: 0.1 / (epoch + 1)),
                keras.callbacks.ReduceLROnPlateau(monitor="loss", patience=1)]

    model = _classifier()
    reference = model.fit(_dataset(x, y), epochs=3, callbacks=callbacks(), verbose=0).history
    model = _classifier()
    history = fit_custom(model, _dataset(x, y), epochs=3, callbacks=callbacks()).history
    assert history["learning_rate"] == pytest.approx([0.1, 0.05, 0.1 / 3])
    _assert_same_history(history, reference)


def test_fit_itself_adds_no_learning_rate_so_neither_do_we():
    x, y = _classification_data()
    model = _classifier()
    assert "learning_rate" not in model.fit(_dataset(x, y), epochs=1, verbose=0).history
    model = _classifier()
    assert "learning_rate" not in fit_custom(model, _dataset(x, y), epochs=1).history


@pytest.mark.parametrize("loop", ["fit", "custom"])
def test_early_stopping_with_frozen_weights_stops_after_three_epochs(loop):
    x, y = _classification_data()
    model = _classifier(learning_rate=0.0)
    stop = keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=2)
    if loop == "fit":
        history = model.fit(_dataset(x, y), epochs=10, validation_data=_dataset(x, y),
                            callbacks=[stop], verbose=0)
    else:
        history = fit_custom(model, _dataset(x, y), epochs=10,
                             validation_data=_dataset(x, y), callbacks=[stop])
    assert len(history.history["val_accuracy"]) == 3


def test_model_checkpoint_saves_best_model(tmp_path):
    x, y = _classification_data()
    path = tmp_path / "best.keras"
    checkpoint = keras.callbacks.ModelCheckpoint(str(path), monitor="val_loss",
                                                 save_best_only=True)
    fit_custom(_classifier(), _dataset(x, y), epochs=2, validation_data=_dataset(x, y),
               callbacks=[checkpoint])
    restored = keras.models.load_model(path)
    assert restored.count_params() == 58


@pytest.mark.parametrize("mode", ["step", "epoch"])
def test_train_and_test_functions_trace_once_per_run(mode, monkeypatch):
    traces = {"train": 0, "test": 0}

    def counting(kind, step):
        def counted(model, data):
            traces[kind] += 1  # Python runs this body only while tracing.
            return step(model, data)
        return counted

    monkeypatch.setattr(custom_loop, "_train_step", counting("train", custom_loop._train_step))
    monkeypatch.setattr(custom_loop, "_test_step", counting("test", custom_loop._test_step))
    x, y = _classification_data()
    history = fit_custom(_classifier(), _dataset(x, y), epochs=3,
                         validation_data=_dataset(x, y, batch=50), compile_mode=mode)
    assert len(history.history["loss"]) == 3
    assert traces == {"train": 1, "test": 1}


class _BatchRecorder(keras.callbacks.Callback):
    """A plugin-style callback, like the chapter's per-batch loss plotter."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple] = []

    def on_train_batch_begin(self, batch, logs=None):
        self.calls.append(("train_begin", batch))

    def on_train_batch_end(self, batch, logs=None):
        self.calls.append(("train_end", batch, logs["loss"]))

    def on_test_batch_end(self, batch, logs=None):
        self.calls.append(("test_end", batch))

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(("epoch_end", epoch))


@pytest.mark.parametrize("mode", MODES)
def test_batch_hooks_see_every_batch_in_the_same_order_as_fit(mode):
    x, y = _classification_data()
    reference = _BatchRecorder()
    _classifier().fit(_dataset(x, y), epochs=2, validation_data=_dataset(x, y, batch=100),
                      callbacks=[reference], verbose=0)
    recorder = _BatchRecorder()
    fit_custom(_classifier(), _dataset(x, y), epochs=2,
               validation_data=_dataset(x, y, batch=100), callbacks=[recorder],
               compile_mode=mode)
    assert len([c for c in recorder.calls if c[0] == "train_end"]) == 2 * math.ceil(ROWS / BATCH)
    assert recorder.calls == reference.calls


def test_lambda_callback_batch_hooks_count_as_per_batch():
    x, y = _classification_data()
    losses = []
    log_loss = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: losses.append(logs["loss"]))
    fit_custom(_classifier(), _dataset(x, y), epochs=1, callbacks=[log_loss])
    assert len(losses) == math.ceil(ROWS / BATCH)


def test_keras_callbacks_alone_keep_the_whole_epoch_in_one_call(tmp_path):
    from kexp.training.callbacks import needs_every_batch

    class EpochOnly(keras.callbacks.EarlyStopping):  # no batch hook of its own
        pass

    built_in = [keras.callbacks.History(), keras.callbacks.ProgbarLogger(),
                keras.callbacks.TerminateOnNaN(), keras.callbacks.TensorBoard(str(tmp_path)),
                keras.callbacks.ModelCheckpoint(str(tmp_path / "m.keras")), EpochOnly()]
    assert not needs_every_batch(built_in)
    assert needs_every_batch([*built_in, _BatchRecorder()])


def test_keras_callbacks_get_one_batch_call_per_epoch_in_epoch_mode(monkeypatch):
    # Keras's steps_per_execution contract: begin with the chunk's first batch index, end
    # with its last one and the running logs.
    calls = []
    monkeypatch.setattr(keras.callbacks.History, "on_train_batch_begin",
                        lambda self, batch, logs=None: calls.append(("begin", batch)),
                        raising=False)
    monkeypatch.setattr(keras.callbacks.History, "on_train_batch_end",
                        lambda self, batch, logs=None: calls.append(("end", batch, logs["loss"])),
                        raising=False)
    x, y = _classification_data()
    history = fit_custom(_classifier(), _dataset(x, y), epochs=2).history
    last = math.ceil(ROWS / BATCH) - 1
    assert calls == [("begin", 0), ("end", last, pytest.approx(history["loss"][0])),
                     ("begin", 0), ("end", last, pytest.approx(history["loss"][1]))]


def test_model_without_input_is_built_from_the_element_spec():
    x, y = _classification_data()

    def model():
        keras.utils.set_random_seed(1)
        unbuilt = keras.Sequential([keras.layers.Dense(8, activation="relu"),
                                    keras.layers.Dense(2, activation="softmax")])
        unbuilt.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        return unbuilt

    reference = model().fit(_dataset(x, y), epochs=1, verbose=0).history
    _assert_same_history(fit_custom(model(), _dataset(x, y), epochs=1).history, reference)


@pytest.mark.parametrize("loop", ["fit", "custom"])
def test_terminate_on_nan_stops_training(loop):
    x, y = _classification_data()
    x[40] = np.nan  # poisons the second batch of the first epoch
    keras.utils.set_random_seed(1)
    # No ReLU: it would turn the NaN into 0.
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    stop = [keras.callbacks.TerminateOnNaN()]
    if loop == "fit":
        history = model.fit(_dataset(x, y), epochs=3, callbacks=stop, verbose=0).history
    else:
        history = fit_custom(model, _dataset(x, y), epochs=3, callbacks=stop).history
    assert len(history["loss"]) == 1
    assert math.isnan(history["loss"][0])


@pytest.mark.parametrize("mode", MODES)
def test_steps_per_epoch_reads_one_iterator_across_epochs(mode):
    # 3 epochs x 2 steps = exactly the 6 batches of a 192-row dataset: every epoch trains on
    # new batches, and none is read ahead (that would run out and warn).
    x, y = _classification_data()
    train = _dataset(x[:192], y[:192])
    reference = _classifier().fit(train, epochs=3, steps_per_epoch=2,
                                  validation_data=_dataset(x, y), validation_steps=2,
                                  verbose=0).history
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        history = fit_custom(_classifier(), train, epochs=3, steps_per_epoch=2,
                             validation_data=_dataset(x, y), validation_steps=2,
                             compile_mode=mode).history
    _assert_same_history(history, reference)


def test_running_out_of_data_warns_and_stops():
    x, y = _classification_data()
    with pytest.warns(UserWarning, match="ran out in epoch 1 after 1 of 2 steps"):
        history = fit_custom(_classifier(), _dataset(x[:96], y[:96]), epochs=3,
                             steps_per_epoch=2)
    assert len(history.history["loss"]) == 2


@pytest.mark.parametrize("mode", ["step", "epoch"])
def test_jit_compile_is_honoured(mode):
    x, y = _classification_data()
    reference = _classifier(jit_compile=True).fit(_dataset(x, y), epochs=1, verbose=0).history
    model = _classifier(jit_compile=True)
    assert model.jit_compile
    loop = custom_loop._Loop(model, custom_loop._train_step, _dataset(x, y), mode,
                             every_batch=False)
    assert loop.one_step._jit_compile  # in epoch mode: the step inside the epoch function
    history = fit_custom(model, _dataset(x, y), epochs=1, compile_mode=mode).history
    np.testing.assert_allclose(history["loss"], reference["loss"], rtol=1e-6)


def test_progress_bar_and_initial_epoch(capsys):
    x, y = _classification_data()
    history = fit_custom(_classifier(), _dataset(x, y), epochs=3, initial_epoch=1, verbose=2)
    assert history.epoch == [1, 2]
    assert "Epoch 3/3" in capsys.readouterr().out


def test_unknown_compile_mode_is_rejected():
    x, y = _classification_data()
    with pytest.raises(ValueError, match="compile_mode='graph'"):
        fit_custom(_classifier(), _dataset(x, y), epochs=1, compile_mode="graph")
