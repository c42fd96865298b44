"""Data streamed from files (SPEC 1.4 "Data larger than memory"): image folders, TFRecords,
streamed csv — end to end with the real `kexp` commands, on tiny data made here."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from tests.filedata import (
    BAD,
    FILLER,
    GOOD,
    classification_arrays,
    image_folder,
    text_folder,
    write_tfrecords,
)
from tests.test_resume import (
    assert_same_weights,
    info,
    only_run,
    run_dir_of,
    start_kexp,
    wait_for,
)

CONVNET = """
seed: 3
data: {type: image_directory, path: images, image_size: [32, 32], validation_split: 0.25,
       batch_size: 16}
model:
  type: sequential
  input_shape: [32, 32, 3]
  layers:
    - {type: RandomFlip, mode: horizontal}
    - {type: Rescaling, scale: 0.00392156862745098}
    - {type: Conv2D, filters: 16, kernel_size: 3, activation: relu}
    - {type: MaxPooling2D, pool_size: 2}
    - {type: Conv2D, filters: 32, kernel_size: 3, activation: relu}
    - {type: MaxPooling2D, pool_size: 2}
    - {type: Flatten}
    - {type: Dense, units: 2, activation: softmax}
compile: {optimizer: {type: Adam, learning_rate: 2e-3}, loss: sparse_categorical_crossentropy,
          metrics: [accuracy]}
train: {epochs: 10}
"""

TABLE = """
seed: 5
data: {type: npz, path: arrays.npz, features: x, targets: y, batch_size: 32, shuffle: false}
model:
  type: sequential
  input_shape: [6]
  layers: [{type: Dense, units: 8, activation: relu}, {type: Dense, units: 3, activation: softmax}]
compile: {optimizer: adam, loss: sparse_categorical_crossentropy, metrics: [accuracy]}
train: {epochs: 3}
"""

def tfrecord_data(root: Path, features: str = "{x: {shape: [6]}}", shuffle="false") -> str:
    """A `--set data=...` for the table's TFRecord shards (paths from --set are relative to
    the working directory: these are absolute)."""
    return (f'data={{type: tfrecord, path: "{root}/shards/part-*.tfrecord", batch_size: 32, '
            f'shuffle: {shuffle}, features: {features}, '
            f'targets: {{y: {{shape: [], dtype: int64}}}}}}')


def csv_data(root: Path) -> str:
    return (f"data={{type: csv, stream: true, path: {root}/table.csv, targets: label, "
            f"batch_size: 32, shuffle: false}}")


def history(run: Path) -> list[dict[str, float]]:
    with open(run / "history.csv", newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


@pytest.fixture
def table(tmp_path) -> Path:
    """The same 200 samples as arrays.npz, table.csv and three TFRecord shards."""
    x, y = classification_arrays(200)
    np.savez(tmp_path / "arrays.npz", x=x, y=y)
    write_tfrecords([tmp_path / "shards" / f"part-{i}.tfrecord" for i in range(3)], x, y)
    with open(tmp_path / "table.csv", "w") as f:
        f.write(",".join(f"f{i}" for i in range(6)) + ",label\n")
        for row, label in zip(x, y, strict=True):
            f.write(",".join(repr(float(v)) for v in row) + f",{label}\n")
    (tmp_path / "table.yaml").write_text(TABLE)
    return tmp_path / "table.yaml"


# --------------------------------------------------------------------------- image_directory


def test_a_convnet_learns_an_image_folder_and_predict_names_the_classes(kexp, tmp_path):
    image_folder(tmp_path / "images", per_class=60)
    (tmp_path / "convnet.yaml").write_text(CONVNET)
    result = kexp("train", tmp_path / "convnet.yaml", "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    run = run_dir_of(result)
    assert history(run)[-1]["val_accuracy"] >= 0.9
    assert info(run)["class_names"] == ["crosses", "squares"]
    evaluated = kexp("evaluate", run)
    assert evaluated.exit_code == 0 and "validation split (30 samples)" in evaluated.stdout

    image_folder(tmp_path / "new", per_class=6, seed=99)
    out = tmp_path / "predictions.csv"
    predicted = kexp("predict", run, "--input", tmp_path / "new", "-o", out)
    assert predicted.exit_code == 0, predicted.output
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["path", "class", "crosses", "squares"] and len(rows) == 12
    assert sum(r["class"] == Path(r["path"]).parent.name for r in rows) >= 10
    for r in rows:
        assert float(r["crosses"]) + float(r["squares"]) == pytest.approx(1.0, abs=1e-5)

    one = kexp("predict", run, "--input", tmp_path / "new" / "squares" / "000.png",
               "-o", tmp_path / "one.npz")
    assert one.exit_code == 0, one.output
    saved = np.load(tmp_path / "one.npz")
    assert saved["predictions"].shape == (1, 2)
    assert saved["class_names"].tolist() == ["crosses", "squares"]
    assert saved["class"].tolist()[0] in ("crosses", "squares")


@pytest.mark.parametrize(("make", "words"), [
    (lambda root: root.mkdir(), "no image files"),
    (lambda root: image_folder(root, per_class=3) and
     __import__("shutil").rmtree(root / "crosses"), "found one class ('squares')"),
    (lambda root: None, "folder not found"),
])
def test_an_empty_or_one_class_folder_is_exit_2_before_training(kexp, tmp_path, make, words):
    make(tmp_path / "images")
    (tmp_path / "convnet.yaml").write_text(CONVNET)
    result = kexp("train", tmp_path / "convnet.yaml", "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2
    assert words in result.stderr and "convnet.yaml:3" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "runs").exists()


def test_a_corrupt_image_fails_the_run_naming_the_file(kexp, tmp_path):
    image_folder(tmp_path / "images", per_class=20)
    bad = tmp_path / "images" / "squares" / "017.png"  # not among the probe's first files
    bad.write_bytes(bad.read_bytes()[:60])  # a truncated PNG: its header still reads
    (tmp_path / "convnet.yaml").write_text(CONVNET)
    result = kexp("train", tmp_path / "convnet.yaml", "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 1, result.output
    assert "squares/017.png: cannot read this file (Invalid PNG data, size 60)" in result.stderr
    assert "Traceback" not in result.stderr
    run = only_run(tmp_path / "runs")
    assert info(run)["status"] == "failed" and "017.png" in info(run)["reason"]


def test_smoke_reads_two_batches_whatever_the_size(kexp, tmp_path):
    image_folder(tmp_path / "images", per_class=20)
    last = tmp_path / "images" / "squares" / "019.png"
    last.write_bytes(b"not an image")  # read only by a full epoch (file order, no shuffle)
    (tmp_path / "convnet.yaml").write_text(CONVNET)
    args = ("train", tmp_path / "convnet.yaml", "--runs-dir", tmp_path / "runs",
            "--set", "data.shuffle=false", "--set", "data.validation_split=null",
            "--set", "data.batch_size=4")
    smoke = kexp(*args, "--smoke")
    assert smoke.exit_code == 0, smoke.output
    full = kexp(*args)
    assert full.exit_code == 1 and "19.png" in full.stderr


# --------------------------------------------------------------------------- text_directory


TEXT = """
seed: 1
data: {type: text_directory, path: reviews, validation_split: 0.25, batch_size: 8}
model:
  type: sequential
  layers:
    - {type: TextVectorization, max_tokens: 100, output_mode: multi_hot, adapt: true}
    - {type: Dense, units: 2, activation: softmax}
