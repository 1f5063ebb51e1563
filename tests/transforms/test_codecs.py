"""Codecs, content sniffing and hash algorithms on their own."""

from __future__ import annotations

import gzip
import io
import os

import pytest
import zstandard

from vertexflow.errors import ConfigError, CorruptInput
from vertexflow.transforms.compression import (DECODE_OUTPUT, FRAME_BYTES, Codec, decoder, encoder, parse_codec,
                                               sniff)
from vertexflow.transforms.hashing import Digester, parse_algorithms


def encode(codec: Codec, data: bytes, step: int = 1 << 20) -> bytes:
    enc = encoder(codec)
    out = [piece for i in range(0, len(data), step) for piece in enc.feed(data[i:i + step])]
    return b"".join(out + enc.finish())


def decode(name: str, data: bytes, step: int = 3 << 20) -> tuple[bytes, int]:
    dec = decoder(name)
    out, largest = [], 0
    for i in range(0, len(data), step):
        dec.push(data[i:i + step])
        while dec.pending:
            piece = dec.pull()
            largest = max(largest, len(piece))
            out.append(piece)
    dec.finish()
    return b"".join(out), largest


@pytest.mark.parametrize("codec", [Codec("zstd", 1), Codec("zstd", 19), Codec("gzip", 1), Codec("gzip", 9)])
@pytest.mark.parametrize("data", [b"", b"x", os.urandom(300_000), b"abc" * 3_000_000])
def test_codecs_round_trip(codec: Codec, data: bytes) -> None:
    assert decode(codec.name, encode(codec, data))[0] == data


def test_output_is_readable_by_standard_tools() -> None:
    data = b"standard " * 2_000_000  # several zstd frames
    z = encode(Codec("zstd", 3), data)
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(z), read_across_frames=True)
    assert reader.read() == data
    assert gzip.decompress(encode(Codec("gzip", 6), data)) == data


def test_foreign_files_decode_too() -> None:
    data = os.urandom(1000) * 5000  # 5 MB in one foreign frame
    assert decode("zstd", zstandard.ZstdCompressor().compress(data))[0] == data
    assert decode("gzip", gzip.compress(data[:100_000]) + gzip.compress(data[:7]))[0] == data[:100_000] + data[:7]


def test_decoding_a_bomb_keeps_each_step_bounded() -> None:
    zeros = encode(Codec("zstd", 3), bytes(64 << 20))  # 64 MiB in a few KB
    assert len(zeros) < 64 * 1024
    out, largest = decode("zstd", zeros)
    assert len(out) == 64 << 20 and largest <= DECODE_OUTPUT + FRAME_BYTES
    out, largest = decode("gzip", encode(Codec("gzip", 9), bytes(64 << 20)))
    assert len(out) == 64 << 20 and largest <= DECODE_OUTPUT


@pytest.mark.parametrize("name", ["zstd", "gzip"])
def test_corruption_and_truncation_are_caught(name: str) -> None:
    good = encode(Codec(name, 3), b"hello world " * 50_000)
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 1
    for bad in (bytes(flipped), good[:-4], b"", b"not compressed at all"):
        with pytest.raises(CorruptInput):
            decode(name, bad)


@pytest.mark.parametrize("head,kind", [
    (b"\xff\xd8\xff\xe0\x00\x10JFIF", "jpeg"), (b"\x89PNG\r\n\x1a\n\x00\x00", "png"), (b"GIF89a\x01\x00", "gif"),
    (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "webp"), (b"\x00\x00\x00\x20ftypisom", "mp4"), (b"\x00\x00\x00\x08wide", "mov"),
    (b"\x1a\x45\xdf\xa3\x01\x00", "matroska"), (b"ID3\x03\x00", "mp3"), (b"\xff\xfb\x90\x00", "mpeg-audio"),
    (b"PK\x03\x04\x14\x00", "zip"), (b"\x1f\x8b\x08\x00", "gzip"), (b"\x28\xb5\x2f\xfd\x00", "zstd"),
    (b"\xfd7zXZ\x00\x00", "xz"), (b"BZh91AY", "bzip2"), (b"7z\xbc\xaf\x27\x1c\x00", "7z"),
    (b"Rar!\x1a\x07\x00", "rar"), (b"OggS\x00", "ogg"), (b"fLaC\x00", "flac"),
    (b"hello, world", None), (b"", None), (b"\xff\xd8", None), (b"%PDF-1.7", None),
])
def test_sniff(head: bytes, kind: str | None) -> None:
    assert sniff(head) == kind


def test_parse_codec() -> None:
    assert parse_codec("zstd:3") == Codec("zstd", 3)
    assert parse_codec("ZSTD") == Codec("zstd", 3) and parse_codec("gzip") == Codec("gzip", 6)
    for bad in ("zstd:20", "gzip:0", "lz4", "zstd:x", ""):
        with pytest.raises(ConfigError):
            parse_codec(bad)


def test_parse_algorithms() -> None:
    assert parse_algorithms("md5") == ("sha256", "md5")
    assert parse_algorithms("xxh128, blake3,sha256") == ("sha256", "xxh128", "blake3")
    with pytest.raises(ConfigError, match="unknown algorithm 'crc32'"):
        parse_algorithms("sha256,crc32")


def test_digester_copy_is_independent() -> None:
    d = Digester(("sha256", "md5"))
    d.update(b"abc")
    c = d.copy()
    c.update(b"def")
    assert d.size == 3 and c.size == 6 and d.hexdigests() != c.hexdigests()
