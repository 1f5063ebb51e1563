"""``backup restore``: archive members straight into a backend, the database by the backup API.

Storage is restored in two passes over the parts:

1. **check, write nothing**: every part's size and SHA-256, the archive read
   through to its end marker, every member checked by :func:`.tarstream.safe_key`
   (absolute paths, "..", links, devices, fifos are refused with
   :class:`~vertexflow.errors.UnsafeArchive`) and every file's SHA-256
   compared with MEMBERS.sha256;
2. **write**: the members stream from the archive into ``target.put`` one by
   one, each with its expected size and SHA-256, so the backend keeps an
   object only when its bytes are the checked ones (whole-or-nothing per
   object). The rules of pass 1 are applied again (a member must pass
   ``safe_key`` and be listed in MEMBERS.sha256, its bytes must match), so a
   part that changed between the passes cannot get an unchecked member
   written; the parts' SHA-256 are not taken a second time.

Pass 1 hashes each part in one worker thread while another decodes it and
checks the members (no thread hop per tar event). The price is reading (and
decompressing) the parts twice; in exchange a bad
or malicious backup is refused before anything is written.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass

import anyio

from ...backends.base import Backend
from ...errors import CorruptData, PartNotReplayable
from ...model import ObjectInfo
from .database import restore_into
from .parts import archive_events, data_of, scan_archive
from .reading import Opened, fetch_database, load_members
from .tarstream import END_MEMBER, Member, safe_key


@dataclass(slots=True)
class RestoreResult:
    files: int = 0
    bytes: int = 0
    skipped: int = 0  # members outside --only
    database: str | None = None  # the restored database path
    kept_database: str | None = None  # the previous file, kept beside it
    checked_files: int = 0


def included(key: str, only: str | None) -> bool:
    if not only:
        return True
    prefix = only.strip("/")
    return key == prefix or key.startswith(prefix + "/")


async def restore_backup(opened: Opened, *, target: Backend | None, db_path: str | None,
                         only: str | None = None) -> RestoreResult:
    result = RestoreResult()
    meta = opened.meta
    if meta.storage is not None and target is not None:
        members = await load_members(opened.folder, meta.storage, bid=opened.name)
        result.checked_files = await _check_pass(opened, members)
        await _write_pass(opened, members, target, only, result)
    if meta.database is not None and db_path:
        result.database = db_path
        result.kept_database = await _restore_database(opened, db_path)
    return result


async def _check_pass(opened: Opened, members: dict[str, str]) -> int:
    section = opened.meta.storage
    assert section is not None
    current: Member | None = None
    h = hashlib.sha256()
    files = 0

    def handle(event: object) -> None:  # runs in the reading worker thread
        nonlocal current, h, files
        if isinstance(event, Member):
            safe_key(event)
            current, h = event, hashlib.sha256()
        elif event is END_MEMBER:
            assert current is not None
            if current.is_file:
                files += 1
                if members.get(current.name) != h.hexdigest():
                    raise CorruptData(f"backup {opened.name}: member {current.name!r} differs from MEMBERS.sha256",
                                      backend=opened.folder.describe())
        else:
            h.update(event)  # type: ignore[arg-type]

    await scan_archive(opened.folder, section, handle, bid=opened.name)
    if files != section.files:
        raise CorruptData(f"backup {opened.name}: the archive holds {files} files, metadata says {section.files}",
                          backend=opened.folder.describe())
    return files


async def _write_pass(opened: Opened, members: dict[str, str], target: Backend, only: str | None,
                      result: RestoreResult) -> None:
    section = opened.meta.storage
    assert section is not None
    await target.check(write=True)
    # pass 1 checked every part's SHA-256; here each member is checked instead (the
    # put keeps it only if its bytes match MEMBERS.sha256), so the parts are not hashed again
    events = archive_events(opened.folder, section, bid=opened.name, hash_parts=False)
    async for event in events:
        if not isinstance(event, Member):
            continue  # only END_MEMBER of a directory can come here; data is taken below
        key = safe_key(event)
        if key is None or not event.is_file or not included(key, only):
            result.skipped += event.is_file
            async for _ in data_of(events):
                pass
            continue
        used = False

        def body(member: Member = event) -> object:
            nonlocal used
            if used:
                raise PartNotReplayable(f"member {member.name!r} was asked for twice; it streams once")
            used = True
            return data_of(events)

        expected = members.get(event.name)
        if expected is None:  # the part changed after pass 1: nothing unchecked is written
            raise CorruptData(f"backup {opened.name}: member {event.name!r} is not in MEMBERS.sha256",
                              backend=opened.folder.describe())
        stored = await target.put(ObjectInfo(key=key, size=event.size, hashes={"sha256": expected}),
                                  body)  # type: ignore[arg-type]
        if stored.hashes.get("sha256", expected) != expected:
            raise CorruptData(f"restored object differs from the backup (backup {opened.name})",
                              backend=target.describe(), key=key)
        result.files += 1
        result.bytes += event.size


async def _restore_database(opened: Opened, db_path: str) -> str | None:
    directory = os.path.dirname(os.path.abspath(db_path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(db_path) + ".restore-", dir=directory)
    os.close(fd)
    try:
        await fetch_database(opened, tmp)
        return await anyio.to_thread.run_sync(restore_into, tmp, db_path)
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
