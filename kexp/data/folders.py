"""``image_directory`` and ``text_directory``: one sub-folder per class, streamed, with the
arguments and defaults of ``keras.utils.image_dataset_from_directory`` and
``text_dataset_from_directory``.

Files are listed as Keras lists them (class sub-folders in sorted order, files found
recursively in sorted order, by extension); images are decoded and resized as Keras does
(``decode_image`` without animations, ``tf.image.resize`` with ``interpolation``, or Keras's
``smart_resize`` for ``crop_to_aspect_ratio``), as float32 in [0, 255]: scaling belongs in
the model (``Rescaling``). Every image is read by ``read_image``, one function, so a limit on
what an image may be is added in one place.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kexp.data.files import display_path
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
# The largest image decoded (Pillow's limit): a larger one -- a few bytes of header claiming
# 100,000 x 100,000 pixels is a decompression bomb -- is refused before it is decoded.
MAX_IMAGE_PIXELS = 89_478_485


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

    def count_samples(self) -> int:
        return len(self.files)

    def _label(self, label: tf.Tensor) -> tf.Tensor:
        import tensorflow as tf

        if self.label_mode == "categorical":
            return tf.one_hot(label, len(self.class_names or []), dtype=tf.float32)
        if self.label_mode == "binary":
            return tf.cast(tf.expand_dims(label, -1), tf.float32)
        return label

    def load(self, path: tf.Tensor) -> tf.Tensor:
        raise NotImplementedError

    def columns(self) -> tuple:
        """The per-file tensors a pass gathers from in its slot order: the paths, and the
        labels (already one-hot or a column, as ``label_mode`` says) when there are any."""
        import tensorflow as tf

        paths = tf.constant(self.files)
        if self.labels is None or self.label_mode is None:
            return (paths,)
        return paths, self._label(tf.constant(self.labels, tf.int64))

    def sample(self, path: tf.Tensor, *rest: tf.Tensor) -> Any:
        """A gathered ``(path, label, ...)`` -> ``(sample, label, ...)`` (or the sample alone):
        the only per-file work of a pass."""
        return (self.load(path), *rest) if rest else self.load(path)

    def read(self, order: tf.Tensor, sequential: bool) -> tf.data.Dataset:
        import tensorflow as tf

        parts = tuple(tf.gather(column, order) for column in self.columns())
        return tf.data.Dataset.from_tensor_slices(parts).map(
            self.sample, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

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
                self.load(tf.constant(path)).numpy()
            except (tf.errors.OpError, ValueError) as exc:
                return f"{display_path(path)}: cannot read this file ({error_line(exc)})."
        return None


@dataclass
class ImageFolder(_Folder):
    image_size: tuple[int, int] = (256, 256)
    channels: int = 3
    interpolation: str = "bilinear"
    crop_to_aspect_ratio: bool = False
    pad_to_aspect_ratio: bool = False

    def load(self, path: tf.Tensor) -> tf.Tensor:
        return read_image(path, image_size=self.image_size, channels=self.channels,
                          interpolation=self.interpolation,
                          crop_to_aspect_ratio=self.crop_to_aspect_ratio,
                          pad_to_aspect_ratio=self.pad_to_aspect_ratio)


@dataclass
class TextFolder(_Folder):
    max_length: int | None = None

    def load(self, path: tf.Tensor) -> tf.Tensor:
        import tensorflow as tf

        text = tf.io.read_file(path)
        if self.max_length is not None:
            text = tf.strings.substr(text, 0, self.max_length)
        return text


def read_image(path: tf.Tensor, *, image_size: tuple[int, int], channels: int,
               interpolation: str = "bilinear", crop_to_aspect_ratio: bool = False,
               pad_to_aspect_ratio: bool = False) -> tf.Tensor:
    """One image file -> float32 ``(height, width, channels)`` in [0, 255], as Keras's
    ``image_dataset_from_directory`` loads it. The only place kexp decodes an image file."""
    import tensorflow as tf

    data = tf.io.read_file(path)
    small_enough = _header_pixels(data) <= float(MAX_IMAGE_PIXELS)
    if tf.executing_eagerly():  # `kexp predict`, and `locate_error` naming a file
        tf.debugging.assert_equal(
            small_enough, True, message=f"its header claims more than {MAX_IMAGE_PIXELS:,} "
            "pixels (a decompression bomb?); it is not decoded")
    else:  # in a pipeline: an empty string in its place fails to decode (cheaper than an
        # assertion per image); the run's failure is then explained by `locate_error`
        data = tf.where(small_enough, data, b"")
    image = _decode(data, channels)
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


def _header_pixels(data: tf.Tensor) -> tf.Tensor:
    """width x height as the file's header states it (PNG, GIF, BMP, JPEG), read without
    decoding (float64); 0 when the file is none of these (decoding then reports it).

    Run once per image inside the input pipeline, so it is a handful of ops and no control
    flow: each op of a ``tf.data`` function costs a few microseconds per image, and a
    ``tf.case`` of the formats made each iterator (once per epoch) about 0.1 s slower. Three
    products of the first 26 bytes with constant matrices give every format's magic number,
    width and height at once (a BMP's height is signed: its absolute value is the smaller of
    ``h`` and ``2**32 - h``); a JPEG's size, in a frame header anywhere in the file, is read by
    ``extract_jpeg_shape`` from the file if it is a JPEG, else from a 27-byte 1x1 JPEG."""
    import tensorflow as tf

    magic_rows, width_rows, height_rows = _header_matrices()
    head = tf.cast(tf.io.decode_raw(tf.reshape(data, [1]), tf.uint8, fixed_length=26),
                   tf.float64)  # (1, 26); zeros past the end of a shorter file
    height = tf.matmul(head, height_rows)
    sizes = tf.matmul(head, width_rows) * tf.minimum(height, 2.0**32 - height)
    known = tf.equal(tf.matmul(head, magic_rows), _MAGIC)  # (1, 4): PNG, GIF, BMP, JPEG
    is_jpeg = known[0, 3]
    jpeg = tf.cast(tf.image.extract_jpeg_shape(tf.where(is_jpeg, data, _TINY_JPEG)),
                   tf.float64)
    return tf.reduce_sum(tf.where(known, sizes, 0.0)) + tf.where(is_jpeg, jpeg[0] * jpeg[1],
                                                                 0.0)


_MAGIC = (0x89504E47, 0x474946, 0x424D, 0xFFD8)  # "\x89PNG", "GIF", "BM", a JPEG's SOI


def _header_matrices() -> tuple:
    """``(magic, width, height)``: (26, 4) matrices that turn the first 26 bytes of a file
    into each format's (PNG, GIF, BMP, JPEG) magic number, width and height (big- or
    little-endian numbers at fixed offsets; a JPEG's size is elsewhere: zero columns)."""
    import numpy as np

    rows = [np.zeros((26, 4)) for _ in range(3)]
    fields = (((0, 4), (16, 4), (20, 4), False),  # PNG: magic, IHDR width, height
              ((0, 3), (6, 2), (8, 2), True),  # GIF: logical screen width, height
              ((0, 2), (18, 4), (22, 4), True),  # BMP: BITMAPINFOHEADER width, height
              ((0, 2), None, None, False))  # JPEG: SOI only
    for column, (*places, little) in enumerate(fields):
        for matrix, place in zip(rows, places, strict=True):
            if place is None:
                continue
            start, size = place
            for i in range(size):  # magic numbers are big-endian in every format
                little_here = little and matrix is not rows[0]
                matrix[start + i, column] = 256.0 ** (i if little_here else size - 1 - i)
    return tuple(rows)


# A minimal 1x1 JPEG (SOI, frame header, scan header, EOI): what ``extract_jpeg_shape``
# reads when the image is not one (the smaller, the cheaper).
_TINY_JPEG = bytes.fromhex("ffd8ffc0000b080001000101011100ffda0008010100003f00ffd9")


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