compile: {optimizer: {type: Adam, learning_rate: 0.05}, loss: sparse_categorical_crossentropy,
          metrics: [accuracy]}
train: {epochs: 4}
"""


def test_text_folder_adapts_text_vectorization_on_the_streamed_text(kexp, tmp_path):
    import keras

    text_folder(tmp_path / "reviews")
    (tmp_path / "text.yaml").write_text(TEXT)
    result = kexp("train", tmp_path / "text.yaml", "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    run = run_dir_of(result)
    assert info(run)["class_names"] == ["neg", "pos"]
    assert history(run)[-1]["val_accuracy"] >= 0.9
    layer = keras.saving.load_model(run / "model.keras").layers[0]
    # every word of the training text, not only the first batch's
    assert set(GOOD + BAD + FILLER) <= set(layer.get_vocabulary())
    (tmp_path / "new.txt").write_text("a wonderful superb movie")
    out = tmp_path / "new.csv"
    predicted = kexp("predict", run, "--input", tmp_path / "new.txt", "-o", out)
    assert predicted.exit_code == 0, predicted.output
    assert next(csv.DictReader(out.open()))["class"] == "pos"


# --------------------------------------------------------------------------- records


def test_tfrecord_and_streamed_csv_train_like_the_same_arrays(kexp, table, tmp_path):
    runs = tmp_path / "runs"
    results = {name: kexp("train", table, "--runs-dir", runs, "--name", name, *sets)
               for name, sets in (("npz", ()), ("tfrecord", ("--set", tfrecord_data(tmp_path))),
                                  ("csv", ("--set", csv_data(tmp_path))))}
    for name, result in results.items():
        assert result.exit_code == 0, (name, result.output)
    expected = history(run_dir_of(results["npz"]))
    assert len(expected) == 3
    for name in ("tfrecord", "csv"):
        got = history(run_dir_of(results[name]))
        assert [r.keys() for r in got] == [r.keys() for r in expected]
        for a, b in zip(got, expected, strict=True):
            for key in b:
                assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), (name, key)


def test_bad_records_and_rows_fail_the_run_naming_file_and_record(kexp, table, tmp_path):
    # Two epochs train; then a shard loses its tail and the run, extended, meets it in epoch 2.
    data = ("--set", tfrecord_data(tmp_path, shuffle="true"))
    result = kexp("train", table, "--runs-dir", tmp_path / "r1", *data, "--set", "train.epochs=2")
    assert result.exit_code == 0, result.output
    run = run_dir_of(result)
    last = (run / "checkpoints" / "last.keras").read_bytes()
    shard = tmp_path / "shards" / "part-2.tfrecord"
    shard.write_bytes(shard.read_bytes()[:-30])  # 65 whole records and a cut 66th
    # Counting reads only the records' length headers: the cut is met while training.
    result = kexp("train", "--resume", run, "--set", "train.epochs=3")
    assert result.exit_code == 1, result.output
    assert ("part-2.tfrecord: record 66: the file is truncated (it ends inside record 66)"
            in result.stderr)
    assert "Traceback" not in result.stderr and "DataLossError" not in result.stderr
    assert info(run)["status"] == "failed" and "part-2.tfrecord: record 66" in info(run)["reason"]
    assert (run / "checkpoints" / "last.keras").read_bytes() == last  # nothing saved is lost
    assert (run / "state" / "epoch-0002").is_dir() and len(history(run)) == 2

    lines = (tmp_path / "table.csv").read_text().splitlines()
    lines[150] = lines[150].replace(",", ",oops", 1)
    (tmp_path / "table.csv").write_text("\n".join(lines) + "\n")
    result = kexp("train", table, "--runs-dir", tmp_path / "r2", "--set", csv_data(tmp_path))
    assert result.exit_code == 1, result.output
    assert "table.csv: row 151, column 'f1'" in result.stderr and "is not a number" in \
        result.stderr
    assert "Traceback" not in result.stderr
    failed = info(only_run(tmp_path / "r2"))
    assert failed["status"] == "failed" and "table.csv: row 151" in failed["reason"]


@pytest.mark.parametrize(("features", "words"), [
    ("{pixels: {shape: [6]}}", "record 1: a key is missing from the Example"),
    ("{x: {shape: [5]}}", "record 1: cannot parse the record"),
])
def test_a_missing_key_or_wrong_shape_is_exit_2_before_training(kexp, table, tmp_path,
                                                                 features, words):
    result = kexp("train", table, "--runs-dir", tmp_path / "runs",
                  "--set", tfrecord_data(tmp_path, features))
    assert result.exit_code == 2, result.output
    assert f"part-0.tfrecord: {words}" in result.stderr
    assert "--set data=" in result.stderr  # where the config named the files
    assert "Traceback" not in result.stderr and not (tmp_path / "runs").exists()


def test_epoch_order_is_a_function_of_seed_and_epoch(table, tmp_path):
    import tensorflow as tf

    from kexp.data.pipeline import train_dataset
    from kexp.data.records import tfrecord_stream

    def batches(seed: int, first: int) -> list[list[float]]:
        stream = tfrecord_stream(str(tmp_path / "shards" / "part-*.tfrecord"),
                                 {"x": {"shape": [6]}}, {"y": {"shape": [], "dtype": "int64"}})
        dataset, steps = train_dataset(stream, batch_size=50, seed=seed, epochs=3,
                                       initial_epoch=first, shuffle=64)
        return [x[:, 0].tolist() for x, _ in dataset.as_numpy_iterator()], steps

    order = assert_order_of_seed_and_epoch(batches)
    every = sorted(v for batch in order[:4] for v in batch)
    x, _ = classification_arrays(200)
    assert every == sorted(x[:, 0].tolist())  # each epoch reads every record once
    del tf


def assert_order_of_seed_and_epoch(batches) -> list[list[float]]:
    """``batches(seed, initial_epoch)`` -> (first features of each batch of epochs
    ``initial_epoch`` to 2, batches per epoch) over the table's 200 records in batches of 50:
    a function of ``(seed, epoch)``. Returns the batches of seed 1 from epoch 0."""
    order, steps = batches(1, 0)
    assert steps == 4 and len(order) == 12
    assert batches(1, 0)[0] == order  # the same seed: the same batches
    assert batches(1, 2)[0] == order[8:]  # epoch 2 alone (a resumed run) reads the same
    assert order[:4] != order[4:8]  # epochs differ
    assert batches(2, 0)[0] != order
    return order


def test_kill_9_mid_epoch_then_resume_gives_bit_identical_weights(kexp, table, tmp_path):
    data = tfrecord_data(tmp_path, shuffle="50")
    assert_kill_9_then_resume_is_exact(kexp, table, tmp_path, data, epochs=6)


def assert_kill_9_then_resume_is_exact(kexp, table: Path, tmp_path: Path, data: str,
                                       epochs: int) -> None:
    """Train ``table`` with ``--set data``, ``kill -9`` it in epoch 3, ``--resume``: the final
    weights are those of an uninterrupted run (``deterministic: true``, batches of 8)."""
    sets = ("--set", data, "--set", f"train.epochs={epochs}", "--set", "deterministic=true",
            "--set", "data.batch_size=8")
    reference = kexp("train", table, "--runs-dir", tmp_path / "reference", *sets)
    assert reference.exit_code == 0, reference.output
    runs = tmp_path / "runs"
    proc = start_kexp("train", table, "--runs-dir", runs, *sets, log=tmp_path / "log")
    assert wait_for(lambda: any(runs.glob("*/*/state/epoch-0002")), proc)
    proc.kill()
    proc.wait()
    run = only_run(runs)
    assert info(run)["status"] == "running"
    resumed = kexp("train", "--resume", run)
    assert resumed.exit_code == 0, resumed.output
    assert info(run)["status"] == "completed"
    assert_same_weights(run / "model.keras", run_dir_of(reference) / "model.keras")


def test_streamed_validation_split_and_cache_keep_every_record_once(table, tmp_path):
    from kexp.data.pipeline import eval_dataset
    from kexp.data.records import csv_stream

    stream = csv_stream(str(tmp_path / "table.csv"), targets="label")
    train, validation = stream.carve(0.25, seed=4)
    assert 30 < validation.count < 70 and train.count + validation.count == 200
    seen = [x[:, 0] for part in (train, validation)
            for x, _ in eval_dataset(part, batch_size=64).as_numpy_iterator()]
    x, _ = classification_arrays(200)
    assert sorted(np.concatenate(seen).tolist()) == pytest.approx(sorted(x[:, 0].tolist()))
    train.cache = str(tmp_path / "cache")
    from kexp.data.pipeline import train_dataset

    dataset, steps = train_dataset(train, batch_size=64, seed=0, epochs=2)
    assert sum(len(b[1]) for b in dataset.as_numpy_iterator()) == 2 * train.count
    assert list(tmp_path.glob("cache*"))  # the cache file was written


def test_a_cache_lock_left_by_a_killed_run_is_removed_a_live_one_is_refused(tmp_path):
    import os
    import socket
    import subprocess
    import sys

    from kexp.data.stream import claim_cache_file
    from kexp.errors import DataError

    cache = str(tmp_path / "cache")
    lock, writer = tmp_path / "cache_0.lockfile", tmp_path / "cache.kexp-writer"
    lock.write_text("Created at: 0")
    with pytest.raises(DataError, match="delete it if no run uses"):
        claim_cache_file(cache)  # a lock kexp did not note: only the user can tell
    assert lock.exists()
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True).stdout.strip()
    writer.write_text(f"{ended}@{socket.gethostname()}\n")
    claim_cache_file(cache)  # the killed run's lock goes; this process is the writer now
    assert not lock.exists() and writer.read_text().startswith(f"{os.getpid()}@")
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as live:
        writer.write_text(f"{live.pid}@{socket.gethostname()}\n")
        lock.write_text("Created at: 0")
        try:
            with pytest.raises(DataError, match=f"being written by process {live.pid}"):
                claim_cache_file(cache)
        finally:
            live.kill()
    assert lock.exists()


def test_a_gzip_tfrecord_read_as_uncompressed_says_to_set_compression(tmp_path):
    import gzip

    from kexp.data.records import tfrecord_stream
    from kexp.errors import DataError

    x, y = classification_arrays(8)
    write_tfrecords([tmp_path / "plain.tfrecord"], x, y)
    (tmp_path / "packed.tfrecord").write_bytes(
        gzip.compress((tmp_path / "plain.tfrecord").read_bytes()))
    features = {"x": {"shape": [x.shape[1]], "dtype": "float32"}}
    targets = {"y": {"shape": [], "dtype": "int64"}}
    assert tfrecord_stream(str(tmp_path / "plain.tfrecord"), features, targets).count == 8
    with pytest.raises(DataError, match=r"packed\.tfrecord: the file starts like a GZIP file.*"
                                        r"compression: GZIP"):
        tfrecord_stream(str(tmp_path / "packed.tfrecord"), features, targets).count  # noqa: B018
    packed = tfrecord_stream(str(tmp_path / "packed.tfrecord"), features, targets,
                             compression="GZIP")
    assert packed.count == 8


def test_streamed_csv_files_with_other_columns_are_refused_at_start_up(tmp_path):
    from kexp.data.records import csv_stream
    from kexp.errors import DataError

    (tmp_path / "parts").mkdir()
    (tmp_path / "parts" / "p1.csv").write_text("c1,c2,c3,y\n1,2,3,0\n4,5,6,1\n")
    (tmp_path / "parts" / "p2.csv").write_text("c1,c2,c3,y\n7,8,9,0\n")
    assert csv_stream(str(tmp_path / "parts" / "*.csv"), targets="y").columns == ["c1", "c2",
                                                                               "c3", "y"]
    (tmp_path / "parts" / "p3.csv").write_text("c1,c2,y\n1,2,0\n")
    with pytest.raises(DataError, match=r"p3\.csv: the header names \['c1', 'c2', 'y'\]"):
        csv_stream(str(tmp_path / "parts" / "*.csv"), targets="y")
    for name, text in (("p1.csv", "1,2,3,0\n"), ("p2.csv", "4,5,6,1\n"), ("p3.csv", "1,2,0\n")):
        (tmp_path / "parts" / name).write_text(text)
    with pytest.raises(DataError, match=r"p3\.csv: row 1 has 3 cells; expected 4"):
        csv_stream(str(tmp_path / "parts" / "*.csv"), targets=3, header=False)



# --------------------------------------------------------------------------- configs/


FILE_CONFIGS = ("image_folder_convnet", "text_folder_reviews", "tfrecord_table", "csv_stream",
                "array_record_table")


def test_the_file_dataset_examples_are_skipped_by_smoke_only_when_their_data_is_absent(
        tmp_path):
    # `make smoke` (in CI) trains them on the data in configs/data
    from kexp.tools.smoke import missing_requirement
    from tests.conftest import CONFIGS

    for name in FILE_CONFIGS:
        assert missing_requirement(CONFIGS / f"{name}.yaml") == "", name
        text = (CONFIGS / f"{name}.yaml").read_text()
        (tmp_path / f"{name}.yaml").write_text(text + f"runs_dir: {tmp_path / 'runs'}\n")
    why = missing_requirement(tmp_path / "tfrecord_table.yaml")  # data/ is not beside it
    assert why == f"its data is not here ({tmp_path}/data/table-*.tfrecord does not exist)"
    assert "data/shapes does not exist" in missing_requirement(
        tmp_path / "image_folder_convnet.yaml")


# 1x1 GIF (the classic transparent pixel) and a hand-written 2x2 24-bit BMP: TensorFlow decodes
# both but encodes neither.
GIF = bytes.fromhex("47494638396101000100800000000000ffffff21f90401000000002c000000000100"
                    "01000002024401003b")


def bmp(width: int = 2, height: int = 2) -> bytes:
    import struct

    row = bytes([0, 0, 255] * width) + b"\0" * ((4 - 3 * width % 4) % 4)  # red, BGR
    pixels = row * height
    header = struct.pack("<2sIHHI", b"BM", 54 + len(pixels), 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, len(pixels), 0, 0, 0, 0)
    return header + info + pixels


def test_jpeg_png_bmp_gif_are_read_resized_and_ordered_by_seed_and_epoch(tmp_path):
    import tensorflow as tf

    from kexp.data.folders import image_folder
    from kexp.data.pipeline import train_dataset

    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 0] = 255
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "1.jpg").write_bytes(tf.io.encode_jpeg(red).numpy())
    (tmp_path / "a" / "2.PNG").write_bytes(tf.io.encode_png(red).numpy())
    (tmp_path / "b" / "3.bmp").write_bytes(bmp())
    (tmp_path / "b" / "4.gif").write_bytes(GIF)
    (tmp_path / "b" / "notes.txt").write_text("not an image")
    stream = image_folder(str(tmp_path), image_size=[3, 5], label_mode="categorical")
    assert stream.class_names == ["a", "b"] and len(stream.files) == 4
    dataset, steps = train_dataset(stream, batch_size=3, seed=1, epochs=1, shuffle=False)
    (x1, y1), (x2, y2) = list(dataset.as_numpy_iterator())  # a partial last batch
    assert steps == 2 and x1.shape == (3, 3, 5, 3) and x2.shape == (1, 3, 5, 3)
    assert y1.tolist() == [[1, 0], [1, 0], [0, 1]] and x1.dtype == np.float32
    assert np.allclose(x1[1, ..., 0], 255) and np.allclose(x1[2, ..., 0], 255)  # PNG, BMP red
    assert np.allclose(x1[0, ..., 0], 254, atol=2)  # JPEG: nearly

    def order(seed: int, first: int) -> list[int]:
        data, _ = train_dataset(stream, batch_size=4, seed=seed, epochs=6, initial_epoch=first)
        return [int(np.argmax(y)) * 10 + int(x[0, 0, 0] > 100)
                for xb, yb in data.as_numpy_iterator() for x, y in zip(xb, yb, strict=True)]

    once = order(1, 0)
    assert len(once) == 24 and order(1, 0) == once and order(1, 3) == once[12:]
    assert sorted(once[:4]) == sorted([0 * 10 + 1, 0 * 10 + 1, 10 + 1, 10 + 0])
    assert len({tuple(once[i:i + 4]) for i in range(0, 24, 4)}) > 1  # epochs differ


def test_the_file_data_bench_report_has_the_three_rows(tmp_path):
    from bench.files import _records, report

    files = _records(tmp_path, 16, 2, repeat=3)  # 8 distinct records per file, written 3x
    import tensorflow as tf

    assert [sum(1 for _ in tf.data.TFRecordDataset(str(f))) for f in files] == [24, 24]
    from kexp.data.records import _scan_tfrecord  # counts from the length headers alone

    assert [_scan_tfrecord(str(f)) for f in files] == [(24, False), (24, False)]
    files[0].write_bytes(files[0].read_bytes()[:-5])
    assert _scan_tfrecord(str(files[0])) == (23, True)

    def pair(plain: float, kexp: float) -> dict:
        return {"plain": plain, "plain_min": plain * 0.9, "plain_max": plain * 1.1,
                "kexp": kexp, "kexp_min": kexp * 0.9, "kexp_max": kexp * 1.1,
                "ratio": kexp / plain, "ratio_min": 0.9 * kexp / plain,
                "ratio_max": 1.1 * kexp / plain, "reps": 5}

    table = report({
        "image_directory": {**pair(1000.0, 1100.0), "images": 400, "plain_made_s": 0.04,
                            "kexp_made_s": 0.09},
        "tfrecord": {**pair(5e4, 4.9e4), "records": 20000, "reps": 11},
        "peak_rss": {"set_bytes": 5.1e9, "peak_rss_bytes": 1.0e9, "ratio": 5.1, "seconds": 42},
    })
    assert "| file data (median, min–max of 5 repetitions; tfrecord 11) |" in table
    assert ("| image_directory, seconds to make the dataset (400 PNGs; kexp reads each "
            "header) | 0.040 | 0.090 | 2.25x | (informative) |") in table
    assert ("| image_directory, images/s (400 PNGs, batch 32) | 1,000 (900–1,100) | "
            "1,100 (990–1,210) | 1.10x (0.99–1.21) | ≥ 1.0x |") in table
    assert "0.98x (0.88–1.08) | ≥ 0.95x" in table
    assert "(one epoch, 42 s) | 5.10 GB | 1.00 GB | 5.1x | ≥ 4x |" in table

@pytest.mark.parametrize("color_mode, channels", [("grayscale", 1), ("rgba", 4)])
def test_grayscale_and_rgba_folders_read_every_format(tmp_path, color_mode, channels):
    """TensorFlow decodes BMP and GIF to no single channel, GIF and JPEG to no alpha; kexp
    goes through RGB for those (Keras's loader fails on them)."""
    import tensorflow as tf

    from kexp.data.folders import image_folder
    from kexp.data.pipeline import train_dataset

    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 0] = 255
    for name in "ab":
        (tmp_path / name).mkdir()
    (tmp_path / "a" / "1.jpg").write_bytes(tf.io.encode_jpeg(red).numpy())
    (tmp_path / "a" / "2.png").write_bytes(tf.io.encode_png(red).numpy())
    (tmp_path / "b" / "3.bmp").write_bytes(bmp())
    (tmp_path / "b" / "4.gif").write_bytes(GIF)
    stream = image_folder(str(tmp_path), image_size=[2, 2], color_mode=color_mode)
    dataset, _ = train_dataset(stream, batch_size=4, seed=1, epochs=1, shuffle=False)
    ((x, y),) = list(dataset.as_numpy_iterator())
    assert x.shape == (4, 2, 2, channels) and y.tolist() == [0, 0, 1, 1]
    if channels == 1:  # red through rgb_to_grayscale: 0.2989 * 255
        assert np.allclose(x[1:3], 76, atol=1) and np.allclose(x[0], 76, atol=3)
    else:
        assert np.allclose(x[..., 3], 255) and np.allclose(x[:3, ..., 0], 255, atol=2)


