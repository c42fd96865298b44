"""What an image file claims to be, read from its first bytes in Python, without decoding it.

``tf.io.decode_image`` allocates what a file's header claims: a PNG of a few hundred bytes
claiming 100,000 x 100,000 pixels (a decompression bomb) takes 30 GB, and a GIF's frames
may each claim more than its screen. It also decodes WebP, whatever the file is called. So
``image_directory`` reads each file's header here once, when a pipeline is made, and decodes
only JPEG, PNG, GIF and BMP files of at most ``MAX_IMAGE_PIXELS`` (Pillow's limit). Each
header is read the way the decoder TensorFlow uses reads it (libjpeg's marker walk, libpng's
IHDR, giflib's records, TensorFlow's BMP fields), and ``Header.end`` says how many leading
bytes state the format and the size: the pipeline decodes a file only if a keyed hash of
those bytes is still the one computed here (``kexp.data.folders.read_image``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace
from typing import BinaryIO

__all__ = ["MAX_IMAGE_PIXELS", "Header", "read_header"]

# The largest image decoded (Pillow's limit): a larger one -- a few bytes of header claiming
# 100,000 x 100,000 pixels is a decompression bomb -- is refused before it is decoded.
MAX_IMAGE_PIXELS = 89_478_485
# A JPEG's frame header (its size) must come within its first 16 MB (metadata segments are
# at most 64 KB each; libjpeg reads them all before the frame header).
_JPEG_SEARCH = 1 << 24
# A GIF's whole file is checked: giflib reads every frame's descriptor (and allocates each
# frame) before TensorFlow keeps the first. `substr` stops at the end of the file.
_WHOLE_FILE = (1 << 31) - 1
_TOO_LARGE = (f"its header claims more than {MAX_IMAGE_PIXELS:,} pixels (a decompression "
              f"bomb?); it is not decoded")


@dataclass(frozen=True)
class Header:
    """``end``: how many leading bytes state the format and the size; ``pixels``: the size
    they state (None: unknown); ``refusal``: why the file is not decoded (None: it may be);
    ``head``: the ``end`` bytes, as read."""

    end: int
    pixels: int | None = None
    refusal: str | None = None
    head: bytes = b""


def read_header(path: str) -> Header:
    """The header of the image file at ``path`` (an ``OSError`` if it cannot be opened)."""
    with open(path, "rb") as file:
        data = _Bytes(file)
        head = data.at(0, 8)
        for magic, parse in _FORMATS:
            if head.startswith(magic):
                header = parse(data)
                return replace(header, head=data.data[:header.end])
    return Header(0, refusal="it is not a JPEG, PNG, GIF or BMP image")


def _sized(end: int, pixels: int) -> Header:
    return Header(end, pixels, None if pixels <= MAX_IMAGE_PIXELS else _TOO_LARGE)


def _truncated(kind: str) -> Header:
    return Header(0, refusal=f"its {kind} header is truncated or malformed; it is not decoded")


class _Bytes:
    """A file's bytes from its start, read only as far as they are asked for."""

    def __init__(self, file: BinaryIO) -> None:
        self.file, self.data, self.done = file, b"", False

    def _more(self, at_least: int) -> bool:
        chunk = b"" if self.done else self.file.read(max(at_least, 1 << 16))
        self.done = len(chunk) < max(at_least, 1 << 16)
        self.data += chunk
        return bool(chunk)

    def at(self, start: int, size: int) -> bytes:
        """Bytes ``[start, start + size)`` (fewer at the end of the file)."""
        while start + size > len(self.data) and self._more(start + size - len(self.data)):
            pass
        return self.data[start:start + size]

    def find(self, byte: bytes, start: int) -> int:
        """The first ``byte`` at or after ``start``, or -1."""
        while (found := self.data.find(byte, start)) < 0:
            start = max(start, len(self.data))
            if not self._more(1):
                return -1
        return found

    def whole(self) -> bytes:
        while self._more(1 << 20):
            pass
        return self.data


