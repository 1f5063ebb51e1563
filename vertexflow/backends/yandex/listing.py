"""A recursive listing in key order, with bounded look-ahead.

The service lists one folder at a time, in pages. To yield keys in
ascending code-point order the walk sorts each folder's entries itself (a
folder ``d`` sorts as ``d/``, so ``a.txt`` comes before ``a/b``), which
needs one folder's entries in memory at a time. To hide latency it fetches
the folders it will enter next (siblings in walk order) together, a few at
a time, inside a task group that never spans a ``yield``: the next
``lookahead`` folders in walk order. Folders fetched for a shallower level
stay held while a deeper one is walked, so about ``lookahead`` per level of
the walk are held at most.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field

import anyio

from .api import Resource

#: Lists a folder (key relative to the root, "" for the root) sorted as
#: :func:`sort_entries` does; None when the folder does not exist.
FetchDir = Callable[[str], Awaitable["list[Resource] | None"]]


def sort_entries(items: list[Resource]) -> list[Resource]:
    return sorted(items, key=lambda r: r.name + "/" if r.is_dir else r.name)


def _wanted_dir(key: str, prefix: str) -> bool:
    """Can objects under folder ``key`` match ``prefix``?"""
    return (key + "/").startswith(prefix) or prefix.startswith(key + "/")


@dataclass
class _Level:
    base: str  # key prefix of this folder's entries ("" or "a/b/")
    entries: list[Resource]
    pos: int = 0
    dirs: deque[str] = field(default_factory=deque)  # sub-folders still to enter, in order


async def walk(fetch: FetchDir, prefix: str, first: list[Resource], start: str, *,
               lookahead: int) -> AsyncGenerator[tuple[str, Resource], None]:
    """Yield ``(key, file)`` under the folder ``start`` (already listed as ``first``) in key order."""
    fetched: dict[str, list[Resource] | None] = {}

    def level(base: str, entries: list[Resource]) -> _Level:
        lv = _Level(base, entries)
        lv.dirs.extend(base + e.name for e in entries if e.is_dir and _wanted_dir(base + e.name, prefix))
        return lv

    async def fetch_ahead(needed: str, stack: list[_Level]) -> None:
        # ``needed`` is visited at once; the others wait in ``fetched``. The next ``lookahead``
        # folders in walk order are wanted, those held already counting: folders held for a
        # shallower level never keep a folder's own sub-folders waiting one round trip each.
        batch = [needed]
        window = 1
        candidates = (d for lv in reversed(stack) for d in lv.dirs)  # walk order: deepest level first
        for d in candidates:
            if window >= lookahead:
                break
            if d == needed:
                continue
            window += 1
            if d not in fetched:
                batch.append(d)

        async def one(d: str) -> None:
            fetched[d] = await fetch(d)

        async with anyio.create_task_group() as tg:
            for d in batch:
                tg.start_soon(one, d)

    stack = [level(f"{start}/" if start else "", first)]
    while stack:
        lv = stack[-1]
        if lv.pos >= len(lv.entries):
            stack.pop()
            continue
        entry = lv.entries[lv.pos]
        lv.pos += 1
        key = lv.base + entry.name
        if entry.is_dir:
            if not lv.dirs or lv.dirs[0] != key:
                continue  # outside the prefix
            lv.dirs.popleft()
            if key not in fetched:
                await fetch_ahead(key, stack)
            items = fetched.pop(key)
            if items is not None:  # None: deleted while we walked
                stack.append(level(key + "/", items))
        elif key.startswith(prefix):
            yield key, entry
