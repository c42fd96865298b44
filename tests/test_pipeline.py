"""Tests for kexp.data.pipeline: seeded per-epoch permutations, resumable datasets, eval
datasets, and Keras ``fit`` reading epoch e's batches from one dataset."""

from __future__ import annotations

import numpy as np
import pytest

from kexp.data.pipeline import epoch_permutation, eval_dataset, train_dataset
from kexp.data.splits import Split
from kexp.errors import DataError


def numbered(n: int = 10) -> Split:
    """x row i is [i, -i]; y[i] = i: a batch's y is the sample indices it holds."""
    x = np.stack([np.arange(n), -np.arange(n)], axis=1).astype(np.float32)
    return Split(x, np.arange(n), "numbered")


def batches_of(dataset) -> list[list[int]]:
    return [y.numpy().tolist() for _, y in dataset]


def test_permutation_depends_only_on_seed_and_epoch():
    same = [epoch_permutation(100, 7, 3).numpy() for _ in range(2)]
    assert np.array_equal(*same) and sorted(same[0]) == list(range(100))
    assert not np.array_equal(same[0], epoch_permutation(100, 7, 4).numpy())
    assert not np.array_equal(same[0], epoch_permutation(100, 8, 3).numpy())
    assert not np.array_equal(same[0], epoch_permutation(100, 7, 3, repeat=1).numpy())


def test_epochs_are_their_permutations_in_batches_the_last_partial():
    dataset, steps = train_dataset(numbered(10), batch_size=4, seed=1, epochs=2)
    assert steps == 3 and int(dataset.cardinality()) == 6
    batches = batches_of(dataset)
    assert [len(b) for b in batches] == [4, 4, 2] * 2
    for epoch in range(2):
        order = epoch_permutation(10, 1, epoch).numpy().tolist()
        assert sum(batches[epoch * 3:(epoch + 1) * 3], []) == order


def test_resumed_run_sees_the_batches_of_an_uninterrupted_one():
    full, _ = train_dataset(numbered(10), batch_size=3, seed=5, epochs=4)
    resumed, steps = train_dataset(numbered(10), batch_size=3, seed=5, epochs=4,
                                   initial_epoch=2)
    assert batches_of(resumed) == batches_of(full)[2 * steps:]


def test_steps_per_epoch_takes_full_batches_across_passes():
    fewer, steps = train_dataset(numbered(10), batch_size=3, seed=2, epochs=2, steps_per_epoch=2)
    first = epoch_permutation(10, 2, 1).numpy().tolist()
    assert steps == 2 and batches_of(fewer)[2:] == [first[:3], first[3:6]]

    more, _ = train_dataset(numbered(10), batch_size=4, seed=2, epochs=1, steps_per_epoch=4)
    flat = sum(batches_of(more), [])
    again = epoch_permutation(10, 2, 0, repeat=1).numpy().tolist()
    assert [len(b) for b in batches_of(more)] == [4, 4, 4, 4]
    assert flat == epoch_permutation(10, 2, 0).numpy().tolist() + again[:6]


def test_shuffle_false_keeps_order_and_a_buffer_size_means_true():
    ordered, _ = train_dataset(numbered(5), batch_size=2, seed=0, epochs=2, shuffle=False)
    assert batches_of(ordered) == [[0, 1], [2, 3], [4]] * 2
    buffered, _ = train_dataset(numbered(5), batch_size=2, seed=0, epochs=1, shuffle=1024)
    plain, _ = train_dataset(numbered(5), batch_size=2, seed=0, epochs=1, shuffle=True)
    assert batches_of(buffered) == batches_of(plain)


def test_batch_dimension_is_unknown_even_when_every_batch_is_full():
    dataset, _ = train_dataset(numbered(8), batch_size=4, seed=0, epochs=1, steps_per_epoch=2)
    x_spec, y_spec = dataset.element_spec
    assert x_spec.shape.as_list() == [None, 2] and y_spec.shape.as_list() == [None]
    assert eval_dataset(numbered(8), batch_size=4).element_spec[0].shape.as_list() == [None, 2]


def test_dict_inputs_and_outputs_stay_aligned():
    n = 7
    split = Split({"a": np.arange(n, dtype=np.float32)[:, None],
                   "b": np.arange(n, dtype=np.float32)[:, None] * 10},
                  {"out": np.arange(n)}, "named")
    dataset, _ = train_dataset(split, batch_size=3, seed=9, epochs=1)
    for x, y in dataset:
        assert set(x) == {"a", "b"} and set(y) == {"out"}
        assert x["a"].numpy().ravel().tolist() == y["out"].numpy().tolist()
        assert (x["b"].numpy() == x["a"].numpy() * 10).all()


def test_eval_dataset_is_ordered_finite_and_predicts_on_x_only():
    batches = batches_of(eval_dataset(numbered(5), batch_size=2))
    assert batches == [[0, 1], [2, 3], [4]]
    assert len(batches_of(eval_dataset(numbered(5), batch_size=2, steps=2))) == 2
    x_only = list(eval_dataset(Split(np.zeros((3, 2), np.float32), None), batch_size=2))
    assert [b.shape[0] for b in x_only] == [2, 1]


def test_empty_split_and_bad_batch_size_are_data_errors():
    with pytest.raises(DataError, match="empty.npz: no samples"):
        train_dataset(Split(np.zeros((0, 2)), np.zeros(0), "empty.npz"), batch_size=2, seed=0,
                      epochs=1)
    with pytest.raises(DataError, match="batch_size must be at least 1"):
        eval_dataset(numbered(3), batch_size=0)


def test_fit_reads_epoch_e_batches_from_the_one_dataset():
    """Keras keeps one iterator across epochs when steps_per_epoch is given: epoch e trains on
    exactly the batches of epoch e, also in a run resumed with initial_epoch."""
    import keras

    keras.backend.clear_session()
    seen: list[list[int]] = []

    class Record(keras.layers.Layer):
        def call(self, inputs):
            if hasattr(inputs, "numpy"):  # eager batches only, not the symbolic build call
                seen.append(inputs[:, 0].numpy().astype(int).tolist())  # column 0 = index
            return inputs

        def compute_output_shape(self, input_shape):
            return input_shape

    model = keras.Sequential([keras.Input((2,)), Record(), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse", run_eagerly=True)
    dataset, steps = train_dataset(numbered(10), batch_size=4, seed=3, initial_epoch=1, epochs=3)
    model.fit(dataset, epochs=3, initial_epoch=1, steps_per_epoch=steps, shuffle=False,
              verbose=0)
    for epoch in (1, 2):
        got = sum(seen[(epoch - 1) * steps:epoch * steps], [])
        assert got == epoch_permutation(10, 3, epoch).numpy().tolist()
    assert len(seen) == 2 * steps
