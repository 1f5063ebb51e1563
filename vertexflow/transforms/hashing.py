"""The hash stage: digests computed in-stream, once per byte, never by re-reading.

Algorithms (``--hash sha256,md5``):

* ``sha256``: always on; the engine checks every copy with it.
* ``md5``: to compare with S3 single-part ETags and Yandex.Disk's ``md5``.
* ``blake3``, ``xxh128``: fast digests for users' own manifests.

All algorithms of one stream are updated by the same call on the same
buffer, in a worker thread for large buffers (:class:`~.work.CpuLane`).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import aclosing
from typing import Any

import blake3
import xxhash

from ..errors import ConfigError
from ..model import BodyFactory
from .work import CpuLane

ALGORITHMS: dict[str, Callable[[], Any]] = {
    "sha256": hashlib.sha256,
    "md5": hashlib.md5,
    "blake3": blake3.blake3,
    "xxh128": xxhash.xxh128,
}
#: Bytes per second on one core (measured on the 2-core development machine:
#: ``benchmarks/stages.py``); only used to guess whether a buffer is worth a
#: thread hand-off.
SPEED = {"sha256": 1.8e9, "md5": 0.77e9, "blake3": 4.5e9, "xxh128": 24e9}
DEFAULT = ("sha256",)


def parse_algorithms(text: str) -> tuple[str, ...]:
    """``"sha256,md5"`` -> ``("sha256", "md5")``; SHA-256 is always included, first."""
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in ALGORITHMS]
    if unknown:
        raise ConfigError(f"--hash: unknown algorithm {unknown[0]!r}; choose from {', '.join(ALGORITHMS)}")
    return tuple(dict.fromkeys(["sha256", *names]))


class Digester:
    """Several digests of one byte stream, updated together."""

    def __init__(self, algorithms: Iterable[str], *, _hashers: dict[str, Any] | None = None) -> None:
        self._hashers = _hashers if _hashers is not None else {a: ALGORITHMS[a]() for a in algorithms}
        self.size = 0

    def seconds(self, n: int) -> float:
        """About how long digesting ``n`` bytes takes."""
        return sum(n / SPEED[a] for a in self._hashers)

    def update(self, data: bytes | memoryview) -> None:
        for h in self._hashers.values():
            h.update(data)
        self.size += len(data)

    def copy(self) -> Digester:
        clone = Digester((), _hashers={a: h.copy() for a, h in self._hashers.items()})
        clone.size = self.size
        return clone

    def hexdigests(self) -> dict[str, str]:
        return {a: h.hexdigest() for a, h in self._hashers.items()}

    @property
    def empty(self) -> bool:
        return not self._hashers


def digesting(body: BodyFactory, algorithms: Iterable[str], lane: CpuLane,
              on_end: Callable[[Mapping[str, str], int], None]) -> BodyFactory:
    """``body`` with its bytes digested as they pass.

    Every call digests afresh; ``on_end(digests, size)`` is called when a pass
    reaches the end of the stream, so a consumer that replays the body (a
    retried part, a restarted upload) leaves the digests of a whole pass.
    """
    algorithms = tuple(algorithms)

    async def digested() -> AsyncIterator[bytes]:
        d = Digester(algorithms)
        async with aclosing(body()) as chunks:  # type: ignore[type-var]
            async for chunk in chunks:
                await lane.run(d.update, chunk, seconds=d.seconds(len(chunk)))
                yield chunk
        on_end(d.hexdigests(), d.size)

    return digested
