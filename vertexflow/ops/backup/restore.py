"""``backup restore``: everything checked first, then archive members straight into a backend, the database last.

Nothing is written until the whole backup has been checked:

1. **check the storage, write nothing**: MEMBERS.sha256 and MEMBERS.jsonl
   against the metadata, every part's size and SHA-256, the archive read through to its
   end marker, every member checked by :func:`.tarstream.safe_key`
   (absolute paths, "..", links, devices, fifos are refused with
   :class:`~vertexflow.errors.UnsafeArchive`), every file's SHA-256 and every
   directory compared with MEMBERS.sha256;
2. **check the database copy, write nothing at the target**: it is
   downloaded and decompressed to a temporary file (beside ``--db-path`` when
   that folder exists, else in the temporary folder), and its stored and
   plain SHA-256 and ``PRAGMA integrity_check`` are checked;
3. **write the storage**: the members stream from the archive into
   ``target.put`` one by one, each with its expected size and SHA-256 and
   what describes it (MEMBERS.jsonl: Content-Type, headers, user metadata,
   mtime; a backup without that file gives the tar header's mtime), so the
   backend keeps an object only when its bytes are the checked ones
   (whole-or-nothing per object). The rules of pass 1 are applied again (a
   member must pass ``safe_key`` and be listed in MEMBERS.sha256, its bytes
   must match; a directory must be one pass 1 saw), so a part that changed
   between the passes cannot get an unchecked member written; the parts'
   SHA-256 are not taken a second time. A directory with nothing under it in
   the archive is created (``make_folder`` where the target has folders, else
   the folder marker object ``<path>/.keep``); the others come with their files;
4. **put the database in place** from the checked copy (:func:`.database.restore_into`).

A pass that fails a check is made once more before the backup is called
damaged (:func:`.reading.reread`): a byte changed on the way reads right
the second time. Pass 1 starts again from the first part (it wrote
nothing); pass 3 reads the parts again and puts only what the failed read
had not put.

Pass 1 hashes each part in one worker thread while another decodes it and
checks the members (no thread hop per tar event). The price is reading (and
decompressing) the parts twice; in exchange a bad or malicious backup is
refused before anything is written.

:class:`RestoreResult` is filled as the restore goes, so a caller that
passes its own sees, after a failure, what was checked and what was written.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import UTC, datetime

import anyio

from ...backends.base import Backend
from ...errors import CorruptData, PartNotReplayable, UnsafeArchive
from ...model import ObjectInfo, body_from_bytes
from ...tenancy.adapters import FOLDER_MARKER
from .database import restore_into
from .parts import archive_events, data_of, scan_archive
from .metadata import DESCRIPTIONS, Description
from .reading import Members, Opened, fetch_database, load_descriptions, load_members, reread
from .tarstream import END_MEMBER, Member, safe_key

#: SQLite's side files of a database file (rollback journal, write-ahead log, its index)
SIDE_FILES = ("-journal", "-wal", "-shm")
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


@dataclass(slots=True)
class RestoreResult:
    files: int = 0
    bytes: int = 0
    directories: int = 0  # folders created (those with nothing under them in the archive)
    skipped: int = 0  # files outside --only
    database: str | None = None  # the restored database path
    kept_database: str | None = None  # the previous file, kept beside it
    checked_files: int = 0
    #: "checking" (nothing written yet), "writing storage", "restoring database", "done"
    phase: str = "checking"
    #: what has been checked so far, in words (for the message after a failure)
    checked: list[str] = field(default_factory=list)

    @property
    def wrote_anything(self) -> bool:
        """Whether the target storage or the database may have changed (objects are put whole or not at all)."""
        return self.files > 0 or self.directories > 0 or self.phase in ("restoring database", "done")


def included(key: str, only: str | None) -> bool:
    if not only:
        return True
    prefix = only.strip("/")
    return key == prefix or key.startswith(prefix + "/")


@dataclass(slots=True)
class _Checked:
    """What pass 1 found in the archive: the directories, and those with nothing under them."""

    directories: set[str] = field(default_factory=set)
    holders: set[str] = field(default_factory=set)  # directories some member lies under

    def hold(self, key: str) -> None:
        parent = key
        while True:
            parent = parent.rpartition("/")[0]
            if not parent or parent in self.holders:
                return
            self.holders.add(parent)

    @property
    def empty(self) -> set[str]:
        return self.directories - self.holders


#: where a file or folder of the archive goes: ``(backend, key there)``, or None when it is not restored
Place = Callable[[str], Awaitable["tuple[Backend, str] | None"]]


@dataclass(slots=True)
class CheckedStorage:
    """What the first pass found sound: the member lists, the descriptions and the archive's directories."""

    members: Members
    descriptions: dict[str, Description] | None
    checked: _Checked


