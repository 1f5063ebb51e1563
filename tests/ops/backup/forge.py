"""Backups written by hand: damaged copies of real ones, and self-consistent malicious ones."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import zstandard

from vertexflow.ops.backup.metadata import (
    MEMBERS,
    METADATA,
    SHA256SUMS,
    Metadata,
    StorageSection,
    StoredFile,
    backup_id,
    member_line,
    part_name,
)


def folder_of(dest: Path) -> Path:
    (folder,) = [p for p in dest.iterdir() if p.is_dir()]
    return folder


def read_meta(folder: Path) -> Metadata:
    return Metadata.from_json((folder / METADATA).read_bytes(), where="test")


def write_meta(folder: Path, meta: Metadata) -> None:
    """Rewrite metadata.json and SHA256SUMS so that they agree (what a careful tamperer does)."""
    (folder / SHA256SUMS).write_bytes(meta.sha256sums())
    (folder / METADATA).write_bytes(meta.to_json())


def edit_json(folder: Path, change: Callable[[dict], None]) -> None:
    doc = json.loads((folder / METADATA).read_bytes())
    change(doc)
    (folder / METADATA).write_text(json.dumps(doc))


def stored(path: Path) -> StoredFile:
    data = path.read_bytes()
    return StoredFile(path.name, len(data), hashlib.sha256(data).hexdigest())


def truncate_archive(folder: Path, keep: int) -> None:
    """Cut the joined stream to ``keep`` bytes and rewrite parts and metadata consistently."""
    meta = read_meta(folder)
    assert meta.storage is not None
    stream = b"".join((folder / p.name).read_bytes() for p in meta.storage.parts)[:keep]
    for p in meta.storage.parts:
        (folder / p.name).unlink()
    _store_stream(folder, meta, stream)


def _store_stream(folder: Path, meta: Metadata, stream: bytes, **changes: object) -> None:
    s = meta.storage
    assert s is not None
    parts = []
    for i in range(0, max(len(stream), 1), s.chunk_size):
        path = folder / part_name(s.compression, i // s.chunk_size)
        path.write_bytes(stream[i:i + s.chunk_size])
        parts.append(stored(path))
    new = dataclasses.replace(s, parts=tuple(parts), stream_size=len(stream),
                              stream_sha256=hashlib.sha256(stream).hexdigest(), **changes)  # type: ignore[arg-type]
    write_meta(folder, dataclasses.replace(meta, storage=new))


def forge_backup(dest: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], *, codec: str = "zstd",
                 fmt: int = tarfile.PAX_FORMAT) -> Path:
    """A storage backup whose archive (made by tarfile) holds ``members``, with matching metadata."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    raw = buf.getvalue()
    stream = zstandard.ZstdCompressor().compress(raw) if codec == "zstd" else gzip.compress(raw)
    bid = backup_id("storage", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    folder = dest / bid
    folder.mkdir(parents=True)
    lines = b"".join(member_line(hashlib.sha256(d or b"").hexdigest(), i.name) for i, d in members if i.isfile())
    (folder / MEMBERS).write_bytes(lines)
    files = [(i, d) for i, d in members if i.isfile()]
    section = StorageSection(source="forged", compression=codec, level=3, chunk_size=1024 * 1024, parts=(),
                             stream_size=0, stream_sha256="0" * 64, files=len(files),
                             bytes=sum(i.size for i, _ in files), members=stored(folder / MEMBERS))
    meta = Metadata(id=bid, type="storage", created=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
                    vertexflow_version="forged", storage=section)
    _store_stream(folder, meta, stream)
    return folder


def file_member(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def special_member(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, None