def test_varlen_lists_are_padded_per_batch_and_their_shape_may_be_null():
    import tensorflow as tf

    from kexp.data.records import _features, parse_examples
    from kexp.errors import DataError

    def example(seq: list[int], y: int) -> bytes:
        ints = lambda v: tf.train.Feature(int64_list=tf.train.Int64List(value=v))  # noqa: E731
        return tf.train.Example(features=tf.train.Features(
            feature={"seq": ints(seq), "y": ints([y])})).SerializeToString()

    batch = tf.constant([example([3, 4, 5], 1), example([7], 0)])
    for spec in ({"shape": [None], "dtype": "int64", "varlen": True},
                 {"dtype": "int32", "varlen": True}):
        features = _features({"seq": spec}, "features", "d")
        x, y = parse_examples(batch, features, _features({"y": {"dtype": "int64"}},
                                                         "targets", "d"))
        assert x.numpy().tolist() == [[3, 4, 5], [7, 0, 0]] and y.numpy().tolist() == [1, 0]
    with pytest.raises(DataError, match=r"seq.shape: .*\(a list of any length is `varlen: "
                                        r"true`\); received \[None\]"):
        _features({"seq": {"shape": [None], "dtype": "int64"}}, "features", "d")
    with pytest.raises(DataError, match="seq.varlen: expected true or false; received 'on1'"):
        _features({"seq": {"varlen": "on1"}}, "features", "d")


