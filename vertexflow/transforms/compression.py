"""The compress stage's codecs: gzip (levels 1-9) and zstd (levels 1-19).

A compressed object is stored at ``key + suffix`` (``.zst``, ``.gz``), which
is how a reader knows its codec: no backend stores free-form metadata yet,
and both formats name themselves in their first bytes anyway. What is written
is a plain file of its format (``zstd -d``, ``gunzip`` read it):

* zstd: a sequence of frames, each covering at most :data:`FRAME_BYTES` of
  input and ending with its content checksum (XXH64), so that a reader's
  output per step stays bounded (one frame) however compressible the data;
* gzip: one member (CRC-32 and length in its trailer; header mtime 0, so the
  same input always gives the same bytes).

Encoders and decoders keep per-stream state: one object per stream, used by
one thread at a time (a ``ZstdCompressor`` shared between threads crashes).
Their methods are synchronous; the stage runs them in worker threads.

Already-compressed content (JPEG, PNG, GIF, WebP, MP4/MOV/HEIC, WebM/MKV,
AVI, MP3, AAC, Ogg, FLAC, ZIP and its families, gzip, zstd, xz, bzip2, 7z,
RAR, LZ4, WOFF2) is recognised by its first bytes (:func:`sniff`).
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

import zstandard

from ..errors import ConfigError, CorruptInput

#: Input bytes per zstd frame. Bounds what one decode step can produce; small
#: enough for flat memory, large enough that restarting the window costs
#: little ratio (zstd's window at levels 1-5 is 1-2 MiB).
FRAME_BYTES = 4 * 1024 * 1024
#: Compressed input fed to a decoder per call: with a zstd frame's output
#: bounded by FRAME_BYTES this only matters for foreign single-frame files.
DECODE_SLICE = 256 * 1024
#: A decode step returns about this much output (plus at most one frame).
DECODE_OUTPUT = 4 * 1024 * 1024
#: First bytes looked at to recognise already-compressed content.
SNIFF_BYTES = 16

SUFFIXES = {"zstd": ".zst", "gzip": ".gz"}
CODEC_OF_SUFFIX = {suffix: name for name, suffix in SUFFIXES.items()}
LEVELS = {"zstd": (1, 19), "gzip": (1, 9)}
#: zstd 3 is zstd's own default (fast, ~3x on text); gzip 6 is gzip's.
DEFAULT_LEVEL = {"zstd": 3, "gzip": 6}


#: Input bytes per second on one core, text-like data (``benchmarks/stages.py``
#: on the 2-core development machine); only used to guess whether a buffer is
#: worth a thread hand-off.
_ENCODE_SPEED = {"zstd": 320e6, "gzip": 40e6}
_DECODE_SPEED = {"zstd": 300e6, "gzip": 100e6}  # compressed input, at a ~3x ratio


def encode_seconds(codec: Codec, n: int) -> float:
    # zstd slows about in proportion to its level (320 MB/s at 1, 160 at 3, 49 at 9)
    return n * (codec.level if codec.name == "zstd" else 1) / _ENCODE_SPEED[codec.name]


def decode_seconds(codec_name: str, n: int) -> float:
    return n / _DECODE_SPEED[codec_name]


@dataclass(frozen=True, slots=True)
class Codec:
    name: str  # "zstd" or "gzip"
    level: int

    @property
    def suffix(self) -> str:
        return SUFFIXES[self.name]

    def __str__(self) -> str:
        return f"{self.name}:{self.level}"


def parse_codec(text: str) -> Codec:
    """``zstd:3``, ``gzip:9``, or a bare ``zstd`` / ``gzip`` (default level)."""
    m = re.fullmatch(r"\s*(zstd|gzip)(?::(\d+))?\s*", text.lower())
    if not m:
        raise ConfigError(f"--compress {text!r}: use zstd[:1-19] or gzip[:1-9], e.g. zstd:3")
    name = m.group(1)
    level = int(m.group(2)) if m.group(2) else DEFAULT_LEVEL[name]
    low, high = LEVELS[name]
    if not low <= level <= high:
        raise ConfigError(f"--compress {text!r}: {name} levels are {low}-{high}")
    return Codec(name, level)


# -- recognising already-compressed content ------------------------------------

_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\xff\xd8\xff", "jpeg"),
    (0, b"\x89PNG\r\n\x1a\n", "png"),
    (0, b"GIF87a", "gif"),
    (0, b"GIF89a", "gif"),
    (4, b"ftyp", "mp4"),  # MP4, MOV, M4A, HEIC, AVIF, 3GP
    (4, b"moov", "mov"),
    (4, b"mdat", "mov"),
    (4, b"wide", "mov"),
    (0, b"\x1a\x45\xdf\xa3", "matroska"),  # WebM, MKV
    (0, b"ID3", "mp3"),
    (0, b"OggS", "ogg"),
    (0, b"fLaC", "flac"),
    (0, b"PK\x03\x04", "zip"),  # also docx/xlsx/jar/apk/epub
    (0, b"PK\x05\x06", "zip"),
    (0, b"PK\x07\x08", "zip"),
    (0, b"\x1f\x8b", "gzip"),
    (0, b"\x28\xb5\x2f\xfd", "zstd"),
    (0, b"\xfd7zXZ\x00", "xz"),
    (0, b"BZh", "bzip2"),
    (0, b"7z\xbc\xaf\x27\x1c", "7z"),
    (0, b"Rar!\x1a\x07", "rar"),
    (0, b"\x04\x22\x4d\x18", "lz4"),
    (0, b"wOF2", "woff2"),
)
# MPEG audio frame sync: MP3 (FB, FA, F3, F2) and AAC ADTS (F1, F9) after 0xFF.
_MPEG_SYNC = frozenset(b"\xfb\xfa\xf3\xf2\xf1\xf9")


def sniff(head: bytes) -> str | None:
    """The already-compressed format ``head`` (the first bytes) starts, or None."""
    for offset, magic, name in _MAGIC:
        if head[offset:offset + len(magic)] == magic:
            return name
    if head[:4] == b"RIFF" and head[8:12] in (b"WEBP", b"AVI "):
        return "webp" if head[8:12] == b"WEBP" else "avi"
    if len(head) >= 2 and head[0] == 0xFF and head[1] in _MPEG_SYNC:
        return "mpeg-audio"
    return None


# -- encoders ------------------------------------------------------------------

class Encoder:
    """Compresses one stream: ``feed`` each buffer, then ``finish`` once.

    Both return the output as a list of pieces, not joined: joining would
    copy each buffer once more.
    """

    def feed(self, data: bytes | memoryview) -> list[bytes]:
        raise NotImplementedError

    def finish(self) -> list[bytes]:
        raise NotImplementedError


class ZstdEncoder(Encoder):
    def __init__(self, level: int) -> None:
        self._cctx = zstandard.ZstdCompressor(level=level, write_checksum=True)
        self._frame: zstandard.ZstdCompressionObj | None = None
        self._in_frame = 0
        self._frames = 0

    def feed(self, data: bytes | memoryview) -> list[bytes]:
        out = []
        view = memoryview(data)
        while view:
            if self._frame is None:
                self._frame = self._cctx.compressobj()
                self._in_frame = 0
            piece = view[:FRAME_BYTES - self._in_frame]
            out.append(self._frame.compress(piece))
            self._in_frame += len(piece)
            view = view[len(piece):]
            if self._in_frame >= FRAME_BYTES:
                out.append(self._end_frame())
        return [o for o in out if o]

    def _end_frame(self) -> bytes:
        assert self._frame is not None
        tail = self._frame.flush()
        self._frame = None
        self._frames += 1
        return tail

    def finish(self) -> list[bytes]:
        if self._frame is not None:
            return [self._end_frame()]
        if self._frames == 0:  # empty input still makes one valid (empty) frame
            return [self._cctx.compress(b"")]
        return []


class GzipEncoder(Encoder):
    def __init__(self, level: int) -> None:
        self._z = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)

    def feed(self, data: bytes | memoryview) -> list[bytes]:
        out = self._z.compress(data)
        return [out] if out else []

    def finish(self) -> list[bytes]:
        return [self._z.flush()]


def encoder(codec: Codec) -> Encoder:
    return ZstdEncoder(codec.level) if codec.name == "zstd" else GzipEncoder(codec.level)


# -- decoders ------------------------------------------------------------------

class Decoder:
    """Decompresses one stream with bounded output per step.

    ``push`` compressed bytes; call ``pull`` while ``pending`` (each returns
    about :data:`DECODE_OUTPUT` bytes or less); ``finish`` at the end checks
    that the stream ended cleanly. Raises :class:`CorruptInput`.
    """

    def __init__(self) -> None:
        self._queue: list[memoryview] = []

    @property
    def pending(self) -> bool:
        return bool(self._queue)

    def push(self, data: bytes | memoryview) -> None:
        if data:
            self._queue.append(memoryview(data))

    def _take(self, limit: int) -> memoryview:
        head = self._queue[0]
        piece = head[:limit]
        if len(piece) == len(head):
            self._queue.pop(0)
        else:
            self._queue[0] = head[len(piece):]
        return piece

    def _unread(self, data: bytes) -> None:
        if data:
            self._queue.insert(0, memoryview(data))

    def pull(self) -> bytes:
        raise NotImplementedError

    def finish(self) -> None:
        raise NotImplementedError


class ZstdDecoder(Decoder):
    def __init__(self) -> None:
        super().__init__()
        self._dctx = zstandard.ZstdDecompressor()
        self._frame: zstandard.ZstdDecompressionObj | None = None
        self._frames = 0

    def pull(self) -> bytes:
        return b"".join(self.pieces())

    def pieces(self, slice_size: int = DECODE_SLICE) -> list[bytes]:
        """What :meth:`pull` returns, unjoined (a reader that takes pieces saves a copy of every byte);
        ``slice_size`` compressed bytes are fed per decompress call."""
        out: list[bytes] = []
        produced = 0
        try:
            while self._queue and produced < DECODE_OUTPUT:
                if self._frame is None:
                    self._frame = self._dctx.decompressobj()
                data = self._frame.decompress(self._take(slice_size))
                if data:
                    out.append(data)
                    produced += len(data)
                if self._frame.eof:
                    self._unread(self._frame.unused_data)  # the start of the next frame
                    self._frame = None
                    self._frames += 1
        except zstandard.ZstdError as exc:
            raise CorruptInput(f"zstd: {exc}") from exc
        return out

    def finish(self) -> None:
        if self._frame is not None:
            raise CorruptInput("zstd: the stream ends inside a frame (truncated)")
        if self._frames == 0:
            raise CorruptInput("zstd: no frame (empty, or not zstd)")


class GzipDecoder(Decoder):
    def __init__(self) -> None:
        super().__init__()
        self._z: zlib._Decompress | None = None
        self._members = 0
        #: the last call filled its output limit: zlib may hold more output
        self._more = False

    @property
    def pending(self) -> bool:
        return bool(self._queue) or self._more

    def pull(self) -> bytes:
        out: list[bytes] = []
        produced = 0
        try:
            while (self._queue or self._more) and produced < DECODE_OUTPUT:
                if self._z is None:
                    self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
                want = DECODE_OUTPUT - produced
                data = self._z.decompress(self._take(DECODE_SLICE) if self._queue else b"", want)
                self._more = len(data) == want
                self._unread(self._z.unconsumed_tail)  # held back by the output limit
                out.append(data)
                produced += len(data)
                if self._z.eof:
                    self._unread(self._z.unused_data)  # concatenated members are one file
                    self._z = None
                    self._members += 1
                    self._more = False
        except zlib.error as exc:
            raise CorruptInput(f"gzip: {exc}") from exc
        return b"".join(out)

    def finish(self) -> None:
        if self._z is not None:
            raise CorruptInput("gzip: the stream ends inside a member (truncated)")
        if self._members == 0:
            raise CorruptInput("gzip: no member (empty, or not gzip)")


def decoder(codec_name: str) -> Decoder:
    return ZstdDecoder() if codec_name == "zstd" else GzipDecoder()
