"""Opening an existing backup: its metadata (checked against SHA256SUMS), member list and database copy.

A read whose check fails (the store's digest of the answer, a parse, a
recorded size or SHA-256) is made once more before the backup is called
damaged (:func:`reread`): a byte changed on the way reads right the second
time, bytes damaged in the store fail both times and are refused with the
same message.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import anyio

from ...backends.base import Backend
from ...errors import (
    BackupError,
    BadMetadata,
    CorruptArchive,
    CorruptData,
    CorruptInput,
    IntegrityError,
    NotFound,
    UnsafeArchive,
    first_error,
)
from ...logs import get_logger
from ...transforms.compression import decoder
from .database import integrity_problem
from .metadata import (
    METADATA,
    SHA256SUMS,
    Description,
    Metadata,
    PlatformSection,
    StorageSection,
    check_agreement,
    parse_description_line,
    parse_directory_line,
    parse_member_line,
    parse_sha256sums,
)
from .parts import THREAD_MIN, read_object

log = get_logger(__name__)

T = TypeVar("T")

#: reads of a backup's document or pass in all before it is called damaged: a byte changed in transit
#: reads right the second time, damage in the store fails every time (a third read would only cost time)
READS = 2
#: what a read that went wrong on the way looks like, as damage in the store does (the store's digest of
#: the answer, a parse, a recorded SHA-256, the archive's decoding and members)
REREAD: tuple[type[Exception], ...] = (IntegrityError, BadMetadata, CorruptArchive, UnsafeArchive)


def failed_check(exc: Exception) -> Exception | None:
    """The failed check ``exc`` is (or holds first, when a task group wrapped it in a group), or None when it
    is another error."""
    err = first_error(exc) if isinstance(exc, BaseExceptionGroup) else exc
    return err if isinstance(err, REREAD) else None


def reading_again(what: str, problem: object) -> None:
    """Say (a warning) that ``what`` is read again after ``problem``."""
    log.warning("backup read failed its check; reading it again", what=what,
                error=getattr(problem, "message", str(problem)))


async def reread(what: str, read: Callable[[], Awaitable[T]]) -> T:
    """``read()``, made again (up to :data:`READS` times in all) while it fails a check; the last failure raised.

    ``read`` starts afresh each time: it fetches again whatever it checks.
    """
    for attempt in range(1, READS + 1):
        try:
            return await read()
        except Exception as exc:  # noqa: BLE001 - only a failed check is made again, the rest re-raised
            err = failed_check(exc)
            if attempt == READS or err is None:
                raise
            reading_again(what, err)
    raise AssertionError("unreachable: the last attempt returns or raises")


@dataclass(frozen=True, slots=True)
class Opened:
    """The backend holding a backup, the backup's folder there (its id) and its checked metadata."""

    folder: Backend
    name: str
    meta: Metadata

    def key(self, name: str) -> str:
        return f"{self.name}/{name}"


async def load_metadata(folder: Backend, name: str) -> Metadata:
    """Read and check metadata.json and SHA256SUMS of the backup in the folder ``name`` of ``folder``.

    Raises :class:`BackupError` if there is no metadata.json (an incomplete
    backup, or not a backup) and :class:`BadMetadata` if it is malformed, does
    not belong to this folder, or disagrees with SHA256SUMS. Both are read
    again once when they fail a check (:func:`reread`).
    """
    return await reread(f"backup {name}: {METADATA} and {SHA256SUMS}", lambda: _load_metadata(folder, name))


async def _load_metadata(folder: Backend, name: str) -> Metadata:
    where = f"backup {name}"
    try:
        raw = await read_object(folder, f"{name}/{METADATA}")
    except NotFound:
        raise BackupError(f"{where}: no {METADATA} in {folder.describe()}/{name} "
                          "(an interrupted backup, or not a backup folder)") from None
    meta = Metadata.from_json(raw, where=f"{where}, {METADATA}")
    if meta.id != name:
        raise BadMetadata(f"{where}, {METADATA}: field 'id' {meta.id!r} does not match the folder name")
    try:
        sums = parse_sha256sums(await read_object(folder, f"{name}/{SHA256SUMS}"), where=f"{where}, {SHA256SUMS}")
    except NotFound:
        raise BadMetadata(f"{where}: {SHA256SUMS} is missing") from None
    check_agreement(meta, sums, where=where)
    return meta


@dataclass(frozen=True, slots=True)
class Members:
    """MEMBERS.sha256 read and checked: ``{path: sha256}`` of the files, and the directories' paths."""

    files: dict[str, str]
    directories: frozenset[str]


async def load_members(folder: Backend, section: StorageSection, *, bid: str) -> Members:
    """MEMBERS.sha256, checked against its recorded size and SHA-256 and the metadata's counts (read again
    once when it fails: :func:`reread`)."""
    return await reread(f"backup {bid}: {section.members.name}", lambda: _load_members(folder, section, bid=bid))


async def _load_members(folder: Backend, section: StorageSection, *, bid: str) -> Members:
    m = section.members
    try:
        data = await read_object(folder, f"{bid}/{m.name}")
    except NotFound:
        raise CorruptData(f"backup {bid}: {m.name} is missing", backend=folder.describe(), key=m.name) from None
    if len(data) != m.size or hashlib.sha256(data).hexdigest() != m.sha256:
        raise CorruptData(f"backup {bid}: {m.name} differs from the metadata (corrupted)",
                          backend=folder.describe(), key=m.name)
    where = f"backup {bid}, {m.name}"
    files: dict[str, str] = {}
    directories: set[str] = set()
    for line in data.splitlines(keepends=True):
        directory = parse_directory_line(line, where=where)
        if directory is not None:
            directories.add(directory)
            continue
        name, sha = parse_member_line(line, where=where)
        files[name] = sha
    if len(files) != section.files:
        raise BadMetadata(f"backup {bid}: {m.name} lists {len(files)} files, metadata says {section.files}")
    if len(directories) != (section.directories or 0):
        raise BadMetadata(f"backup {bid}: {m.name} lists {len(directories)} directories, metadata says "
                          f"{section.directories or 0}")
    return Members(files, frozenset(directories))


