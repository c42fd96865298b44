"""kexp.data.image_headers: the size an image's header states, read as the decoder reads it,
and the files refused before they are decoded (decompression bombs, formats kexp does not
list)."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kexp.data.image_headers import MAX_IMAGE_PIXELS, read_header
from tests.test_config_limits import _png_claiming
from tests.test_file_data import bmp


def _jpeg(height: int = 9, width: int = 13, **options) -> bytes:
    import tensorflow as tf

    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return tf.io.encode_jpeg(image, **options).numpy()


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def _with_sof(jpeg: bytes, height: int, width: int) -> bytes:
    """``jpeg`` with its frame header claiming ``height`` x ``width``."""
    at = jpeg.index(b"\xff\xc0")
    return jpeg[:at + 5] + struct.pack(">HH", height, width) + jpeg[at + 9:]


# An APP1 (EXIF) segment holding a thumbnail's SOI and frame header: a reader that searched
# for frame headers instead of walking the markers would take the thumbnail's size.
_THUMBNAIL = _segment(0xE1, b"Exif\0\0" + b"\xff\xd8\xff\xc0\x00\x11\x08\x00\x04\x00\x04"
                      + bytes(60))


def _gif(screen: tuple[int, int], frames: list[tuple[int, int]]) -> bytes:
    """A GIF whose screen and frame descriptors claim these sizes (each frame's data is a
    few bytes)."""
    out = b"GIF89a" + struct.pack("<HHBBB", *screen, 0x80, 0, 0) + bytes([0, 0, 0, 255] * 2)[:6]
    for width, height in frames:
        out += b"\x21\xf9\x04\x00\x00\x00\x00\x00"  # a graphic control extension
        out += b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00"
    return out + b"\x3b"


def _animated_gif() -> bytes:
    from PIL import Image

    frames = [Image.new("RGB", (6, 4), (i * 60, 0, 255 - i * 60)) for i in range(3)]
    frames[1].paste((9, 9, 9), (1, 1, 3, 3))
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=10)
    return buffer.getvalue()


def _samples() -> dict[str, bytes]:
    import tensorflow as tf

    jpeg = _jpeg()
    image = np.random.default_rng(1).integers(0, 256, (5, 7, 4), dtype=np.uint8)
    return {
        "a.png": tf.io.encode_png(image).numpy(),
        "a.jpg": jpeg,
        "progressive.jpg": _jpeg(17, 3, progressive=True),
        "exif.jpg": jpeg[:2] + _THUMBNAIL + _segment(0xFE, b"a comment")
        + b"\xff\xff\xff" + jpeg[2:],  # fill bytes before a marker
        "a.gif": _animated_gif(),
        "a.bmp": bmp(3, 5),
        "bottom_up.bmp": bmp(4, 2),
    }


def _decoded_pixels(data: bytes) -> int:
    import tensorflow as tf

    image = tf.io.decode_image(data, channels=3, expand_animations=False)
    return int(image.shape[0] * image.shape[1])


def _write(tmp_path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def test_each_header_states_the_size_tensorflow_decodes(tmp_path):
    """(A GIF's: every frame's, as giflib allocates them all before TensorFlow keeps the
    first.)"""
    import tensorflow as tf

    for name, data in _samples().items():
        header = read_header(_write(tmp_path, name, data))
        assert header.refusal is None, name
        frames = tf.io.decode_image(data).shape[0] if name.endswith(".gif") else 1
        assert header.pixels == _decoded_pixels(data) * frames, name
        assert header.head == data[:header.end] and header.end <= len(data) or name == "a.gif"
    gif = read_header(_write(tmp_path, "b.gif", _samples()["a.gif"]))
    assert gif.head == _samples()["a.gif"]  # every frame counts: the whole file is checked
    # the frame header after a thumbnail's: the image's own size, not the thumbnail's
    exif = read_header(_write(tmp_path, "c.jpg", _samples()["exif.jpg"]))
    assert exif.pixels == 9 * 13 and exif.end > len(_THUMBNAIL)


@pytest.mark.parametrize("name, data, words", [
    ("bomb.png", _png_claiming(100_000, 100_000), "claims more than 89,478,485 pixels"),
    ("bomb.bmp", b"BM" + bytes(16) + struct.pack("<ii", 100_000, -100_000) + bytes(30),
     "claims more than"),
    ("screen.gif", _gif((60_000, 60_000), [(1, 1)]), "claims more than"),
    ("frame.gif", _gif((1, 1), [(60_000, 60_000)]), "claims more than"),
    ("frames.gif", _gif((100, 100), [(10_000, 1_000)] * 9), "claims more than"),
    ("webp.png", b"RIFF\x2e\0\0\0WEBPVP8 " + bytes(40), "not a JPEG, PNG, GIF or BMP image"),
    ("text.jpg", b"not an image", "not a JPEG, PNG, GIF or BMP image"),
    ("short.png", b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR", "PNG header is truncated"),
    ("no_frame.jpg", b"\xff\xd8" + _segment(0xDA, bytes(10)) + b"\xff\xd9",
     "JPEG header is truncated"),
])
def test_bombs_and_other_formats_are_refused_before_decoding(tmp_path, name, data, words):
    header = read_header(_write(tmp_path, name, data))
    assert header.refusal is not None and words in header.refusal


def test_a_jpeg_bomb_is_found_behind_its_metadata(tmp_path):
    jpeg = _jpeg()
    bomb = _with_sof(jpeg, 65_535, 65_535)
    hidden = bomb[:2] + _THUMBNAIL + bomb[2:]  # a small "frame header" inside the EXIF
    for data in (bomb, hidden):
        header = read_header(_write(tmp_path, "bomb.jpg", data))
        assert header.pixels == 65_535**2 > MAX_IMAGE_PIXELS
        assert "claims more than" in header.refusal


def _mutations():
    samples = _samples()
    return st.tuples(st.sampled_from(sorted(samples)),
                     st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=4)
                     ).map(lambda t: (t[0], _mutate(samples[t[0]], t[1])))


def _mutate(data: bytes, changes: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for at, value in changes:
        out[at % len(out)] = value
    return bytes(out)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(case=_mutations())
def test_a_mutated_header_never_lets_a_larger_image_through(tmp_path, case):
    """Whatever a file's first bytes become, a header kexp lets through states at least the
    size TensorFlow then decodes (or the file fails to decode)."""
    import tensorflow as tf

    name, data = case
    header = read_header(_write(tmp_path, name, data))
    if header.refusal is not None:
        return
    assert header.head == data[:header.end]
    try:
        decoded = _decoded_pixels(data)
    except tf.errors.InvalidArgumentError:
        return
    assert decoded <= header.pixels
