"""The custom loop's ``epoch`` mode on in-memory data: each batch is gathered inside the
compiled epoch function (``kexp.data.pipeline.InMemoryEpochs``) instead of pulled from a
``tf.data`` iterator. Same batches, same order, same results as the iterator path and as
``model.fit``; anything else falls back to the iterator."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from kexp.data.pipeline import OrdersAhead, in_memory_epochs, train_dataset
from kexp.data.splits import Split
from kexp.training import custom_loop
from kexp.training.custom_loop import fit_custom
from kexp.training.weights import with_class_weights


def _numbered(n: int) -> Split:
    """Row i holds i in every column, so a batch shows which rows it gathered."""
    x = np.repeat(np.arange(n, dtype="float32")[:, None], 3, axis=1)
    return Split(x, np.arange(n, dtype="int64"), "numbered")


class _NoMetrics:
    def get_metrics_result(self) -> dict:
        return {}


def _gathered_batches(split: Split, epoch: int, chunk: int, **kwargs) -> list[list[int]]:
    """The label batches the in-graph loop runs for ``epoch``, ``chunk`` batches per call."""
    dataset, _ = train_dataset(split, epochs=epoch + 1, **kwargs)
    memory = in_memory_epochs(dataset)
    assert memory is not None
    seen: list[list[int]] = []

    def record(data):
        def append(y):
            seen.append([int(v) for v in y.numpy()])
            return 0
        tf.py_function(append, [data[1]], tf.int32)

    run_steps = custom_loop._make_run_indexed(memory, _NoMetrics(), record)
    source = custom_loop._EpochOrder(memory.order(tf.constant(epoch, tf.int64)))
    while source.position < memory.steps:
        ran, _ = run_steps(source, tf.constant(chunk))
        assert 0 < int(ran) <= chunk
    return seen


@pytest.mark.parametrize("kwargs", [
    {"batch_size": 4, "seed": 3},  # 10 rows: the last batch partial
    {"batch_size": 3, "seed": 2, "steps_per_epoch": 5},  # 15 slots: a second pass
    {"batch_size": 4, "seed": 0, "shuffle": False},
])
def test_in_graph_batches_are_the_pipelines_for_every_epoch(kwargs):
    split = _numbered(10)
    full, _ = train_dataset(split, epochs=3, **kwargs)
    expected = [[int(v) for v in y.numpy()] for _, y in full]
    steps = len(expected) // 3
    # Whole epochs; then per batch and in chunks that do not divide the epoch.
    for epoch, chunk in ((0, 2**31 - 1), (2, 2**31 - 1), (1, 1), (1, 2)):
        assert (_gathered_batches(split, epoch, chunk, **kwargs)
                == expected[epoch * steps:(epoch + 1) * steps])


def _model() -> keras.Model:
    keras.utils.set_random_seed(4)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dropout(0.3),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"], weighted_metrics=["accuracy"])
    return model


def _weighted_split() -> Split:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(45, 3)).astype("float32")
    y = rng.integers(0, 10, 45)
    return Split(x, y, "weighted", w=rng.uniform(0.5, 2.0, 45).astype("float32"))


def _train(dataset, steps, loop: str, **kwargs) -> tuple[dict, list]:
    model = _model()
    if loop == "fit":
        history = model.fit(dataset, epochs=2, steps_per_epoch=steps, verbose=0, **kwargs)
    else:
        history = fit_custom(model, dataset, epochs=2, steps_per_epoch=steps, **kwargs)
    return history.history, model.get_weights()


def _assert_identical(a: tuple[dict, list], b: tuple[dict, list]) -> None:
    assert a[0] == b[0]  # bit-identical: same ops on the same batches in the same order
    for left, right in zip(a[1], b[1], strict=True):
        np.testing.assert_array_equal(left, right)


def test_in_graph_epochs_train_exactly_as_the_iterator_path_and_fit(monkeypatch):
    split = _weighted_split()  # 45 rows, batch 8: the last batch partial; sample weights
    dataset, steps = train_dataset(split, batch_size=8, seed=5, epochs=2)
    iterator_only, _ = train_dataset(split, batch_size=8, seed=5, epochs=2)
    iterator_only._kexp_in_memory = None
    made = []
    monkeypatch.setattr(custom_loop, "_make_run_indexed",
                        lambda *a: made.append(1) or _real_make_run_indexed(*a))
    in_graph = _train(dataset, steps, "custom")
    assert made == [1]  # the in-graph path ran
    _assert_identical(in_graph, _train(iterator_only, steps, "custom"))
    assert made == [1]  # ... and the other did not
    _assert_identical(in_graph, _train(dataset, steps, "fit"))


_real_make_run_indexed = custom_loop._make_run_indexed


def test_a_per_batch_callback_sees_every_batch_of_an_in_graph_epoch():
    split = _weighted_split()
    dataset, steps = train_dataset(split, batch_size=8, seed=5, epochs=2)
    batches: list[tuple[int, float]] = []
    plotter = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: batches.append((batch, float(logs["loss"]))))
    per_batch = _train(dataset, steps, "custom", callbacks=[plotter])
    assert [b for b, _ in batches] == list(range(steps)) * 2
    assert all(np.isfinite(loss) for _, loss in batches)
    _assert_identical(per_batch, _train(dataset, steps, "custom"))


def test_datasets_the_loop_cannot_gather_itself_fall_back_to_the_iterator():
    split = _weighted_split()
    dataset, _ = train_dataset(Split(split.x, split.y, "s"), batch_size=8, seed=5, epochs=1)
    assert in_memory_epochs(dataset) is not None
    # Class weights map the batches: the loop must read them from the dataset.
    assert in_memory_epochs(with_class_weights(dataset, {0: 2.0}, 10)) is None
    assert in_memory_epochs(tf.data.Dataset.range(3)) is None
    for mode in ("eager", "step"):
        assert custom_loop._in_memory(dataset, mode, None, 0) is None
    assert custom_loop._in_memory(dataset, "epoch", None, 3) is None  # mid-epoch restart
    # Epochs of another length than the dataset's: one iterator runs through them all.
    assert custom_loop._in_memory(dataset, "epoch", None, 0, steps_per_epoch=2) is None
    assert custom_loop._in_memory(dataset, "epoch", None, 0) is in_memory_epochs(dataset)
    assert (custom_loop._in_memory(dataset, "epoch", None, 0, steps_per_epoch=6)
            is in_memory_epochs(dataset))  # 45 rows in batches of 8


def test_orders_computed_ahead_are_each_epochs_own_order():
    dataset, _ = train_dataset(_numbered(50), batch_size=8, seed=6, epochs=1)
    memory = in_memory_epochs(dataset)
    computed: list[int] = []

    def order(epoch):
        computed.append(int(epoch))
        return memory.order(epoch)

    ahead = OrdersAhead(order)
    for epoch in (2, 3, 4, 7, 8):  # in turn, then a jump (a callback's restart), in turn
        np.testing.assert_array_equal(ahead.get(epoch, ahead=epoch != 8),
                                      memory.order(tf.constant(epoch, tf.int64)))
    # 5 was computed ahead (on its thread, maybe after 7) and not used; none after 8
    assert sorted(computed) == [2, 3, 4, 5, 7, 8]


def test_kexp_train_with_the_custom_loop_gathers_in_memory_epochs_in_the_graph(
        tmp_path, monkeypatch):
    """`kexp train` (in-process) takes the in-graph path for an npz split, and its
    history equals `train.loop: fit`'s bit for bit (Dropout, shuffling, a partial batch)."""
    from typer.testing import CliRunner

    from kexp.cli.app import app
    from tests.conftest import read_history, run_dir_of

    rng = np.random.default_rng(1)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(90, 3)).astype("float32"),
             y=rng.integers(0, 10, 90))
    (tmp_path / "c.yaml").write_text(f"""
name: gathered
seed: 3
data: {{type: npz, path: {tmp_path / 'd.npz'}, features: x, targets: y, batch_size: 16}}
model:
  type: sequential
  input_shape: [3]
  layers: [{{type: Dense, units: 8, activation: relu}}, {{type: Dropout, rate: 0.3}},
           {{type: Dense, units: 10, activation: softmax}}]
compile: {{optimizer: rmsprop, loss: sparse_categorical_crossentropy, metrics: [accuracy]}}
train: {{epochs: 2, tensorboard: false}}
""")
    made = []
    monkeypatch.setattr(custom_loop, "_make_run_indexed",
                        lambda *a: made.append(1) or _real_make_run_indexed(*a))
    histories = []
    for loop in ("custom", "fit"):
        result = CliRunner().invoke(app, ["train", str(tmp_path / "c.yaml"), "--runs-dir",
                                          str(tmp_path / loop), "--set", f"train.loop={loop}"],
                                    catch_exceptions=False)
        assert result.exit_code == 0, result.stderr
        histories.append(read_history(run_dir_of(result)))
    assert made == [1]
    assert histories[0] == histories[1] and len(histories[0]) == 2
