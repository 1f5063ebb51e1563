"""Listing in key order: flat ListObjectsV2 pages, or a level-by-level walk for servers that need it."""

from __future__ import annotations

import heapq
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import aclosing
from typing import Any

#: fetches one ListObjectsV2 page: (prefix, continuation token, delimiter) -> page
PageFetcher = Callable[[str, str | None, str | None], Awaitable[dict[str, Any]]]


def lists_by_directory(headers: Mapping[str, str]) -> bool:
    """True for servers whose flat listing is not in key order but directory by directory.

    SeaweedFS keeps a filer tree and lists "a/" and its subtree before
    "a.txt"; it names itself in the Server header of every answer.
    """
    return headers.get("server", headers.get("Server", "")).startswith("SeaweedFS")


async def flat(page: PageFetcher, prefix: str,
               first: dict[str, Any] | None = None) -> AsyncIterator[dict[str, Any]]:
    """Items (dicts with Key, Size, ETag, LastModified) under ``prefix``, page by page.

    ``first`` is the first page when the caller already has it.
    """
    token: str | None = None
    while True:
        answer, first = first or await page(prefix, token, None), None
        for item in answer.get("Contents", ()):
            yield item
        token = answer.get("NextContinuationToken")
        if not answer.get("IsTruncated") or not token:
            return


async def walk(page: PageFetcher, prefix: str) -> AsyncIterator[dict[str, Any]]:
    """Items under ``prefix`` in key order, one directory level (Delimiter "/") at a time.

    For servers that list a directory's whole subtree at the place of its
    bare name ("a/" before "a.txt"). A level's files and subdirectories
    are put in a heap by key (a subdirectory by its "name/" prefix, where
    its whole subtree sorts); what no later page can precede, everything
    up to the page's greatest bare name, is emitted, a subdirectory by
    walking it. Memory: about one page per level of depth. Requests: one
    page per directory (more for a directory of over 1,000 entries).
    """
    heap: list[tuple[str, int, dict[str, Any] | None]] = []
    token: str | None = None
    while True:
        answer = await page(prefix, token, "/")
        names = []
        for item in answer.get("Contents", ()):
            heapq.heappush(heap, (item["Key"], len(heap), item))
            names.append(item["Key"])
        for common in answer.get("CommonPrefixes", ()):
            heapq.heappush(heap, (common["Prefix"], len(heap), None))
            names.append(common["Prefix"][:-1])
        token = answer.get("NextContinuationToken")
        done = not answer.get("IsTruncated") or not token
        if not done and not names:
            continue
        watermark = max(names) if names else ""
        while heap and (done or heap[0][0] <= watermark):
            key, _, item = heapq.heappop(heap)
            if item is not None:
                yield item
                continue
            async with aclosing(walk(page, key)) as items:
                async for sub in items:
                    yield sub
        if done:
            return
