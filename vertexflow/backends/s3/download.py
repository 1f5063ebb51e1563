"""Streaming a GET answer, then the rest of the object: in one more streamed GET, or in ranges fetched
in parallel and yielded in order. A streamed answer broken mid-body continues from the last byte that
arrived, in a ranged GET pinned to the same ETag, the running digest carried on."""

from __future__ import annotations

import hashlib
import re
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, aclosing
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc

from ...errors import BackendError, IntegrityError, TransientError
from ...logs import get_logger
from ...model import CRC64NVME, SHA256
from . import checksums
from .common import etag_is_content_md5, off_loop, strip_etag

log = get_logger(__name__)

#: resumes in a row that brought no byte before a read gives up: a link that breaks at every attempt
RESUMES = 4
#: besides, a read may resume once per this many bytes of it: a link that breaks every MiB or so still
#: brings a large object through, and the resumes stay bounded
RESUME_EVERY = 1024 * 1024

_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")

#: reads the next piece of an answer's body, cut to at most n bytes (empty: the body ended)
ReadBody = Callable[[int], Awaitable[bytes]]
#: fetches bytes first-last of the object, as the pieces they arrived in
FetchRange = Callable[[int, int], Awaitable[list[bytes]]]
#: opens a GET of bytes first-last of the object, to be read as it arrives
OpenRange = Callable[[int, int], AbstractAsyncContextManager[ReadBody]]


def span(headers: Mapping[str, str]) -> tuple[int, int, int]:
    """(first byte in the body, byte after its last, object size) of a GET answer.

    A 206 says it in Content-Range (and may come in HTTP chunks, without a
    Content-Length); a 200 holds the whole object, Content-Length long.
    """
    match = _CONTENT_RANGE.match(headers.get("Content-Range") or "")
    if match is None:  # 200: the server sent the whole object
        if "Content-Length" not in headers:
            raise ValueError("the answer has neither Content-Range nor Content-Length")
        length = int(headers["Content-Length"])
        return 0, length, length
    first, last, total = match.groups()
    size = int(total) if total != "*" else int(last) + 1
    return int(first), int(last) + 1, size


def whole_object_check(headers: Mapping[str, str]) -> tuple[Any, str] | None:
    """(running hash, expected hex digest) for an answer that holds a whole object, or None.

    In this order, the first the answer gives: the store's full-object
    CRC64NVME (:mod:`.checksums`: the store checked it against the bytes when
    they were written; ~6 GB/s here), the SHA-256 kept as metadata (~1 GB/s
    with the CPU's SHA instructions), a plain-MD5 ETag (~0.4 GB/s), then a
    stored CRC32C, CRC32 or SHA-256 (a 32-bit CRC after the 128-bit MD5).
    """
    stored = checksums.whole_check(headers)
    if stored is not None and stored[0].name == CRC64NVME:
        return stored
    sha256 = headers.get(f"x-amz-meta-{SHA256}")
    if sha256:
        return hashlib.sha256(), sha256.lower()
    etag = strip_etag(headers.get("ETag"))
    if etag_is_content_md5(etag, headers):
        assert etag is not None
        return hashlib.md5(usedforsecurity=False), etag
    return stored


def check_digest(running: Any, expected: str, describe: Callable[[], str], key: str) -> None:
    """Raise IntegrityError unless the bytes ``running`` hashed match what the server says."""
    if running.hexdigest() != expected:
        raise IntegrityError(f"downloaded bytes have {running.name} {running.hexdigest()}, "
                             f"the server says {expected}", backend=describe(), key=key)


def ranges(start: int, end: int, part_size: int) -> Iterator[tuple[int, int]]:
    for first in range(start, end, part_size):
        yield first, min(end, first + part_size) - 1


@dataclass(slots=True)
class _Slot:
    """One ranged part being fetched in the background."""

    done: anyio.Event = field(default_factory=anyio.Event)
    data: list[bytes] | None = None
    error: BaseException | None = None


