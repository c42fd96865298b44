"""``image_directory`` and ``text_directory``: one sub-folder per class, streamed, with the
arguments and defaults of ``keras.utils.image_dataset_from_directory`` and
``text_dataset_from_directory``.

Files are listed as Keras lists them (class sub-folders in sorted order, files found
recursively in sorted order, by extension); images are decoded and resized as Keras does
(``decode_image`` without animations, ``tf.image.resize`` with ``interpolation``, or Keras's
``smart_resize`` for ``crop_to_aspect_ratio``), as float32 in [0, 255]: scaling belongs in
the model (``Rescaling``). Every image is read by ``read_image``, one function, so a limit on
what an image may be is added in one place: each file's header is read once, in Python, when
a pipeline is made (``kexp.data.image_headers``: decompression bombs and formats kexp does
not list are refused), and ``read_image`` decodes a file only if its header bytes are still
those.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from kexp.data.files import display_path
from kexp.data.image_headers import MAX_IMAGE_PIXELS
from kexp.data.stream import Stream
from kexp.errors import DataError, error_line

if TYPE_CHECKING:
    import tensorflow as tf

__all__ = ["IMAGE_FORMATS", "MAX_IMAGE_PIXELS", "index_directory", "ImageFolder", "TextFolder",
           "read_image", "image_folder", "text_folder", "predict_stream"]

IMAGE_FORMATS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
_CHANNELS = {"grayscale": 1, "rgb": 3, "rgba": 4}
_INTERPOLATIONS = ("bilinear", "nearest", "bicubic", "area", "lanczos3", "lanczos5",
                   "gaussian", "mitchellcubic")
_LABEL_MODES = ("int", "categorical", "binary", None)


def index_directory(directory: str, labels: Any, formats: tuple[str, ...],
                    class_names: list[str] | None, follow_links: bool,
                    kind: str) -> tuple[list[str], list[int] | None, list[str]]:
    """``(files, labels, class_names)`` as Keras's ``index_directory`` finds them.

    Raises:
        DataError: a missing or empty folder, ``class_names`` that are not its sub-folders,
            a ``labels`` list of the wrong length.
    """
    root = Path(directory)
    source = display_path(root)
    if not root.is_dir():
        raise DataError(f"{source}: " + (
            "is a file; `path` names the folder of class sub-folders (kexp predict "
            "takes single files)" if root.exists() else "folder not found."))
    if labels == "inferred":
        subdirs = sorted(p.name for p in root.iterdir()
                         if p.is_dir() and (follow_links or not p.is_symlink()))
        if class_names is not None:
            if sorted(class_names) != subdirs:
                raise DataError(
                    f"{source}: class_names {list(class_names)} must be the sub-folders "
                    f"{subdirs} (in any order).")
            subdirs = list(class_names)
        files, found = [], []
        for index, name in enumerate(subdirs):
            for path in _walk(root / name, formats, follow_links):
                files.append(path)
                found.append(index)
        if not files:
            raise DataError(f"{source}: no {kind} files ({', '.join(formats)}) in "
                            f"{'its sub-folders' if subdirs else 'it (and no sub-folders)'}.")
        return files, found, subdirs
    files = list(_walk(root, formats, follow_links))
    if not files:
        raise DataError(f"{source}: no {kind} files ({', '.join(formats)}) found.")
    if labels is None:
        return files, None, []
    if len(labels) != len(files):
        raise DataError(f"{source}: `labels` has {len(labels)} values for {len(files)} files "
                        f"(sorted by path).")
    return files, [int(v) for v in labels], [str(i) for i in sorted(set(labels))]


def _walk(folder: Path, formats: tuple[str, ...], follow_links: bool):
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=follow_links):
        dirnames.sort()
        for name in sorted(filenames):
            if name.lower().endswith(formats):
                yield str(Path(dirpath, name))


def _check_classes(source: str, labels: Any, label_mode: str | None,
                   class_names: list[str]) -> None:
    if label_mode not in _LABEL_MODES:
        raise DataError(f"{source}: label_mode must be int, categorical, binary or null; "
                        f"received {label_mode!r}.")
    if labels != "inferred" or label_mode is None:
        return
    if len(class_names) < 2:
        found = f"one class ({class_names[0]!r})" if class_names else "no class"
        raise DataError(f"{source}: found {found}; a classifier needs one sub-folder per "
                        f"class, at least two (or set `label_mode: null` for unlabelled data).")
    if label_mode == "binary" and len(class_names) != 2:
        raise DataError(f"{source}: label_mode: binary needs exactly 2 classes; found "
                        f"{len(class_names)} ({', '.join(class_names)}).")


@dataclass
class _Folder(Stream):
    """A folder dataset: one sample per file, with its label."""

    labels: list[int] | None = None
    label_mode: str | None = "int"
    sample_per_file = True
    # How many of ``columns()``' leading tensors ``load`` takes (the rest: the label).
    _load_parts = 1

    def count_samples(self) -> int:
        return len(self.files)

    def _label(self, label: tf.Tensor) -> tf.Tensor:
        import tensorflow as tf

        if self.label_mode == "categorical":
            return tf.one_hot(label, len(self.class_names or []), dtype=tf.float32)
        if self.label_mode == "binary":
            return tf.cast(tf.expand_dims(label, -1), tf.float32)
        return label

    def load(self, path: tf.Tensor, *checks: tf.Tensor) -> tf.Tensor:
        raise NotImplementedError

    def file_columns(self) -> tuple:
        """Per file, what ``load`` takes: its path."""
        import tensorflow as tf

        return (tf.constant(self.files),)

    def columns(self) -> tuple:
        """The per-file tensors a pass gathers from in its slot order: ``file_columns()``,
        and the labels (already one-hot or a column, as ``label_mode`` says) when there are
        any."""
        import tensorflow as tf

        files = self.file_columns()
        if self.labels is None or self.label_mode is None:
            return files
        return (*files, self._label(tf.constant(self.labels, tf.int64)))

    def sample(self, *parts: tf.Tensor) -> Any:
        """A gathered ``(path, ..., label)`` -> ``(sample, label)`` (or the sample alone):
        the only per-file work of a pass."""
        sample = self.load(*parts[:self._load_parts])
        rest = parts[self._load_parts:]
        return (sample, *rest) if rest else sample

    def read(self, order: tf.Tensor, sequential: bool) -> tf.data.Dataset:
        import tensorflow as tf

        parts = tuple(tf.gather(column, order) for column in self.columns())
        return tf.data.Dataset.from_tensor_slices(parts).map(
            self.sample, num_parallel_calls=self.parallel_reads(), deterministic=True)

    def parallel_reads(self) -> int:
        """How many files the pipeline reads at once: ``tf.data.AUTOTUNE`` (streams run
        without autotuning: one per CPU)."""
        return -1

    def subset(self, indices: Any, source: str) -> Stream:
        return type(self)(**{**self.__dict__, "source": source, "_probe": None,
                             "_count": None,
                             "files": [self.files[i] for i in indices],
                             "labels": None if self.labels is None
                             else [self.labels[i] for i in indices]})

    def locate_error(self) -> str | None:
        import tensorflow as tf

        for path in self.files:
            try:
                problem, parts = self._read_now(path)
                if problem is None:
                    self.load(*(tf.constant(part) for part in parts)).numpy()
            except (tf.errors.OpError, ValueError, OSError) as exc:
                problem = error_line(exc)
            if problem is not None:
                return f"{display_path(path)}: cannot read this file ({problem})."
        return None

    def _read_now(self, path: str) -> tuple[str | None, tuple]:
        """Why the file at ``path`` is not read now (None: it may be), and what ``load``
        takes for it."""
        return None, (path,)


@dataclass
class ImageFolder(_Folder):
    image_size: tuple[int, int] = (256, 256)
    channels: int = 3
    interpolation: str = "bilinear"
    crop_to_aspect_ratio: bool = False
    pad_to_aspect_ratio: bool = False
    # Each file's ``HeaderCheck``, read once (``header_checks``); shared with the stream's
    # parts (``validation_split``).
    headers: dict = field(default_factory=dict, repr=False)
    _load_parts = 3

    def file_columns(self) -> tuple:
        """Per file: its path, and its header check."""
        import tensorflow as tf

        ends, digests = header_checks(self.files, self.headers)
        return (tf.constant(self.files), tf.constant(ends, tf.int32),
                tf.constant(digests, tf.int64))

    def parallel_reads(self) -> int:
        """Four files in flight per CPU, fewer if the largest image's pixels (as decoded,
        four bytes each at most, and a float32 copy to crop or pad) would then hold more
        than 1 GiB. ``tf.data.AUTOTUNE`` runs
        at most one per CPU, and in deterministic order a file that takes longer stalls the
        batch: on two CPUs, eight in flight read small images about 1.35x faster than two
        (README, Performance)."""
        checks = _checks(self.files, self.headers)
        largest = max((check.pixels for check in checks), default=0)
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
            os.cpu_count() or 1)
        per_pixel = 20 if self.crop_to_aspect_ratio or self.pad_to_aspect_ratio else 4
        return max(cpus, min(4 * cpus, _IN_FLIGHT_BYTES // max(per_pixel * largest, 1)))

    def load(self, path: tf.Tensor, *checks: tf.Tensor) -> tf.Tensor:
        return read_image(path, *checks, image_size=self.image_size, channels=self.channels,
                          interpolation=self.interpolation,
                          crop_to_aspect_ratio=self.crop_to_aspect_ratio,
                          pad_to_aspect_ratio=self.pad_to_aspect_ratio)

    def _read_now(self, path: str) -> tuple[str | None, tuple]:
        """The header read again: a refusal, or a header no longer the one the pipeline
        was made with, says why the file is not decoded."""
        (now,) = _checks([path], {})
        if now.refusal is None and path in self.headers and (
                now.digest != self.headers[path].digest):
            return "it changed while the run was reading it; it is not decoded", ()
        return now.refusal, (path, now.end, now.digest)


@dataclass
class TextFolder(_Folder):
    max_length: int | None = None

    def load(self, path: tf.Tensor, *checks: tf.Tensor) -> tf.Tensor:
        import tensorflow as tf

        text = tf.io.read_file(path)
        if self.max_length is not None:
            text = tf.strings.substr(text, 0, self.max_length)
        return text


def read_image(path: tf.Tensor, end: tf.Tensor, digest: tf.Tensor, *,
               image_size: tuple[int, int], channels: int, interpolation: str = "bilinear",
               crop_to_aspect_ratio: bool = False, pad_to_aspect_ratio: bool = False
               ) -> tf.Tensor:
    """One image file -> float32 ``(height, width, channels)`` in [0, 255], as Keras's
    ``image_dataset_from_directory`` loads it. The only place kexp decodes an image file.

    ``end`` and ``digest`` are the file's header check (``header_checks``): the file is
    decoded only if its first ``end`` bytes still hash to ``digest`` (they state its format
    and size, read in Python when the pipeline was made); otherwise an empty string takes its
    place, which fails to decode, and the run's failure is explained by ``locate_error``.
    Three ops per image, where reading the header in TensorFlow took about twenty."""
    import tensorflow as tf

    data = tf.io.read_file(path)
    same = tf.equal(_digest(tf.strings.substr(data, 0, end)), digest)
    image = _decode(tf.where(same, data, ""), channels)
    if crop_to_aspect_ratio or pad_to_aspect_ratio:
        import keras

        image = keras.ops.image.resize(
            tf.cast(image, tf.float32), image_size, interpolation=interpolation,
            crop_to_aspect_ratio=crop_to_aspect_ratio, pad_to_aspect_ratio=pad_to_aspect_ratio,
            data_format="channels_last")
    else:
        image = tf.image.resize(image, image_size, method=interpolation)
    image = tf.cast(image, tf.float32)
    image.set_shape((image_size[0], image_size[1], channels))
    return image


class HeaderCheck(NamedTuple):
    """What ``read_image`` checks a file against: a keyed hash (``digest``) of its first
    ``end`` bytes, which state its format and size (``pixels``); a refused file
    (``refusal``: why) has a digest no hash equals."""

    end: int
    digest: int
    pixels: int
    refusal: str | None


def header_checks(files: list[str], known: dict[str, HeaderCheck]
                  ) -> tuple[list[int], list[int]]:
    """Each file's ``(end, digest)`` for ``read_image`` (see ``_checks``)."""
    checks = _checks(files, known)
    return [check.end for check in checks], [check.digest for check in checks]


