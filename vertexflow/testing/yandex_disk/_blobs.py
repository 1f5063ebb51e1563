"""File contents of the emulated disk, stored once per SHA-256.

The real service deduplicates identical files too; here it also makes a
copy of a folder cheap. Blobs are reference counted: the tree holds one
reference per file node, and an upload in flight holds one (a "pin") from
the moment its bytes are complete until its file node is committed.

``MemoryBlobs`` keeps contents in memory; ``DirBlobs`` keeps them as files
under ``<data_dir>/blobs`` (written to ``<data_dir>/tmp`` first, renamed
into place once complete, so a crash never leaves a torn blob).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import anyio

#: Bytes handed to the network per write when serving a download.
READ_CHUNK = 1 << 20
#: Below this, hashing on the event loop is cheaper than a thread hop.
INLINE_HASH = 256 << 10


class Staging:
    """One upload's bytes on their way into the store."""

    def __init__(self) -> None:
        self.size = 0
        self._sha = hashlib.sha256()
        self._md5 = hashlib.md5()

    def _hash(self, chunk: bytes) -> None:
        self._sha.update(chunk)
        self._md5.update(chunk)

    async def write(self, chunk: bytes) -> None:
        raise NotImplementedError

    async def finish(self) -> tuple[str, str]:
        """Store the bytes and pin them; returns ``(sha256, md5)``."""
        raise NotImplementedError

    async def discard(self) -> None:
        """Forget the bytes (after an error or cancellation). Idempotent."""


class BlobStore:
    def __init__(self) -> None:
        self.refs: Counter[str] = Counter()

    def stage(self) -> Staging:
        raise NotImplementedError

    def has(self, sha: str) -> bool:
        raise NotImplementedError

    def read(self, sha: str, offset: int, length: int) -> AsyncIterator[bytes | memoryview]:
        raise NotImplementedError

    def _drop(self, sha: str) -> None:
        raise NotImplementedError

    def incref(self, sha: str) -> None:
        self.refs[sha] += 1

    def decref(self, sha: str) -> None:
        self.refs[sha] -= 1
        if self.refs[sha] <= 0:
            del self.refs[sha]
            self._drop(sha)

    def reset_refs(self, counts: Counter[str]) -> None:
        """Take the counts recomputed from a loaded tree; drop what nothing references."""
        self.refs = Counter(counts)


class _MemoryStaging(Staging):
    def __init__(self, store: MemoryBlobs) -> None:
        super().__init__()
        self._store = store
        self._buf = bytearray()

    async def write(self, chunk: bytes) -> None:
        if len(chunk) >= INLINE_HASH:
            await anyio.to_thread.run_sync(self._hash, chunk)
        else:
            self._hash(chunk)
        self._buf += chunk
        self.size += len(chunk)

    async def finish(self) -> tuple[str, str]:
        sha = self._sha.hexdigest()
        if sha not in self._store.data:
            # the bytearray itself is kept (never mutated again): no second copy
            self._store.data[sha] = self._buf
        self._buf = bytearray()
        self._store.incref(sha)
        return sha, self._md5.hexdigest()

    async def discard(self) -> None:
        self._buf = bytearray()


class MemoryBlobs(BlobStore):
    def __init__(self) -> None:
        super().__init__()
        self.data: dict[str, bytes | bytearray] = {}

    def stage(self) -> Staging:
        return _MemoryStaging(self)

    def has(self, sha: str) -> bool:
        return sha in self.data

    async def read(self, sha: str, offset: int, length: int) -> AsyncIterator[bytes | memoryview]:
        view = memoryview(self.data[sha])
        end = offset + length
        for i in range(offset, end, READ_CHUNK):
            yield view[i:min(i + READ_CHUNK, end)]

    def _drop(self, sha: str) -> None:
        self.data.pop(sha, None)


class _DirStaging(Staging):
    def __init__(self, store: DirBlobs) -> None:
        super().__init__()
        self._store = store
        self._tmp = store.tmp / uuid.uuid4().hex
        self._fd: int | None = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)

    def _write(self, chunk: bytes) -> None:
        assert self._fd is not None
        self._hash(chunk)
        view = memoryview(chunk)
        while view:
            view = view[os.write(self._fd, view):]

    async def write(self, chunk: bytes) -> None:
        await anyio.to_thread.run_sync(self._write, chunk)
        self.size += len(chunk)

    async def finish(self) -> tuple[str, str]:
        sha = self._sha.hexdigest()
        final = self._store.path(sha)

        def install() -> None:
            assert self._fd is not None
            os.close(self._fd)
            self._fd = None
            final.parent.mkdir(exist_ok=True)
            if final.exists():
                os.unlink(self._tmp)
            else:
                os.rename(self._tmp, final)

        await anyio.to_thread.run_sync(install)
        self._store.incref(sha)
        return sha, self._md5.hexdigest()

    async def discard(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._tmp)


class DirBlobs(BlobStore):
    def __init__(self, root: Path) -> None:
        super().__init__()
        self.blobs = root / "blobs"
        self.tmp = root / "tmp"
        self.blobs.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.tmp, ignore_errors=True)  # torn uploads of an earlier run
        self.tmp.mkdir()

    def path(self, sha: str) -> Path:
        return self.blobs / sha[:2] / sha

    def stage(self) -> Staging:
        return _DirStaging(self)

    def has(self, sha: str) -> bool:
        return self.path(sha).exists()

    async def read(self, sha: str, offset: int, length: int) -> AsyncIterator[bytes | memoryview]:
        f = await anyio.to_thread.run_sync(open, self.path(sha), "rb")
        try:
            f.seek(offset)
            remaining = length
            while remaining > 0:
                data = await anyio.to_thread.run_sync(f.read, min(READ_CHUNK, remaining))
                if not data:
                    return
                remaining -= len(data)
                yield data
        finally:
            f.close()

    def _drop(self, sha: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(sha))

    def reset_refs(self, counts: Counter[str]) -> None:
        super().reset_refs(counts)
        for sub in self.blobs.iterdir():
            for blob in sub.iterdir():
                if blob.name not in self.refs:
                    blob.unlink()  # left by a crash between storing and journaling