async def restore_backup(opened: Opened, *, target: Backend | None, db_path: str | None,
                         only: str | None = None, result: RestoreResult | None = None) -> RestoreResult:
    """Check the whole backup, then restore its storage into ``target`` and its database to ``db_path``.

    Raises (a :class:`~vertexflow.errors.BackupError` or
    :class:`~vertexflow.errors.IntegrityError` naming the part, object or
    member) before the first write when anything is damaged or unsafe.
    """
    result = result if result is not None else RestoreResult()
    meta = opened.meta
    storage = meta.storage is not None and target is not None
    database = meta.database is not None and bool(db_path)
    sound = await check_storage(opened, result) if storage else None
    copy: str | None = None
    try:
        if database:
            assert db_path
            copy = await fetch_checked_copy(opened, db_path, result)
        if sound is not None:
            assert target is not None

            async def place(key: str) -> tuple[Backend, str]:
                return target, key

            result.phase = "writing storage"
            await target.check(write=True)
            await write_storage(opened, sound, place, only, result)
        if database:
            assert db_path and copy
            await restore_database(copy, db_path, result)
        result.phase = "done"
    finally:
        if copy is not None:
            remove_with_side_files(copy)
    return result


async def check_storage(opened: Opened, result: RestoreResult) -> CheckedStorage:
    """Pass 1 over the archive and its member lists; writes nothing. Raises on the first problem."""
    meta = opened.meta
    assert meta.storage is not None
    result.phase = "checking"
    if "metadata.json and SHA256SUMS" not in result.checked:
        result.checked.append("metadata.json and SHA256SUMS")
    members = await load_members(opened.folder, meta.storage, bid=opened.name)
    result.checked.append("MEMBERS.sha256")
    descriptions = await load_descriptions(opened.folder, meta.storage, members, bid=opened.name)
    if descriptions is not None:
        result.checked.append(DESCRIPTIONS)
    checked = _Checked()

    async def check() -> int:
        nonlocal checked
        checked = _Checked()  # a pass made again starts from nothing
        return await _check_pass(opened, members, checked)

    result.checked_files = await reread(f"backup {opened.name}: the parts and the archive", check)
    parts = len(meta.storage.parts)
    result.checked.append(f"{parts} part{'s' if parts != 1 else ''} and the archive to its end "
                          f"({result.checked_files} files, {len(checked.directories)} directories)")
    return CheckedStorage(members, descriptions, checked)


async def fetch_checked_copy(opened: Opened, db_path: str, result: RestoreResult) -> str:
    """The database copy, downloaded and checked into a temporary file (the caller removes it)."""
    copy = await _fetch_checked_copy(opened, db_path)
    result.checked.append("the database copy (SHA-256, PRAGMA integrity_check)")
    return copy


async def restore_database(copy: str, db_path: str, result: RestoreResult) -> None:
    """Put the checked copy in place at ``db_path`` (the previous file kept beside it)."""
    result.phase = "restoring database"
    result.database = db_path
    result.kept_database = await anyio.to_thread.run_sync(restore_into, copy, db_path)


async def _check_pass(opened: Opened, members: Members, checked: _Checked) -> int:
    section = opened.meta.storage
    assert section is not None
    current: Member | None = None
    h = hashlib.sha256()
    files = 0
    bid, where = opened.name, opened.folder.describe()
    listed = members.directories if section.directories is not None else None

    def handle(event: object) -> None:  # runs in the reading worker thread
        nonlocal current, h, files
        if isinstance(event, Member):
            try:
                key = safe_key(event)
            except UnsafeArchive as exc:
                raise UnsafeArchive(f"backup {bid}: {exc}") from None
            current, h = event, hashlib.sha256()
            if key is not None:
                checked.hold(key)
                if event.is_dir:
                    if listed is not None and key not in listed:
                        raise CorruptData(f"backup {bid}: directory {key!r} is not in MEMBERS.sha256", backend=where)
                    checked.directories.add(key)
        elif event is END_MEMBER:
            assert current is not None
            if current.is_file:
                files += 1
                if members.files.get(current.name) != h.hexdigest():
                    what = "is not in" if current.name not in members.files else "differs from"
                    raise CorruptData(f"backup {bid}: member {current.name!r} {what} MEMBERS.sha256", backend=where)
        else:
            h.update(event)  # type: ignore[arg-type]

    await scan_archive(opened.folder, section, handle, bid=bid)
    if files != section.files:
        raise CorruptData(f"backup {bid}: the archive holds {files} files, metadata says {section.files}",
                          backend=where)
    if listed is not None and checked.directories != listed:
        missing = sorted(listed - checked.directories)
        raise CorruptData(f"backup {bid}: directory {missing[0]!r} is listed in MEMBERS.sha256 but not in the "
                          f"archive ({len(missing)} such)", backend=where)
    return files


async def write_storage(opened: Opened, sound: CheckedStorage, place: Place, only: str | None,
                        result: RestoreResult) -> None:
    """Pass 2: every checked member under ``only`` put where ``place`` says, each checked against its SHA-256.

    A read that fails a check (a member's bytes, the archive's decoding) is made once more; the members
    and folders the failed read had done are not done again (:func:`.reading.reread`).
    """
    done: set[tuple[str, int]] = set()

    async def write() -> None:
        await _write_pass(opened, sound, place, only, result, frozenset(done), done)

    await reread(f"backup {opened.name}: the parts, written to the target", write)