def _checks(files: list[str], known: dict[str, HeaderCheck]) -> list[HeaderCheck]:
    """Each file's ``HeaderCheck``: its header read once (see ``kexp.data.image_headers``)
    and kept in ``known``, shared by a stream and its parts."""
    import numpy as np

    from kexp.data.image_headers import Header, read_header

    missing = [f for f in dict.fromkeys(files) if f not in known]
    for start in range(0, len(missing), 1024):  # one hashing op per 1,024 files
        chunk, headers = missing[start:start + 1024], []
        for file in chunk:
            try:
                headers.append(read_header(file))
            except OSError as exc:
                headers.append(Header(0, refusal=error_line(exc)))
        digests = np.asarray(_digest([h.head for h in headers]))
        for file, header, digest in zip(chunk, headers, digests, strict=True):
            known[file] = (HeaderCheck(header.end, int(digest), header.pixels or 0, None)
                           if header.refusal is None else
                           HeaderCheck(0, _REFUSED, 0, header.refusal))
    return [known[f] for f in files]


def _digest(data: Any) -> tf.Tensor:
    """A keyed hash of strings (SipHash, keyed per process: a file cannot be made to match
    a digest it was not read with)."""
    import tensorflow as tf

    return tf.strings.to_hash_bucket_strong(data, _BUCKETS, _HASH_KEY)


