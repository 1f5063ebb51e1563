"""Which folders are known to exist: an LRU with a time-to-live.

A bulk upload puts thousands of files into a few folders; without this it
would ask to create the same folder thousands of times. An entry can go
stale (someone deleted the folder); the upload then answers 409 for the
missing parent and the backend forgets and re-creates the chain.
"""

from __future__ import annotations

import time
from collections import OrderedDict


class DirCache:
    def __init__(self, size: int, ttl: float) -> None:
        self.size = size
        self.ttl = ttl
        self._entries: OrderedDict[str, float] = OrderedDict()

    def fresh(self, path: str) -> bool:
        expires = self._entries.get(path)
        if expires is None:
            return False
        if expires < time.monotonic():
            del self._entries[path]
            return False
        self._entries.move_to_end(path)
        return True

    def add(self, path: str) -> None:
        if self.size <= 0 or self.ttl <= 0:
            return
        self._entries[path] = time.monotonic() + self.ttl
        self._entries.move_to_end(path)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def forget(self, path: str) -> None:
        """Drop ``path`` and everything below it."""
        below = path.rstrip("/") + "/"
        for p in [p for p in self._entries if p == path or p.startswith(below)]:
            del self._entries[p]

    def __len__(self) -> int:
        return len(self._entries)
