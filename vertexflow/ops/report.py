"""``--report FILE``: what happened to every object, one JSON line each, written as the job runs.

Like a DataSync task report, for scripts and audits: a line per object as
its outcome is known, so memory stays flat however many objects there are,
then one summary line. Lines (all keys always present, ``null`` when unknown)::

    {"key": "a/b.jpg", "action": "copied", "size": 1234, "route": "streamed",
     "sha256": "...", "seconds": 0.012, "reason": null, "message": null}
    {"key": "a/c.jpg", "action": "skipped", ..., "message": "same size and mtime"}
    {"key": "old.jpg", "action": "deleted", ...}
    {"key": "bad.jpg", "action": "failed", ..., "reason": "access_denied", "message": "..."}
    {"summary": {...}}                                        # the last line: the job's summary

``action`` is one of copied, skipped, deleted, failed. ``route`` is the way
a copied object went (:mod:`vertexflow.ops.routes`, or ``local_batch`` /
``batch_read`` for batches of small local files, whose ``seconds`` is null).
"""

from __future__ import annotations

import json
import os
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from collections.abc import Mapping
from typing import IO, Any

from ..errors import ConfigError
from ..model import CRC64NVME, SHA256, ObjectInfo

#: bytes buffered before a write: a line is ~200 bytes, so ~300 objects per system call
BUFFER = 64 * 1024


def _text(value: str | None) -> str:
    return "null" if value is None else encode_basestring(value)


def _number(value: float | None) -> str:
    return "null" if value is None else repr(value)


def check_report_path(path: str, option: str = "--report") -> None:
    """Raise ConfigError (naming ``option``) when ``path`` cannot be a file the job writes: its directory
    does not exist, or it is one."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ConfigError(f"{option} {path}: the directory {directory} does not exist")
    if os.path.isdir(path):
        raise ConfigError(f"{option} {path}: is a directory, not a file")


class TransferReport:
    """One JSON line per object, appended as outcomes arrive; :meth:`close` adds the summary."""

    def __init__(self, stream: IO[str]) -> None:
        self._out = stream
        self.lines = 0

    @classmethod
    def open(cls, path: str) -> TransferReport:
        check_report_path(path)
        try:
            return cls(open(path, "w", encoding="utf-8", buffering=BUFFER))  # noqa: SIM115 - closed by close()
        except OSError as exc:
            raise ConfigError(f"--report {path}: {exc.strerror}") from exc

    def _line(self, key: str, action: str, *, size: int | None = None, route: str | None = None,
              sha256: str | None = None, crc64nvme: str | None = None, seconds: float | None = None,
              reason: str | None = None, message: str | None = None) -> None:
        # formatted here as json.dumps(ensure_ascii=False) writes it, without the encoder json.dumps builds
        # for every call: a line is written per object (its cost: benchmarks/README.md, report_cost.py)
        self._out.write(f'{{"key": {_text(key)}, "action": "{action}", "size": {_number(size)}, '
                        f'"route": {_text(route)}, "sha256": {_text(sha256)}, "crc64nvme": {_text(crc64nvme)}, '
                        f'"seconds": {_number(round(seconds, 4) if seconds is not None else None)}, '
                        f'"reason": {_text(reason)}, "message": {_text(message)}}}\n')
        self.lines += 1

    def copied(self, src: ObjectInfo, result: ObjectInfo, route: str, seconds: float | None) -> None:
        # the digest the copy was checked with: a CRC64NVME where the source store keeps one and the
        # destination took it instead of a SHA-256 (vertexflow.backends.local.stream_digest)
        self._line(src.key, "copied", size=result.size, route=route, sha256=result.hashes.get(SHA256),
                   crc64nvme=result.hashes.get(CRC64NVME), seconds=seconds)

    def skipped(self, info: ObjectInfo, why: str) -> None:
        self._line(info.key, "skipped", size=info.size, sha256=info.hashes.get(SHA256), message=why)

    def deleted(self, key: str) -> None:
        self._line(key, "deleted")

    def failed(self, info: ObjectInfo, exc: BaseException) -> None:
        self._line(info.key, "failed", size=info.size, reason=getattr(exc, "reason", type(exc).__name__),
                   message=str(exc))

    def close(self, summary: Mapping[str, Any] | None) -> None:
        """Write the summary line (when the job has one) and close the file."""
        try:
            if summary is not None:
                self._out.write(json.dumps({"summary": dict(summary)}, default=str) + "\n")
        finally:
            self._out.close()