_BUCKETS = (1 << 63) - 1
_IN_FLIGHT_BYTES = 1 << 30
_REFUSED = -1  # no digest: digests are in [0, _BUCKETS)
_HASH_KEY = [int.from_bytes(os.urandom(8), "little") >> 1 for _ in range(2)]


def _decode(data: tf.Tensor, channels: int) -> tf.Tensor:
    """``decode_image`` to ``channels``. Files TensorFlow decodes only to RGB (GIF; BMP has
    no grayscale; JPEG no alpha) are decoded to RGB and converted: to grayscale as
    ``rgb_to_grayscale`` does, to RGBA with an opaque alpha channel. So a grayscale or rgba
    folder may mix every format the README lists (Keras's loader fails on those files)."""
    import tensorflow as tf

    if channels == 3:
        return tf.io.decode_image(data, channels=3, expand_animations=False)
    magic = tf.strings.substr(data, 0, 3)
    rgb_only = tf.equal(magic, "GIF")
    if channels == 1:
        rgb_only = tf.logical_or(rgb_only, tf.equal(tf.strings.substr(data, 0, 2), "BM"))
    else:
        rgb_only = tf.logical_or(rgb_only, tf.io.is_jpeg(data))

    def via_rgb() -> tf.Tensor:
        rgb = tf.io.decode_image(data, channels=3, expand_animations=False)
        if channels == 1:
            return tf.image.rgb_to_grayscale(rgb)
        return tf.concat([rgb, tf.fill(tf.concat([tf.shape(rgb)[:2], [1]], 0),
                                       tf.constant(255, rgb.dtype))], axis=-1)

    return tf.cond(rgb_only, via_rgb,
                   lambda: tf.io.decode_image(data, channels=channels, expand_animations=False))