def test_a_cache_file_gets_its_folder_and_a_folder_is_not_a_cache_file(tmp_path):
    from types import SimpleNamespace

    from kexp.data.load import _cache_folder
    from kexp.errors import DataError

    data = SimpleNamespace(args={}, where="c.yaml:4:3", path="data")
    _cache_folder(str(tmp_path / "a" / "b" / "train"), data)
    assert (tmp_path / "a" / "b").is_dir() and not (tmp_path / "a" / "b" / "train").exists()
    with pytest.raises(DataError, match=r"^c.yaml:4:3: data: cache: .* is a folder; name a "
                                        r"file in it"):
        _cache_folder(str(tmp_path / "a"), data)


def test_a_model_without_input_shapes_is_built_on_the_first_streamed_batch(tmp_path):
    from kexp.config import load_config
    from kexp.training.setup import data_and_model

    rows = "\n".join(f"{i},{i % 3},{i % 2}" for i in range(12))
    (tmp_path / "t.csv").write_text(f"a,b,y\n{rows}\n")
    (tmp_path / "c.yaml").write_text(
        "data: {type: csv, path: t.csv, stream: true, targets: y, batch_size: 4}\n"
        "model: {type: sequential, layers: [{type: Dense, units: 3}]}\n"
        "compile: {optimizer: adam, loss: mse}\n")
    _, model = data_and_model(load_config(tmp_path / "c.yaml"))
    assert model.built and model.count_params() == 2 * 3 + 3