def _png(data: _Bytes) -> Header:
    """libpng: the first chunk is IHDR, width and height big-endian at bytes 16 and 20."""
    ihdr = data.at(8, 16)
    if len(ihdr) < 16 or ihdr[4:8] != b"IHDR":
        return _truncated("PNG")
    width, height = struct.unpack(">II", ihdr[8:])
    return _sized(24, width * height)


def _bmp(data: _Bytes) -> Header:
    """TensorFlow's BMP decoder: width and height, signed little-endian, at 18 and 22."""
    sizes = data.at(18, 8)
    if len(sizes) < 8:
        return _truncated("BMP")
    width, height = struct.unpack("<ii", sizes)
    return _sized(26, abs(width) * abs(height))


def _gif(data: _Bytes) -> Header:
    """giflib: the logical screen, then every frame's descriptor (each frame is allocated
    at its own size): the larger of the screen and the frames' total."""
    screen = data.at(6, 7)
    if len(screen) < 7:
        return _truncated("GIF")
    width, height, flags = *struct.unpack("<HH", screen[:4]), screen[4]
    pos, frames = 13 + _colour_table(flags), 0
    while (kind := data.at(pos, 1)) in (b"\x2c", b"\x21"):
        if kind == b"\x21":  # an extension: its label, then its data blocks
            pos = _skip_blocks(data, pos + 2)
            continue
        descriptor = data.at(pos + 1, 9)  # left, top, width, height, flags
        if len(descriptor) < 9:
            break
        frame_width, frame_height = struct.unpack("<HH", descriptor[4:8])
        frames += frame_width * frame_height
        pos = _skip_blocks(data, pos + 11 + _colour_table(descriptor[8]))  # + LZW code size
    data.whole()
    return _sized(_WHOLE_FILE, max(width * height, frames))


def _colour_table(flags: int) -> int:
    return 3 << ((flags & 7) + 1) if flags & 0x80 else 0


def _skip_blocks(data: _Bytes, pos: int) -> int:
    """Past a GIF's data sub-blocks (each a length byte, then that many bytes; 0 ends)."""
    while (size := data.at(pos, 1)) not in (b"", b"\0"):
        pos += 1 + size[0]
    return pos + 1


# libjpeg's frame headers (SOF0-SOF15 but DHT, JPG and DAC), which state the image size.
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RST0-RST7: no length field


def _jpeg(data: _Bytes) -> Header:
    """libjpeg's ``read_markers``: from after SOI, each marker (bytes before its 0xFF and
    0xFF fill bytes skipped; ``FF 00`` is not a marker) up to the first frame header, whose
    height and width follow its length and precision; image data or the end of the image
    before it is an error."""
    pos = 2
    while 0 <= pos < _JPEG_SEARCH:
        pos = data.find(b"\xff", pos)
        while pos >= 0 and data.at(pos + 1, 1) == b"\xff":
            pos += 1
        marker = data.at(pos + 1, 1) if pos >= 0 else b""
        if not marker:
            break
        pos, code = pos + 1, marker[0]
        if code == 0 or code in _STANDALONE:
            continue
        if code in _SOF:
            frame = data.at(pos + 1, 7)  # length, precision, height, width
            if len(frame) < 7:
                break
            height, width = struct.unpack(">HH", frame[3:])
            return _sized(pos + 8, height * width)
        if code in (0xD8, 0xD9, 0xDA):  # SOI again, EOI or SOS before a frame header
            break
        length = data.at(pos + 1, 2)
        if len(length) < 2:
            break
        pos += 1 + max(int.from_bytes(length, "big"), 2)
    return _truncated("JPEG")


# TensorFlow's ``decode_image`` tells formats by these first bytes.
_FORMATS = ((b"\xff\xd8\xff", _jpeg), (b"\x89PNG\r\n\x1a\n", _png), (b"GIF8", _gif),
            (b"BM", _bmp))