def _image_options(source: str, image_size: Any, color_mode: str,
                   interpolation: str) -> tuple[tuple[int, int], int]:
    if color_mode not in _CHANNELS:
        raise DataError(f"{source}: color_mode must be grayscale, rgb or rgba; received "
                        f"{color_mode!r}.")
    if interpolation not in _INTERPOLATIONS:
        raise DataError(f"{source}: interpolation must be one of {', '.join(_INTERPOLATIONS)}; "
                        f"received {interpolation!r}.")
    size = list(image_size) if isinstance(image_size, (list, tuple)) else [image_size] * 2
    if len(size) != 2 or not all(isinstance(v, int) and v > 0 for v in size):
        raise DataError(f"{source}: image_size must be [height, width] of positive integers; "
                        f"received {image_size!r}.")
    return (size[0], size[1]), _CHANNELS[color_mode]


def image_folder(path: str, *, labels: Any = "inferred", label_mode: str | None = "int",
                 class_names: list[str] | None = None, color_mode: str = "rgb",
                 image_size: Any = (256, 256), interpolation: str = "bilinear",
                 follow_links: bool = False, crop_to_aspect_ratio: bool = False,
                 pad_to_aspect_ratio: bool = False) -> ImageFolder:
    """An ``ImageFolder`` stream over ``path`` (see ``kexp.data.datasets.image_directory``)."""
    source = display_path(path)
    size, channels = _image_options(source, image_size, color_mode, interpolation)
    if crop_to_aspect_ratio and pad_to_aspect_ratio:
        raise DataError(f"{source}: give crop_to_aspect_ratio or pad_to_aspect_ratio, not "
                        f"both.")
    files, found, names = index_directory(path, labels, IMAGE_FORMATS, class_names,
                                          follow_links, "image")
    _check_classes(source, labels, label_mode, names)
    return ImageFolder(source=source, files=files, class_names=names or None, labels=found,
                       label_mode=label_mode if found is not None else None,
                       image_size=size, channels=channels, interpolation=interpolation,
                       crop_to_aspect_ratio=crop_to_aspect_ratio,
                       pad_to_aspect_ratio=pad_to_aspect_ratio)


