"""``make bench`` rows for data streamed from files (SPEC 1.4, issue #12).

    python bench/files.py            # full: 3,000 images, 100,000 records, 11 repetitions,
                                     # an RSS set 5x the peak of a small run (a few GB)
    python bench/files.py --quick    # about a minute: small sets, two repetitions

Three figures, each in one run of this script:

- **image_directory throughput** (images/s, decode + resize + batch): kexp's input pipeline
  (``kexp.data.pipeline.train_dataset`` over an ``image_directory`` stream, shuffled) against
  the pipeline a user writes, ``keras.utils.image_dataset_from_directory(...)
  .prefetch(AUTOTUNE)``, on the same folder of 64x64 PNGs resized to 48x48, batch 32. Target
  ≥ 1.0x. The time each takes to make its dataset (listing the files; kexp also reads each
  file's header then) is not in the rate: a row gives it. A second row does the same on
  photo-sized pictures (500x375 JPEGs resized to 180x180, as in the book's next chapter),
  where decoding, not per-image overhead, costs.
- **tfrecord throughput** (records/s): kexp's ``tfrecord`` stream (``shuffle: false``) against
  a hand-written ``TFRecordDataset -> batch -> map(parse_example) -> prefetch`` on the same
  shards of 784-float Examples, batch 256. Target ≥ 0.95x.
- **peak RSS**: ``kexp train`` (its own process) for one epoch over a TFRecord set on disk;
  the row gives the set's size over the process's peak resident memory (target ≥ 4x: the data
  is streamed, not loaded). The full run first trains on a small set (0.3 GB) to learn the
  peak, then writes a set 5x that peak and trains on it: the figure is the second run's.

Within a repetition the two pipelines of a pair run back to back in this process, in an
order rotated each repetition, after one warm-up pass each (the files are then in the page
cache for both); figures are medians, with the min-max over repetitions, and the ratio is
the median of the per-repetition ratios. Results go to ``bench/results/files.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.append(str(Path(__file__).resolve().parent.parent))

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "files.json"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _images(root: Path, n: int) -> Path:
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / f"class{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        (folder / f"{i:05d}.png").write_bytes(tf.io.encode_png(image).numpy())
    return root


def _photos(root: Path, n: int) -> Path:
    """``n`` photo-sized JPEGs (500x375, the size of the book's cats-and-dogs pictures), of
    smooth random shapes with a little grain, as a camera's pictures compress: two classes."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:375, 0:500].astype(np.float32)
    for i in range(n):
        folder = root / f"class{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        image = np.zeros((375, 500, 3), np.float32)
        for _ in range(6):  # soft blobs of random colour over a gradient
            cy, cx, r = rng.uniform(0, 375), rng.uniform(0, 500), rng.uniform(30, 150)
            blob = np.exp(-((rows - cy) ** 2 + (cols - cx) ** 2) / (2 * r * r))
            image += blob[..., None] * rng.uniform(0, 255, 3)
        image += rows[..., None] / 375 * rng.uniform(0, 80, 3) + rng.normal(0, 6, image.shape)
        pixels = np.clip(image, 0, 255).astype(np.uint8)
        (folder / f"{i:05d}.jpg").write_bytes(tf.io.encode_jpeg(pixels, quality=90).numpy())
    return root


def _records(root: Path, n: int, shards: int, repeat: int = 1) -> list[Path]:
    """``shards`` files of ``n`` distinct Examples (``x``: 784 floats, ``y``: an int), each
    written ``repeat`` times (a large set written fast)."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    files = [root / f"part-{i:03d}.tfrecord" for i in range(shards)]
    per = n // shards
    for file in files:
        payloads = []
        for _ in range(per):
            example = tf.train.Example(features=tf.train.Features(feature={
                "x": tf.train.Feature(float_list=tf.train.FloatList(
                    value=rng.random(784, dtype=np.float32))),
                "y": tf.train.Feature(int64_list=tf.train.Int64List(
                    value=[int(rng.integers(0, 10))])),
            }))
            payloads.append(example.SerializeToString())
        with tf.io.TFRecordWriter(str(file)) as writer:
            for _ in range(repeat):
                for payload in payloads:
                    writer.write(payload)
    return files


def _rate(dataset, count: int) -> float:
    start = time.perf_counter()
    for _ in dataset:
        pass
    return count / (time.perf_counter() - start)


def _pair(make_plain, make_kexp, count: int, reps: int) -> dict[str, Any]:
    """Samples/s of two pipelines, interleaved: each figure's median and min-max, and the
    per-repetition ratio's; and the seconds each took to make (not in the rates)."""
    plain, kexp, ratios, made = [], [], [], {"plain": [], "kexp": []}
    _rate(make_plain(), count), _rate(make_kexp(), count)  # warm-up: page cache, tracing
    for rep in range(reps):
        order = [("plain", make_plain), ("kexp", make_kexp)]
        if rep % 2:
            order.reverse()
        got = {}
        for name, make in order:
            start = time.perf_counter()
            dataset = make()
            made[name].append(time.perf_counter() - start)
            got[name] = _rate(dataset, count)
        plain.append(got["plain"])
        kexp.append(got["kexp"])
        ratios.append(got["kexp"] / got["plain"])
    return {**_spread("plain", plain), **_spread("kexp", kexp), **_spread("ratio", ratios),
            "reps": reps, "plain_made_s": statistics.median(made["plain"]),
            "kexp_made_s": statistics.median(made["kexp"])}


def _spread(name: str, values: list[float]) -> dict[str, float]:
    return {name: statistics.median(values), f"{name}_min": min(values),
            f"{name}_max": max(values)}


def image_throughput(work: Path, n: int, reps: int, photos: bool = False
                     ) -> dict[str, float]:
    """Tiny 64x64 PNGs resized to 48x48 (the worst case for kexp's per-image decompression
    bomb check, whose cost does not grow with the image), or, with ``photos``, 500x375 JPEGs
    resized to 180x180 (the book's next chapter)."""
    import keras
    import tensorflow as tf

    from kexp.data.folders import image_folder
    from kexp.data.pipeline import train_dataset

    folder = _photos(work / "photos", n) if photos else _images(work / "images", n)
    size = (180, 180) if photos else (48, 48)

    def plain():
        return keras.utils.image_dataset_from_directory(
            folder, image_size=size, batch_size=32, shuffle=True, seed=1,
            verbose=False).prefetch(tf.data.AUTOTUNE)

    def kexp():
        stream = image_folder(str(folder), image_size=list(size))
        return train_dataset(stream, batch_size=32, seed=1, epochs=1)[0]

    return {**_pair(plain, kexp, n, reps), "images": n}


def tfrecord_throughput(work: Path, n: int, reps: int) -> dict[str, float]:
    import tensorflow as tf

    from kexp.data.pipeline import train_dataset
    from kexp.data.records import tfrecord_stream

    files = [str(f) for f in _records(work / "records", n, 4)]
    spec = {"x": tf.io.FixedLenFeature([784], tf.float32),
            "y": tf.io.FixedLenFeature([], tf.int64)}

    def plain():
        dataset = tf.data.TFRecordDataset(files).batch(256)
        dataset = dataset.map(lambda b: tf.io.parse_example(b, spec),
                              num_parallel_calls=tf.data.AUTOTUNE)
        return dataset.prefetch(tf.data.AUTOTUNE)

    def kexp():
        stream = tfrecord_stream(files, {"x": {"shape": [784]}},
                                 {"y": {"shape": [], "dtype": "int64"}})
        return train_dataset(stream, batch_size=256, seed=1, epochs=1, shuffle=False)[0]

    return {**_pair(plain, kexp, n, reps), "records": n}


def peak_rss(work: Path, distinct: int, repeat: int, name: str = "big") -> dict[str, float]:
    """``kexp train`` one epoch over a TFRecord set of ``distinct * repeat`` records."""
    from bench.run import _kexp_command, time_process

    files = _records(work / name, distinct, 8, repeat)
    size = sum(f.stat().st_size for f in files)
    config = work / f"{name}.yaml"
    config.write_text(f"""
seed: 1
data:
  type: tfrecord
  path: "{work / name}/part-*.tfrecord"
  features: {{x: {{shape: [784]}}}}
  targets: {{y: {{shape: [], dtype: int64}}}}
  batch_size: 512
model:
  type: sequential
  input_shape: [784]
  layers: [{{type: Dense, units: 10, activation: softmax}}]
compile: {{optimizer: rmsprop, loss: sparse_categorical_crossentropy}}
train: {{epochs: 1, checkpoints: false, tensorboard: false}}
""")
    seconds, code, maxrss_kb = time_process(
        _kexp_command() + ["train", str(config), "--runs-dir", str(work / "runs")],
        log=work / f"{name}.log")
    if code != 0:
        raise SystemExit(f"kexp train failed on the RSS set; see {work / f'{name}.log'}")
    for file in files:  # the disk space is needed no longer
        file.unlink()
    peak = maxrss_kb * 1024
    return {"set_bytes": size, "peak_rss_bytes": peak, "ratio": size / peak,
            "records": (distinct // 8) * 8 * repeat, "seconds": seconds}


def sized_peak_rss(work: Path, quick: bool) -> dict[str, float]:
    """The RSS row: quick, one 0.3 GB set; full, a set 5x the peak of that small run."""
    distinct = 3_200  # 3,200 distinct records of 3.2 KB, written `repeat` times
    small = peak_rss(work, distinct, 30, "small")  # 0.3 GB
    if quick:
        return small
    per_repeat = small["set_bytes"] / 30
    return {**peak_rss(work, distinct, math.ceil(5 * small["peak_rss_bytes"] / per_repeat)),
            "calibration": small}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    quick = args.quick
    with tempfile.TemporaryDirectory(prefix="kexp-bench-files-") as tmp:
        work = Path(tmp)
        results = {
            "quick": quick,
            "image_directory": image_throughput(work, 400 if quick else 3000,
                                                2 if quick else 11),
            "image_directory_photos": image_throughput(work, 100 if quick else 600,
                                                       2 if quick else 11, photos=True),
            "tfrecord": tfrecord_throughput(work, 20_000 if quick else 100_000,
                                            2 if quick else 11),
            "peak_rss": sized_peak_rss(work, quick),
        }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(report(results))
    return 0


def report(results: dict) -> str:
    img, rec, rss = results["image_directory"], results["tfrecord"], results["peak_rss"]

    def rate(row: dict, name: str) -> str:
        return f"{row[name]:,.0f} ({row[name + '_min']:,.0f}–{row[name + '_max']:,.0f})"

    def ratio(row: dict) -> str:
        return f"{row['ratio']:.2f}x ({row['ratio_min']:.2f}–{row['ratio_max']:.2f})"

    lines = [
        f"| file data (median, min–max of {img['reps']} repetitions; tfrecord "
        f"{rec['reps']}) | plain | kexp | kexp / plain | target |",
        "|---|---:|---:|---:|---|",
        f"| image_directory, images/s ({img['images']:,} PNGs, batch 32) | {rate(img, 'plain')} "
        f"| {rate(img, 'kexp')} | {ratio(img)} | ≥ 1.0x |",
    ]
    photos = results.get("image_directory_photos")
    if photos:
        lines.append(
            f"| image_directory, images/s ({photos['images']:,} 500×375 JPEGs to 180×180, "
            f"batch 32) | {rate(photos, 'plain')} | {rate(photos, 'kexp')} | {ratio(photos)} "
            f"| (≥ 1.0x) |")
    lines.append(
        f"| image_directory, seconds to make the dataset ({img['images']:,} PNGs; kexp reads "
        f"each header) | {img['plain_made_s']:.3f} | {img['kexp_made_s']:.3f} | "
        f"{img['kexp_made_s'] / img['plain_made_s']:.2f}x | (informative) |")
    lines += [
        f"| tfrecord, records/s ({rec['records']:,} records, batch 256) | {rate(rec, 'plain')} "
        f"| {rate(rec, 'kexp')} | {ratio(rec)} | ≥ 0.95x |",
        f"| TFRecord set / peak RSS of `kexp train` (one epoch, {rss['seconds']:.0f} s) | "
        f"{rss['set_bytes'] / 1e9:.2f} GB | {rss['peak_rss_bytes'] / 1e9:.2f} GB | "
        f"{rss['ratio']:.1f}x | ≥ 4x |",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
