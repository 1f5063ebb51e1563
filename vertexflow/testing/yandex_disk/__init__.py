"""A Yandex.Disk REST API emulator, for tests and for rehearsing a migration.

It answers as cloud-api.yandex.net does, as far as its documentation, real
recorded traffic (the ``yadisk`` project's ``tests/recorded``) and rclone's
experience show:

* paths ``disk:/a/b`` (``/a/b`` accepted), answers always ``disk:/...``;
  timestamps ``2024-07-06T21:06:25+00:00``; resources with ``name, path,
  type, size, md5, sha256, created, modified, mime_type, media_type,
  resource_id, revision`` (and ``file``, a download link); folders with
  ``_embedded {sort, items, limit, offset, path, total}``; ``fields=``
  filtering (``a.b`` keeps only ``b`` inside ``a``);
* ``PUT /resources`` (mkdir, 201 + Link; no parents created), ``DELETE``
  (204, or 202 + operation for a non-empty folder; to the trash unless
  ``permanently=true``), ``GET /resources/upload`` (``{operation_id, href,
  method, templated}``; 409 conflicts, 413 for a ``size`` over the limit and
  507 are answered here), the upload link (no Authorization, chunked or sized
  body, 201, or 202 with the file appearing when its operation succeeds; a
  second PUT on one link answers 400; nothing is stored from a torn body),
  ``GET /resources/download`` and its link (Range; errors in HTML), copy and
  move (201, or 202 + ``{base}/v1/disk/operations/<id>``), operations
  (``in-progress``/``success``/``failed``), publish/unpublish with a working
  ``public_url``, ``GET /resources/files``, ``PATCH`` custom properties,
  ``GET /v1/disk`` and the trash (list, delete, restore);
* errors ``{"message", "description", "error"}`` with the service's names.

Knobs (:class:`Knobs`) add latency, 429s with Retry-After, 423s, injected
5xx, asynchronous (202) uploads, uploads corrupted in transit, and
quota/file-size limits. Any non-empty OAuth
token is accepted unless one is configured. State lives in memory, or in a
data directory where it survives a restart.

Folder downloads (zip archives on the service) and real resource locking
(423 comes only from the ``lock_rate`` knob) are not emulated.
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import web

from ._service import KNOB_NAMES, Knobs, YandexDiskEmulator


@asynccontextmanager
async def running_emulator(*, token: str | None = None, data_dir: str | os.PathLike[str] | None = None,
                           **knobs: Any) -> AsyncIterator[YandexDiskEmulator]:
    """Serve a fresh emulator on 127.0.0.1 on a free port for the duration of the block.

    ``async with running_emulator(rate_limit=0.2) as emu: emu.base_url`` is
    ``http://127.0.0.1:PORT/v1/disk``.
    """
    emu = YandexDiskEmulator(token=token, data_dir=data_dir, **knobs)
    runner = web.AppRunner(emu.app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = _bound_port(site)
        emu.origin = f"http://127.0.0.1:{port}"
        emu.base_url = f"{emu.origin}/v1/disk"
        yield emu
    finally:
        await runner.cleanup()


def _bound_port(site: web.TCPSite) -> int:
    server = site._server  # aiohttp keeps the listening sockets here
    assert server is not None
    sock: socket.socket = server.sockets[0]  # type: ignore[attr-defined]
    return int(sock.getsockname()[1])


def serve(port: int, *, host: str = "127.0.0.1", token: str | None = None,
          data_dir: Path | None = None, **knobs: Any) -> None:
    """Run the emulator until interrupted (``vertexflow emulate yandex-disk``)."""
    emu = YandexDiskEmulator(token=token, data_dir=data_dir, **knobs)
    emu.origin = f"http://{host}:{port}"
    emu.base_url = f"{emu.origin}/v1/disk"
    print(f"Yandex.Disk emulator: API base URL {emu.base_url}"
          + (" (token required)" if token else " (any OAuth token accepted)")
          + (f", data in {data_dir}" if data_dir else ", data in memory"), flush=True)
    web.run_app(emu.app, host=host, port=port, access_log=None, print=None)


__all__ = ["KNOB_NAMES", "Knobs", "YandexDiskEmulator", "running_emulator", "serve"]