def text_folder(path: str, *, labels: Any = "inferred", label_mode: str | None = "int",
                class_names: list[str] | None = None, max_length: int | None = None,
                follow_links: bool = False) -> TextFolder:
    """A ``TextFolder`` stream over ``path`` (see ``kexp.data.datasets.text_directory``)."""
    source = display_path(path)
    files, found, names = index_directory(path, labels, (".txt",), class_names, follow_links,
                                          "text")
    _check_classes(source, labels, label_mode, names)
    return TextFolder(source=source, files=files, class_names=names or None, labels=found,
                      label_mode=label_mode if found is not None else None,
                      max_length=max_length)


def _files_to_predict(path: str | Path, formats: tuple[str, ...], kind: str) -> list[str]:
    p = Path(path)
    if p.is_file():
        return [str(p)]
    if not p.is_dir():
        raise DataError(f"{display_path(p)}: no such file or folder.")
    files = list(_walk(p, formats, False))
    if not files:
        raise DataError(f"{display_path(p)}: no {kind} files ({', '.join(formats)}).")
    return files


def predict_stream(path: str | Path, data_type: str, args: dict[str, Any]) -> _Folder:
    """The files to predict on — ``path`` itself, or the image (text) files under a folder,
    sorted, recursively — read as the run's ``data:`` (``args``) reads its training files,
    without labels."""
    image = data_type == "image_directory"
    files = _files_to_predict(path, IMAGE_FORMATS if image else (".txt",),
                              "image" if image else "text")
    source = display_path(path)
    if not image:
        return TextFolder(source=source, files=files, labels=None, label_mode=None,
                          max_length=args.get("max_length"))
    size, channels = _image_options(source, args.get("image_size", (256, 256)),
                                    args.get("color_mode", "rgb"),
                                    args.get("interpolation", "bilinear"))
    return ImageFolder(source=source, files=files, labels=None, label_mode=None,
                       image_size=size, channels=channels,
                       interpolation=args.get("interpolation", "bilinear"),
                       crop_to_aspect_ratio=bool(args.get("crop_to_aspect_ratio", False)),
                       pad_to_aspect_ratio=bool(args.get("pad_to_aspect_ratio", False)))