def platform_problems(platform: PlatformSection, members: Members) -> list[tuple[str, str]]:
    """``(where, what)`` for each member outside every recorded company folder, and each folder whose count is off.

    A platform archive holds only ``<content type>/`` and the companies'
    ``<content type>/<folder>/`` trees; each folder's files in MEMBERS.sha256
    must be as many as its entry in the platform section says.
    """
    sections = {e.path: e for c in platform.companies for e in c.content}
    tops = set(platform.content_types)
    counts: Counter[str] = Counter()
    out: list[tuple[str, str]] = []
    for name in (*members.files, *members.directories):
        ct, _, rest = name.partition("/")
        folder, _, sub = rest.partition("/")
        if name in tops or f"{ct}/{folder}" in sections:
            if sub and name in members.files:
                counts[f"{ct}/{folder}"] += 1
            continue
        out.append((name, "lies in no company folder of the platform section"))
    for path, e in sections.items():
        if counts[path] != e.files:
            out.append((path, f"holds {counts[path]} files in MEMBERS.sha256, its platform entry says {e.files}"))
    return out


async def load_descriptions(folder: Backend, section: StorageSection, members: Members, *,
                            bid: str) -> dict[str, Description] | None:
    """MEMBERS.jsonl as ``{path: Description}``: checked against its size and SHA-256, one line per listed file.

    None for a backup written before what describes the files was kept. Read again once when it fails a
    check (:func:`reread`).
    """
    d = section.descriptions
    if d is None:
        return None
    return await reread(f"backup {bid}: {d.name}", lambda: _load_descriptions(folder, section, members, bid=bid))


async def _load_descriptions(folder: Backend, section: StorageSection, members: Members, *,
                             bid: str) -> dict[str, Description]:
    d = section.descriptions
    assert d is not None
    try:
        data = await read_object(folder, f"{bid}/{d.name}")
    except NotFound:
        raise CorruptData(f"backup {bid}: {d.name} is missing", backend=folder.describe(), key=d.name) from None
    if len(data) != d.size or hashlib.sha256(data).hexdigest() != d.sha256:
        raise CorruptData(f"backup {bid}: {d.name} differs from the metadata (corrupted)",
                          backend=folder.describe(), key=d.name)
    where = f"backup {bid}, {d.name}"
    out: dict[str, Description] = {}
    for line in data.splitlines():
        path, description = parse_description_line(line, where=where)
        if path not in members.files:
            raise BadMetadata(f"{where}: {path!r} is not a file of {section.members.name}")
        if path in out:
            raise BadMetadata(f"{where}: {path!r} is described twice")
        out[path] = description
    if len(out) != len(members.files):
        raise BadMetadata(f"{where}: describes {len(out)} files, {section.members.name} lists {len(members.files)}")
    return out


async def fetch_database(opened: Opened, path: str) -> None:
    """Download and decompress the database copy to ``path``; check stored and plain SHA-256 and integrity.

    Raises :class:`CorruptData` naming the object; ``path`` is removed on failure. Downloaded again once
    when a check fails (:func:`reread`).
    """
    assert opened.meta.database is not None
    await reread(f"backup {opened.name}: {opened.meta.database.stored.name}", lambda: _fetch_database(opened, path))


async def _fetch_database(opened: Opened, path: str) -> None:
    db = opened.meta.database
    assert db is not None
    name, where = db.stored.name, f"backup {opened.name}"
    dec = decoder(db.compression)
    stored_hash, plain_hash = hashlib.sha256(), hashlib.sha256()
    stored_size = plain_size = 0

    def bad(what: str) -> CorruptData:
        return CorruptData(f"{where}: {what}", backend=opened.folder.describe(), key=name)

    try:
        with open(path, "wb") as out:  # noqa: ASYNC230 - opening a local temp file is instant; writes of big pieces run in threads
            def drain() -> int:
                n = 0
                while dec.pending:
                    data = dec.pull()
                    plain_hash.update(data)
                    out.write(data)
                    n += len(data)
                return n

            def push(chunk: bytes) -> int:
                stored_hash.update(chunk)
                dec.push(chunk)
                return drain()

            try:
                async with opened.folder.open(opened.key(name)) as chunks:
                    async for chunk in chunks:
                        stored_size += len(chunk)
                        plain_size += (await anyio.to_thread.run_sync(push, chunk) if len(chunk) >= THREAD_MIN
                                       else push(chunk))
                dec.finish()
            except NotFound:
                raise bad("the database copy is missing") from None
            except CorruptInput as exc:
                if stored_hash.hexdigest() != db.stored.sha256:
                    raise bad("the database copy's SHA-256 differs from the metadata (corrupted)") from None
                raise bad(f"the database copy does not decompress: {exc}") from None
        if stored_size != db.stored.size or stored_hash.hexdigest() != db.stored.sha256:
            raise bad("the database copy's SHA-256 differs from the metadata (corrupted)")
        if plain_size != db.size or plain_hash.hexdigest() != db.sha256:
            raise bad("the decompressed database differs from the recorded size/SHA-256")
        problem = await anyio.to_thread.run_sync(integrity_problem, path)
        if problem:
            raise bad(f"the database copy fails PRAGMA integrity_check: {problem}")
    except BaseException:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        raise
