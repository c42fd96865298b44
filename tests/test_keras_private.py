"""Every private Keras / TensorFlow API kexp uses (kexp.training._keras_private), checked
against the installed versions: a Keras or TensorFlow upgrade that moves or changes one fails
here, by name, rather than inside a training run."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from kexp.training import _keras_private as private  # noqa: E402


def _model() -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def _data():
    x = np.arange(24, dtype="float32").reshape(8, 3) / 24
    return x, (np.arange(8) % 2).astype("int32")


def test_loss_tracker_is_the_mean_behind_fits_loss_log():
    model = _model()
    tracker = private.loss_tracker(model)
    assert isinstance(tracker, keras.metrics.Mean) and tracker.name == "loss"
    x, y = _data()
    logs = model.fit(x, y, batch_size=8, epochs=1, verbose=0).history
    assert float(tracker.result()) == pytest.approx(logs["loss"][0])
    assert tracker in model.metrics


def test_initial_epoch_is_what_backup_and_restore_sets(tmp_path):
    model = _model()
    assert private.initial_epoch(model) is None
    x, y = _data()
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"), delete_checkpoint=False)
    model.fit(x, y, epochs=2, verbose=0, callbacks=[backup])
    again = _model()
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"), delete_checkpoint=False)
    backup.set_model(again)
    backup.on_train_begin()
    assert private.initial_epoch(again) == 2


def test_symbolic_build_creates_metric_and_optimizer_variables_without_a_step():
    model = _model()
    x, y = _data()
    spec = tf.data.Dataset.from_tensor_slices((x, y)).batch(4).element_spec
    before = [w.copy() for w in model.get_weights()]
    assert not model.optimizer.built
    private.symbolic_build(model, spec)
    assert model.optimizer.built and model.optimizer.variables
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))
    assert int(model.optimizer.iterations) == 0
    strategy = tf.distribute.get_strategy()
    private.symbolic_build(_model(), spec, strategy)  # under a strategy's scope as well


def test_the_keras_global_generator_is_saved_and_restored():
    private.reset_keras_global_generator(None)
    assert private.keras_global_generator() is None
    keras.random.uniform((2,))  # creates it
    generator = private.keras_global_generator()
    assert isinstance(generator, keras.random.SeedGenerator)
    state = np.asarray(keras.ops.convert_to_numpy(generator.state))
    first = keras.ops.convert_to_numpy(keras.random.uniform((3,)))
    private.reset_keras_global_generator(state)
    again = keras.ops.convert_to_numpy(keras.random.uniform((3,)))
    np.testing.assert_array_equal(first, again)


def test_tf_global_generator_is_none_until_created_and_then_the_public_one():
    generator = tf.random.get_global_generator()
    assert private.tf_global_generator() is generator


def test_callback_counters_exist_on_keras_callbacks(tmp_path):
    board = keras.callbacks.TensorBoard(str(tmp_path / "logs"))
    checkpoint = keras.callbacks.ModelCheckpoint(str(tmp_path / "m.keras"), save_freq=2)
    found = {name for name in private.CALLBACK_COUNTERS
             for callback in (board, checkpoint) if isinstance(getattr(callback, name, None), int)}
    assert found == set(private.CALLBACK_COUNTERS)


def test_tensorboard_internals(tmp_path):
    board = keras.callbacks.TensorBoard(str(tmp_path / "logs"), write_graph=True)
    board.set_model(_model())
    assert private.tensorboard_epoch_only(board)
    writers = private.tensorboard_writers(board, created_only=False)
    assert len(writers) == 1  # no validation directory yet
    assert private.tensorboard_writers(board) == writers
    private.write_pending_train_graph(board)
    assert not board._should_write_train_graph
    assert not private.tensorboard_epoch_only(
        keras.callbacks.TensorBoard(str(tmp_path / "b"), update_freq="batch"))


def test_import_restart_event_writes_a_session_start_at_the_step(tmp_path):
    writer = tf.summary.create_file_writer(str(tmp_path))
    private.import_restart_event(writer, 3, 1.0)
    writer.close()
    from tensorflow.core.util import event_pb2

    events = []
    for path in tmp_path.glob("events.out.tfevents.*"):
        for raw in tf.data.TFRecordDataset(str(path)):
            events.append(event_pb2.Event.FromString(raw.numpy()))
    starts = [e for e in events if e.HasField("session_log")]
    assert [(e.step, e.session_log.status) for e in starts] == [
        (3, event_pb2.SessionLog.START)] * 2


def test_compiled_loss_and_metrics_are_what_compile_makes():
    model = _model()
    x, y = _data()
    w = np.linspace(0.5, 2.0, 8).astype("float32")
    ref = model.evaluate(x, y, sample_weight=w, batch_size=8, verbose=0, return_dict=True)
    pred = model(x, training=False)
    loss = private.compiled_loss("sparse_categorical_crossentropy", ["dense"])
    assert float(loss(tf.constant(y), pred, tf.constant(w))) == pytest.approx(ref["loss"])
    metrics = private.compiled_metrics(None, ["accuracy"], ["dense"])
    metrics.update_state(tf.constant(y), pred, tf.constant(w))
    assert float(metrics.result()["accuracy"]) == pytest.approx(
        float(np.sum(w * (np.argmax(pred, -1) == y)) / np.sum(w)))


def test_names_kept_puts_keras_name_counters_back():
    first = keras.metrics.AUC().name
    with private.names_kept():
        assert keras.metrics.AUC().name != first
    after = keras.metrics.AUC().name
    third = keras.metrics.AUC().name
    assert after != third and after.rsplit("_", 1)[0] == "auc"
    with private.names_kept():
        keras.metrics.AUC()
        keras.metrics.AUC()
    assert keras.metrics.AUC().name == f"auc_{int(third.rsplit('_', 1)[1]) + 1}"