async def _write_pass(opened: Opened, sound: CheckedStorage, place: Place, only: str | None, result: RestoreResult,
                      earlier: frozenset[tuple[str, int]], done: set[tuple[str, int]]) -> None:
    """One read of the archive for :func:`write_storage`. ``earlier``: the members an earlier read handled (put,
    made or skipped), passed over here; ``done`` gets each this read handles. A member is its name and which
    time the name comes in the archive (a tar may hold a name twice, the later one the one that stays)."""
    times: Counter[str] = Counter()
    section = opened.meta.storage
    assert section is not None
    result.phase = "writing storage"
    members, descriptions, checked = sound.members, sound.descriptions, sound.checked
    empty = checked.empty
    # pass 1 checked every part's SHA-256; here each member is checked instead (the
    # put keeps it only if its bytes match MEMBERS.sha256), so the parts are not hashed again
    # closed here, not left to the garbage collector: a put that fails (a full disk) would otherwise have the
    # archive's reading generators closed at shutdown, while one is still running, with a traceback
    async with aclosing(archive_events(opened.folder, section, bid=opened.name, hash_parts=False)) as events:
        async for event in events:
            if not isinstance(event, Member):
                continue  # only END_MEMBER of a data-less member can come here; data is taken below
            key = safe_key(event)
            times[event.name] += 1
            nth = (event.name, times[event.name])
            if nth in earlier:
                async for _ in data_of(events):
                    pass
                continue
            if event.is_dir and key is not None:
                if key not in checked.directories:  # the part changed after pass 1: nothing unchecked is done
                    raise CorruptData(f"backup {opened.name}: directory {key!r} was not in the archive when it was "
                                      "checked", backend=opened.folder.describe())
                if key in empty and included(key, only):
                    where = await place(key)
                    if where is not None:
                        await make_folder(*where)
                        result.directories += 1
                done.add(nth)
                continue
            where = await place(key) if key is not None and event.is_file and included(key, only) else None
            if where is None:
                async for _ in data_of(events):
                    pass
                result.skipped += event.is_file
                done.add(nth)
                continue
            target, target_key = where
            used = False

            def body(member: Member = event) -> object:
                nonlocal used
                if used:
                    raise PartNotReplayable(f"member {member.name!r} was asked for twice; it streams once")
                used = True
                return data_of(events)

            expected = members.files.get(event.name)
            if expected is None:  # the part changed after pass 1: nothing unchecked is written
                raise CorruptData(f"backup {opened.name}: member {event.name!r} is not in MEMBERS.sha256",
                                  backend=opened.folder.describe())
            stored = await target.put(restored_info(target_key, event, expected, descriptions), body)  # type: ignore[arg-type]
            if stored.hashes.get("sha256", expected) != expected:
                raise CorruptData(f"restored object differs from the backup (backup {opened.name})",
                                  backend=target.describe(), key=target_key)
            result.files += 1
            result.bytes += event.size
            done.add(nth)


def restored_info(key: str, member: Member, sha256: str, descriptions: dict[str, Description] | None) -> ObjectInfo:
    """The object to put for a file member: its size and SHA-256, and what describes it.

    From MEMBERS.jsonl where the backup has it; a backup written before it
    was kept gives the tar header's mtime (whole seconds; none when it is 0).
    """
    d = descriptions.get(member.name) if descriptions is not None else None
    if d is None:
        mtime = datetime.fromtimestamp(member.mtime, UTC) if member.mtime > 0 else None
        return ObjectInfo(key=key, size=member.size, hashes={"sha256": sha256}, mtime=mtime)
    return ObjectInfo(key=key, size=member.size, hashes={"sha256": sha256}, mtime=d.mtime,
                      content_type=d.content_type, headers=d.headers, metadata=d.metadata)


async def make_folder(target: Backend, path: str) -> None:
    """Folder ``path`` in ``target``: a real one where the store has folders, else the folder marker object."""
    if target.features.folders:
        await target.make_folder(path)
    else:
        await target.put(ObjectInfo(key=f"{path}/{FOLDER_MARKER}", size=0, hashes={"sha256": _EMPTY_SHA256}),
                         body_from_bytes(b""))


async def _fetch_checked_copy(opened: Opened, db_path: str) -> str:
    """The database copy downloaded, decompressed and checked into a temporary file; its path.

    Beside ``db_path`` when that folder exists (same file system: no copy of
    the database into /tmp), else in the temporary folder: the check must not
    create the target's folder before it has passed.
    """
    directory = os.path.dirname(os.path.abspath(db_path))
    if not os.path.isdir(directory):
        directory = tempfile.gettempdir()
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(db_path) + ".restore-", dir=directory)
    os.close(fd)
    try:
        await fetch_database(opened, tmp)
    except BaseException:
        remove_with_side_files(tmp)
        raise
    return tmp


def remove_with_side_files(path: str) -> None:
    for name in (path, *(path + s for s in SIDE_FILES)):
        try:
            os.unlink(name)
        except FileNotFoundError:
            pass