def test_a_file_given_as_the_folder_is_named_a_file(tmp_path):
    from kexp.data.folders import image_folder as folder
    from kexp.errors import DataError

    (tmp_path / "cat.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"cat.png: is a file; `path` names the folder of class"):
        folder(str(tmp_path / "cat.png"))
    with pytest.raises(DataError, match="dog.png: folder not found"):
        folder(str(tmp_path / "dog.png"))


def _folder_of_mixed_images(root: Path, count: int = 11) -> list[Path]:
    """``count`` images of different sizes over three classes, PNG, JPEG, BMP and GIF."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    files = []
    for i in range(count):
        folder = root / f"c{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        image = rng.integers(0, 256, (5 + i, 7 + i % 4, 3), dtype=np.uint8)
        kind = ("png", "jpg", "bmp", "gif", "png")[i % 5]
        data = (tf.io.encode_jpeg(image).numpy() if kind == "jpg" else bmp(3, 2 + i)
                if kind == "bmp" else GIF if kind == "gif" else tf.io.encode_png(image).numpy())
        files.append(folder / f"{i:02d}.{kind}")
        files[-1].write_bytes(data)
    return sorted(files, key=lambda f: (f.parent.name, f.name))


def test_folder_batches_are_keras_images_in_the_seeded_index_shuffle_order(tmp_path,
                                                                           monkeypatch):
    """Epoch e reads the files in ``index_shuffle(range(n))`` keyed by philox draws of
    ``(seed, e)`` and then ``(that, 0)``, each image decoded and resized as Keras's loader
    does, the last batch of each epoch partial: whether the pipeline runs several epochs
    (padded to whole batches, the padding dropped) or one (``epoch_dataset``), with the
    slots computed when the dataset is made or, past ``_EAGER_SLOTS``, by each iterator."""
    import tensorflow as tf

    from kexp.data import stream as stream_module
    from kexp.data.folders import image_folder
    from kexp.data.order import philox_ints
    from kexp.data.pipeline import epoch_dataset, train_dataset

    files = _folder_of_mixed_images(tmp_path)
    n = len(files)
    full = {"minval": None, "maxval": None, "dtype": tf.int64, "alg": "philox"}

    def expected(seed: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        key = tf.random.stateless_uniform([], seed=[seed, epoch], **full)
        key = tf.random.stateless_uniform([2], seed=tf.stack([key, 0]), **full)
        order = tf.random.experimental.index_shuffle(tf.range(n, dtype=tf.int64), key, n - 1)
        images = [tf.image.resize(tf.io.decode_image(tf.io.read_file(str(files[i])), channels=3,
                                                     expand_animations=False), (4, 6))
                  for i in order.numpy()]
        labels = [int(files[i].parent.name[1]) for i in order.numpy()]
        return np.stack(images), np.eye(3, dtype=np.float32)[labels]

    def epochs_of(batches: list) -> list[tuple[np.ndarray, np.ndarray]]:
        assert [len(x) for x, _ in batches] == [4, 4, 3] * (len(batches) // 3)
        return [tuple(np.concatenate(part) for part in zip(*batches[i:i + 3], strict=True))
                for i in range(0, len(batches), 3)]

    stream = image_folder(str(tmp_path), image_size=[4, 6], label_mode="categorical")
    dataset, steps = train_dataset(stream, batch_size=4, seed=5, epochs=3, initial_epoch=1)
    got = epochs_of(list(dataset.as_numpy_iterator()))
    epoch = tf.Variable(2, dtype=tf.int64)
    got += epochs_of(list(epoch_dataset(stream, batch_size=4, seed=5, epoch=epoch)[0]
                          .as_numpy_iterator()))
    assert steps == 3 and len(got) == 3
    for (x, y), e in zip(got, (1, 2, 2), strict=True):
        want_x, want_y = expected(5, e)
        assert np.array_equal(x, want_x)
        assert np.array_equal(y, want_y)
    assert not np.array_equal(got[0][1], got[1][1])  # epochs differ
    monkeypatch.setattr(stream_module, "_EAGER_SLOTS", 0)  # slots computed by the iterator
    lazy = epochs_of(list(train_dataset(stream, batch_size=4, seed=5, epochs=3,
                                        initial_epoch=1)[0].as_numpy_iterator()))
    for (x, y), (want_x, want_y) in zip(lazy, got[:2], strict=True):
        assert np.array_equal(x, want_x) and np.array_equal(y, want_y)
    for seed in (0, 5, -3):  # the draws kexp makes with fewer ops are TensorFlow's
        pair = tf.constant([seed, 7], tf.int64)
        assert np.array_equal(philox_ints(pair, [2]),
                              tf.random.stateless_uniform([2], seed=pair, **full))


def test_a_bomb_in_the_middle_of_a_folder_stops_the_pipeline_and_is_named(tmp_path):
    import tensorflow as tf

    from kexp.data.files import display_path
    from kexp.data.folders import image_folder
    from kexp.data.pipeline import train_dataset
    from tests.test_config_limits import _png_claiming

    files = _folder_of_mixed_images(tmp_path)
    files[5].write_bytes(_png_claiming(100_000, 100_000))
    stream = image_folder(str(tmp_path), image_size=[4, 6])
    dataset, _ = train_dataset(stream, batch_size=4, seed=5, epochs=1)
    with pytest.raises(tf.errors.InvalidArgumentError):
        list(dataset.as_numpy_iterator())
    assert stream.locate_error().startswith(
        f"{display_path(files[5])}: cannot read this file (its header claims more than "
        f"89,478,485 pixels")


def test_an_image_replaced_after_the_pipeline_is_made_is_not_decoded(tmp_path):
    """Headers are read once, when the pipeline is made; each image is decoded only if its
    header bytes are still those: a bomb (here a GIF whose frame, not its screen, claims
    3.6 Gpx) or another image written over a file later stops the pipeline, named."""
    import tensorflow as tf

    from kexp.data.files import display_path
    from kexp.data.folders import image_folder
    from kexp.data.pipeline import train_dataset
    from tests.test_image_headers import _gif

    files = _folder_of_mixed_images(tmp_path)
    stream = image_folder(str(tmp_path), image_size=[4, 6])
    first = [x for x, _ in train_dataset(stream, batch_size=4, seed=5, epochs=1)[0]
             .as_numpy_iterator()]
    assert sum(len(x) for x in first) == len(files)
    for data, words in ((_gif((1, 1), [(60_000, 60_000)]), "its header claims more than "
                         "89,478,485 pixels"),
                        (tf.io.encode_png(np.zeros((9, 9, 3), np.uint8)).numpy(),
                         "it changed while the run was reading it")):
        dataset, _ = train_dataset(stream, batch_size=4, seed=5, epochs=1)
        files[3].write_bytes(data)
        with pytest.raises(tf.errors.InvalidArgumentError):
            list(dataset.as_numpy_iterator())
        assert stream.locate_error().startswith(
            f"{display_path(files[3])}: cannot read this file ({words}")


def test_images_read_at_once_are_four_per_cpu_unless_the_largest_would_hold_1_gib(tmp_path):
    import os

    from kexp.data.folders import image_folder
    from kexp.data.pipeline import train_dataset
    from tests.test_config_limits import _png_claiming

    files = _folder_of_mixed_images(tmp_path, count=6)
    cpus = len(os.sched_getaffinity(0))
    stream = image_folder(str(tmp_path), image_size=[4, 6])
    assert stream.parallel_reads() == 4 * cpus
    # tf.data's autotuning is off, and the prefetch buffer fixed: two batches, not AUTOTUNE
    dataset, buffers = train_dataset(stream, batch_size=4, seed=5, epochs=2)[0], []
    assert dataset.options().autotune.enabled is False
    while dataset is not None:
        if hasattr(dataset, "_buffer_size"):
            buffers.append(int(dataset._buffer_size))
        dataset = getattr(dataset, "_input_dataset", None)
    assert buffers == [2]
    files[0].write_bytes(_png_claiming(8_000, 10_000))  # 80 Mpx: 320 MB as RGBA
    assert image_folder(str(tmp_path), image_size=[4, 6]).parallel_reads() == max(cpus, 3)
    files[0].write_bytes(_png_claiming(2_000, 10_000))  # 20 Mpx, and a float32 copy to crop
    assert image_folder(str(tmp_path), image_size=[4, 6],
                        crop_to_aspect_ratio=True).parallel_reads() == max(cpus, 2)


def test_unshuffled_record_epochs_each_read_every_record_in_file_order(table, tmp_path):
    """``shuffle: false``: every epoch is the same pass (one ``TFRecordDataset`` over the
    files, repeated), ending with its partial batch; ``validation_split`` still reads the
    records of its part."""
    from kexp.data.pipeline import eval_dataset, train_dataset
    from kexp.data.records import tfrecord_stream

    x, y = classification_arrays(200)
    stream = tfrecord_stream(str(tmp_path / "shards" / "part-*.tfrecord"),
                             {"x": {"shape": [6]}}, {"y": {"shape": [], "dtype": "int64"}})
    dataset, steps = train_dataset(stream, batch_size=64, seed=1, epochs=3, initial_epoch=1,
                                   shuffle=False)
    batches = list(dataset.as_numpy_iterator())
    assert steps == 4 and [len(b[0]) for b in batches] == [64, 64, 64, 8] * 2
    assert dataset.options().autotune.enabled is False  # as for folders: set, not tuned
    for epoch in (batches[:4], batches[4:]):
        assert np.array_equal(np.concatenate([b[0] for b in epoch]), x)
        assert np.array_equal(np.concatenate([b[1] for b in epoch]), y)
    train, validation = stream.carve(0.25, seed=3)
    seen = [np.concatenate([b[0] for b in eval_dataset(part, batch_size=64)])
            for part in (train, validation)]
    assert len(seen[0]) + len(seen[1]) == 200 and 20 < len(seen[1]) < 80
    assert sorted(np.concatenate(seen)[:, 0].tolist()) == sorted(x[:, 0].tolist())
