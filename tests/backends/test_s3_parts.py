"""Re-chunking an upload body into multipart parts (no server needed)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

from vertexflow.backends.s3.upload import BodyReader


async def _parts(chunks: list[bytes], in_head: int, size: int) -> list[bytes]:
    async def rest() -> AsyncIterator[bytes]:
        for chunk in chunks[in_head:]:
            yield chunk

    reader = BodyReader(rest(), None, ValueError)
    return [part async for part in reader.parts(chunks[:in_head], size)]


async def test_parts_have_exactly_the_part_size_whatever_the_chunks() -> None:
    rnd = random.Random(7)
    for _ in range(300):
        data = rnd.randbytes(rnd.randint(0, 5000))
        size = rnd.randint(1, 700)
        cuts = sorted(rnd.randint(0, len(data)) for _ in range(rnd.randint(0, 20)))
        chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        parts = await _parts(chunks, rnd.randint(0, len(chunks)), size)
        assert b"".join(parts) == data
        assert all(type(p) is bytes for p in parts)
        assert all(len(p) == size for p in parts[:-1])
        assert not parts or 0 < len(parts[-1]) <= size


async def test_a_chunk_that_is_a_whole_part_is_passed_on_uncopied() -> None:
    chunks = [bytes([i]) * 64 for i in range(3)]
    parts = await _parts(chunks, 1, 64)
    assert [p is c for p, c in zip(parts, chunks, strict=True)] == [True, True, True]