class Download:
    """The bytes ``offset``..``end`` of one object: the first answer's body, then prefetched ranges.

    ``headers`` are the first answer's; when that answer holds the whole
    object, its bytes are checked as :func:`whole_object_check` says. When it
    does not, a read of at most ``stream_limit`` bytes gets the rest in one
    more GET (``open_rest``), streamed; a longer one in ranges of
    ``part_size``, ``concurrency`` of them fetched ahead in parallel.
    """

    def __init__(self, *, describe: Callable[[], str], key: str, headers: Mapping[str, str], offset: int, end: int | None,
                 read: ReadBody, fetch: FetchRange, open_rest: OpenRange, stream_limit: int,
                 part_size: int, concurrency: int) -> None:
        self.describe, self.key = describe, key
        try:
            self.start, self.stop, self.total = span(headers)
        except ValueError as exc:
            raise BackendError(f"GetObject: {exc}", backend=describe(), key=key) from None
        self.end = self.total if end is None else min(self.total, end)
        self.offset = offset
        self._read, self._fetch, self._open_rest = read, fetch, open_rest
        #: the rest after the first answer comes in one streamed GET, not in parallel ranges
        self.rest_streamed = self.stop < self.end and self.end - self.start <= stream_limit
        self._part_size, self._concurrency = part_size, concurrency
        #: a broken answer is continued only when the GETs are pinned to the first answer's ETag
        #: (``open_rest`` sends it as If-Match: a changed object fails them, and the object starts again)
        self.resumable = bool(headers.get("ETag"))
        self.resumes_left = RESUMES + (self.end - self.start) // RESUME_EVERY
        #: answers broken mid-body and continued from the last byte that arrived
        self.resumed = 0
        self._hash: Any = None
        self._expected: str | None = None
        #: the digest is checked once the whole object has passed (in the first answer, or after the rest)
        self._check_at = self.total
        if self.start == 0 and self.offset == 0 and self.end == self.total:
            if self.stop == self.total or not headers.get(f"x-amz-meta-{SHA256}"):
                # in one answer; or in several, checked by its plain-MD5 ETag across them (an object with
                # the SHA-256 metadata is checked by the copy engine against it: not hashed twice)
                self._hash, self._expected = whole_object_check(headers) or (None, None)

    @property
    def has_ranges(self) -> bool:
        """True when bytes beyond the first answer come in parallel ranges: :meth:`stream` then needs a task group."""
        return self.stop < self.end and not self.rest_streamed

    async def stream(self, tg: anyio.abc.TaskGroup | None) -> AsyncIterator[bytes]:
        window: deque[_Slot] = deque()
        parts = ranges(self.stop, self.end, self._part_size)

        def refill() -> None:
            while len(window) < self._concurrency:
                bounds = next(parts, None)
                if bounds is None:
                    return
                slot = _Slot()
                assert tg is not None, "has_ranges: a task group is needed"
                tg.start_soon(self._fill_slot, slot, *bounds)
                window.append(slot)

        if not self.rest_streamed:
            refill()  # the parts download while the first body streams
        body_end = min(self.stop, self.end)
        pos = self.start
        async with aclosing(self._body(self._read, pos, body_end)) as pieces:
            async for chunk in pieces:
                if self._hash is not None:
                    self._hash.update(chunk)
                piece = chunk[max(0, self.offset - pos):]  # only when a server ignored Range
                pos += len(chunk)
                if piece:
                    yield piece
        if pos >= self.end:
            self._check()
            return
        if self.rest_streamed:
            async with self._open_rest(self.stop, self.end - 1) as read, \
                    aclosing(self._body(read, pos, self.end)) as pieces:
                async for chunk in pieces:
                    if self._hash is not None:
                        self._hash.update(chunk)
                    pos += len(chunk)
                    if pos >= self.end:
                        self._check()  # before the last piece goes: a wrong object is never whole
                    yield chunk
            return
        while window:
            slot = window.popleft()
            await slot.done.wait()
            if slot.error is not None:
                raise slot.error
            pieces, slot.data = slot.data, None
            assert pieces is not None
            pos += sum(map(len, pieces))
            if self._hash is not None:
                digest = self._hash
                await off_loop(lambda: [digest.update(piece) for piece in pieces], sum(map(len, pieces)))
                if pos >= self.end:
                    self._check()  # before the last part goes: a wrong object is never whole
            pieces.reverse()
            while pieces:
                yield pieces.pop()  # dropped here once the consumer is done with it
            refill()  # after the consumer is done with a part: memory stays bounded

    async def _body(self, read: ReadBody, pos: int, end: int) -> AsyncIterator[bytes]:
        """Bytes ``pos`` to ``end`` of the object, as they arrive from ``read`` (an answer that holds them);
        when the answer breaks (a reset, a body that ends short), the rest comes from a ranged GET from
        the last byte that arrived (``open_rest``, pinned to the ETag), while :attr:`resumes_left` lasts
        and no more than :data:`RESUMES` in a row bring nothing."""
        idle = 0  # resumes in a row that brought no byte
        async with AsyncExitStack() as resumed:
            while pos < end:
                try:
                    chunk = await read(end - pos)
                    if not chunk:
                        raise TransientError(f"GetObject body ended at byte {pos} of {end}",
                                             backend=self.describe(), key=self.key)
                except TransientError as exc:
                    if not self.resumable or self.resumes_left <= 0 or idle >= RESUMES:
                        raise
                    self.resumes_left -= 1
                    self.resumed += 1
                    idle += 1
                    log.info("s3.download_resumed", backend=self.describe(), key=self.key, at=pos, of=self.total,
                             error=str(exc))
                    await resumed.aclose()  # the previous resumed answer, if any
                    read = await resumed.enter_async_context(self._open_rest(pos, end - 1))
                    continue
                idle = 0
                pos += len(chunk)
                yield chunk

    def _check(self) -> None:
        if self._hash is not None:
            assert self._expected is not None
            check_digest(self._hash, self._expected, self.describe, self.key)
            self._hash = None

    async def _fill_slot(self, slot: _Slot, first: int, last: int) -> None:
        # errors wait in the slot and surface in order, where the reader is
        try:
            slot.data = await self._fetch(first, last)
        except Exception as exc:  # noqa: BLE001 - any error is the reader's, in order
            slot.error = exc
        finally:
            slot.done.set()
