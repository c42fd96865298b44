"""Tiny file datasets generated for the tests: image folders of simple shapes, TFRecords,
csv files. Nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SHAPES = ("crosses", "squares")


def shape_image(kind: str, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """A ``(size, size, 3)`` uint8 image: a filled square or a thin cross, placed at random,
    in a random bright colour on a dark noisy background."""
    image = rng.integers(0, 40, (size, size, 3)).astype(np.uint8)
    colour = rng.integers(150, 256, 3).astype(np.uint8)
    half = int(rng.integers(5, 10))
    cy, cx = (int(v) for v in rng.integers(half + 1, size - half - 1, 2))
    if kind == "squares":
        image[cy - half:cy + half, cx - half:cx + half] = colour
    else:
        image[cy - 1:cy + 1, cx - half:cx + half] = colour
        image[cy - half:cy + half, cx - 1:cx + 1] = colour
    return image


def write_png(path: Path, image: np.ndarray) -> None:
    import tensorflow as tf

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tf.io.encode_png(image).numpy())


def image_folder(root: Path, per_class: int = 40, seed: int = 0, size: int = 32) -> Path:
    """``root/<class>/<i>.png`` for the classes ``crosses`` and ``squares``."""
    rng = np.random.default_rng(seed)
    for kind in SHAPES:
        for i in range(per_class):
            write_png(root / kind / f"{i:03d}.png", shape_image(kind, rng, size))
    return root


def examples(files: list[Path], x: np.ndarray, y: np.ndarray):
    """``(file, serialised Examples)``: ``(x, y)`` split in order over ``files``, Examples with
    keys ``x`` (floats) and ``y`` (an int64)."""
    import tensorflow as tf

    for file, part in zip(files, np.array_split(np.arange(len(x)), len(files)), strict=True):
        file.parent.mkdir(parents=True, exist_ok=True)
        yield file, [tf.train.Example(features=tf.train.Features(feature={
            "x": tf.train.Feature(float_list=tf.train.FloatList(value=x[i].ravel())),
            "y": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(y[i])])),
        })).SerializeToString() for i in part]


def write_tfrecords(files: list[Path], x: np.ndarray, y: np.ndarray) -> None:
    """``examples`` in TFRecord files."""
    import tensorflow as tf

    for file, records in examples(files, x, y):
        with tf.io.TFRecordWriter(str(file)) as writer:
            for record in records:
                writer.write(record)


def write_array_records(files: list[Path], x: np.ndarray, y: np.ndarray) -> None:
    """``examples`` in ArrayRecord files, one record per chunk (``group_size:1``, what random
    access wants)."""
    from array_record.python.array_record_module import ArrayRecordWriter

    for file, records in examples(files, x, y):
        writer = ArrayRecordWriter(str(file), "group_size:1")
        for record in records:
            writer.write(record)
        writer.close()


def classification_arrays(n: int = 256, features: int = 6, seed: int = 0):
    """Learnable float32 features and int64 labels of 3 classes."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n).astype(np.int64)
    centres = rng.normal(0, 2, (3, features))
    x = (centres[y] + rng.normal(0, 1, (n, features))).astype(np.float32)
    return x, y


GOOD = "great wonderful lovely excellent superb fine".split()
BAD = "awful terrible boring dreadful poor ugly".split()
FILLER = "the movie was a and it really quite".split()


def text_folder(root: Path, per_class: int = 30, seed: int = 0) -> Path:
    """``root/pos/*.txt`` and ``root/neg/*.txt``: twelve words each, from the class's words
    and neutral filler."""
    rng = np.random.default_rng(seed)
    for kind, words in (("pos", GOOD), ("neg", BAD)):
        (root / kind).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            text = " ".join(rng.choice(words + FILLER, 12))
            (root / kind / f"{i:03d}.txt").write_text(text)
    return root
