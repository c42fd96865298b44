"""The `array_record` dataset (SPEC 1.4): tf.train.Example records in ArrayRecord files, read
by record key with Grain — end to end with the real `kexp` commands, on tiny files made here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.filedata import classification_arrays, examples, write_array_records
from tests.test_file_data import (
    TABLE,
    assert_kill_9_then_resume_is_exact,
    assert_order_of_seed_and_epoch,
    history,
)
from tests.test_resume import info, only_run, run_dir_of

SHARDS = 3


def array_record_data(root: Path, features: str = "{x: {shape: [6]}}", shuffle="false",
                      path: str = "shards/part-*.array_record") -> str:
    """A `--set data=...` for the table's ArrayRecord shards (absolute paths: paths given by
    --set are relative to the working directory)."""
    return (f'data={{type: array_record, path: "{root}/{path}", batch_size: 32, '
            f'shuffle: {shuffle}, features: {features}, '
            f'targets: {{y: {{shape: [], dtype: int64}}}}}}')


@pytest.fixture
def table(tmp_path) -> Path:
    """The same 200 samples as arrays.npz and three ArrayRecord shards, in the same order."""
    x, y = classification_arrays(200)
    np.savez(tmp_path / "arrays.npz", x=x, y=y)
    write_array_records([tmp_path / "shards" / f"part-{i}.array_record"
                         for i in range(SHARDS)], x, y)
    (tmp_path / "table.yaml").write_text(TABLE)
    return tmp_path / "table.yaml"


def assert_same_history(got: list[dict], expected: list[dict], label: str) -> None:
    assert [r.keys() for r in got] == [r.keys() for r in expected], label
    for a, b in zip(got, expected, strict=True):
        for key in b:
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), (label, key)


def test_both_loops_train_like_the_same_arrays_in_an_npz_file(kexp, table, tmp_path):
    # In file order (`fit`); and shuffled with a validation_split (`custom`): the global
    # permutation of (seed, epoch) over record keys is the one in-memory rows get, and
    # validation_split picks the same records, so the batches and the history are the same.
    shuffled = ("--set", "data.validation_split=0.25", "--set", "data.shuffle=true")
    cases = {"fit": ((), ("--set", array_record_data(tmp_path))),
             "custom": (shuffled, ("--set", array_record_data(tmp_path, shuffle="true"),
                                   *shuffled, "--set", "train.loop=custom"))}
    runs = tmp_path / "runs"
    for loop, (npz_sets, record_sets) in cases.items():
        npz = kexp("train", table, "--runs-dir", runs, "--name", f"npz-{loop}", *npz_sets)
        records = kexp("train", table, "--runs-dir", runs, "--name", loop, *record_sets)
        assert npz.exit_code == 0 and records.exit_code == 0, (loop, records.output)
        expected = history(run_dir_of(npz))
        assert len(expected) == 3 and ("val_loss" in expected[0]) == (loop == "custom")
        assert_same_history(history(run_dir_of(records)), expected, loop)


def test_epoch_order_is_a_global_permutation_of_seed_and_epoch(table, tmp_path):
    from kexp.data.arrayrecord import array_record_stream
    from kexp.data.pipeline import epoch_permutation, train_dataset

    def batches(seed: int, first: int, shuffle: bool = True):
        stream = array_record_stream(str(tmp_path / "shards" / "part-*.array_record"),
                                     {"x": {"shape": [6]}},
                                     {"y": {"shape": [], "dtype": "int64"}})
        dataset, steps = train_dataset(stream, batch_size=50, seed=seed, epochs=3,
                                       initial_epoch=first, shuffle=shuffle)
        return [x[:, 0].tolist() for x, _ in dataset.as_numpy_iterator()], steps

    order = assert_order_of_seed_and_epoch(batches)
    x, _ = classification_arrays(200)
    for epoch in range(3):  # every record of every file, in the in-memory permutation
        expected = x[np.asarray(epoch_permutation(200, 1, epoch)), 0]
        assert np.concatenate(order[4 * epoch:4 * epoch + 4]) == pytest.approx(expected)
    in_order, _ = batches(1, 0, shuffle=False)
    assert np.concatenate(in_order[:4]) == pytest.approx(x[:, 0])  # file order


def test_two_workers_take_every_other_record_of_each_epochs_permutation(table, tmp_path):
    import tensorflow as tf

    from kexp.data.arrayrecord import array_record_stream
    from kexp.data.pipeline import epoch_permutation
    from kexp.data.stream import Shard

    stream = array_record_stream(str(tmp_path / "shards" / "part-*.array_record"),
                                 {"x": {"shape": [6]}}, {"y": {"shape": [], "dtype": "int64"}})
    x, _ = classification_arrays(200)
    for epoch in (0, 1):
        parts = []
        for worker in (0, 1):
            elements = stream.elements(3, tf.constant(epoch, tf.int64),
                                       tf.constant(0, tf.int64), True, Shard(worker, 2))
            parts.append(np.concatenate([f[:, 0] for f, _ in elements.batch(64).map(
                stream._parse_parts).as_numpy_iterator()]))
        order = x[np.asarray(epoch_permutation(200, 3, epoch)), 0]
        assert parts[0] == pytest.approx(order[0::2]) and parts[1] == pytest.approx(order[1::2])
    assert stream.shardable  # a multi-worker run gives each worker its Shard of the stream
    assert "reads record 1 of every 2 of each epoch's order" in stream.shard_notice(Shard(1, 2))


def test_kill_9_mid_epoch_then_resume_gives_bit_identical_weights(kexp, table, tmp_path):
    data = array_record_data(tmp_path, shuffle="true")
    assert_kill_9_then_resume_is_exact(kexp, table, tmp_path, data, epochs=4)


@pytest.mark.parametrize(("data", "words"), [
    ({"features": "{pixels: {shape: [6]}}"},
     "part-0.array_record: record 1: a key is missing from the Example"),
    ({"features": "{x: {shape: [5]}}"}, "part-0.array_record: record 1: cannot parse the record"),
    ({"path": "shards/none-*.array_record"}, "none-*.array_record: no file matches this pattern"),
    ({"path": "shards/not-one.array_record"}, "not-one.array_record: not a readable ArrayRecord "
                                              "file: the file is truncated or corrupt"),
])
def test_bad_input_is_exit_2_before_training(kexp, table, tmp_path, data, words):
    (tmp_path / "shards" / "not-one.array_record").write_bytes(b"\x00" * 100)
    result = kexp("train", table, "--runs-dir", tmp_path / "runs",
                  "--set", array_record_data(tmp_path, **data))
    assert result.exit_code == 2, result.output
    assert words in result.stderr
    assert "--set data=" in result.stderr  # where the config named the files
    assert "Traceback" not in result.stderr and not (tmp_path / "runs").exists()


def test_a_corrupt_record_fails_the_run_naming_file_and_record_but_smoke_reads_two_batches(
        kexp, table, tmp_path):
    # Uncompressed, so that record 60 of the last shard can be found and damaged in place.
    from array_record.python.array_record_module import ArrayRecordWriter

    x, y = classification_arrays(200)
    files = [tmp_path / "shards" / f"part-{i}.array_record" for i in range(SHARDS)]
    for file, records in examples(files, x, y):
        writer = ArrayRecordWriter(str(file), "group_size:1,uncompressed")
        for record in records:
            writer.write(record)
        writer.close()
        last = records
    raw = bytearray(files[-1].read_bytes())
    at = raw.find(last[59]) + len(last[59]) // 2
    raw[at] ^= 0xFF
    files[-1].write_bytes(bytes(raw))
    args = ("train", table, "--set", array_record_data(tmp_path), "--set", "data.batch_size=8")
    smoke = kexp(*args, "--runs-dir", tmp_path / "smoke", "--smoke")
    assert smoke.exit_code == 0, smoke.output  # two batches from the first shard
    full = kexp(*args, "--runs-dir", tmp_path / "runs")
    assert full.exit_code == 1, full.output
    assert "part-2.array_record: record 60: the file is truncated or corrupt" in full.stderr
    assert "Traceback" not in full.stderr
    run = only_run(tmp_path / "runs")
    assert info(run)["status"] == "failed" and "part-2.array_record: record 60" in \
        info(run)["reason"]


def test_without_grain_the_dataset_is_exit_2_naming_what_to_install(kexp, table, tmp_path,
                                                                     monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "grain", None)  # `import grain` fails
    result = kexp("train", table, "--runs-dir", tmp_path / "runs",
                  "--set", array_record_data(tmp_path))
    assert result.exit_code == 2, result.output
    assert "needs the packages grain and array-record (pip install grain array-record" in \
        result.stderr
    assert "--set data=" in result.stderr and not (tmp_path / "runs").exists()
