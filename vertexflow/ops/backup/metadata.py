"""The backup layout and its metadata: dataclasses, strict JSON (de)serialisation, SHA256SUMS.

A backup is one folder ``<id>/`` at the destination (see ``docs/backup.md``)::

    storage.tar.zst.part0000 ...   the compressed tar stream, cut into parts
    MEMBERS.sha256                 "<sha256>  <path>" per archived file (sha256sum format),
                                   "# directory <path>/" per archived directory (a comment to sha256sum)
    MEMBERS.jsonl                  what describes each archived file (Content-Type, headers, user
                                   metadata, mtime), one JSON object a line
    database.sqlite3.zst           the database copy, compressed with the same codec
    SHA256SUMS                     every stored file above, sha256sum format
    metadata.json                  written last: a folder without it is incomplete

A platform backup (type ``platform``) is a full backup of a platform whose
archive holds every company's files of every content type under
``<content type>/<company folder>/``, read from wherever the company's route
pointed; its ``platform`` section says, per company and content type, the
route, the counts, whether it is complete and what changed while it was read
(:class:`PlatformSection`).

Reading is strict: every field is type-checked and a bad one raises
:class:`~vertexflow.errors.BadMetadata` naming it, and object names are
matched against the only forms vertexflow writes, so a tampered metadata file
can never make a reader touch a key outside the backup folder.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from ...errors import BadMetadata
from ...model import SHA256, STANDARD_HEADERS, ObjectInfo, mtime_text, parse_mtime_text

FORMAT = "vertexflow.backup"
VERSION = 1
METADATA = "metadata.json"
SHA256SUMS = "SHA256SUMS"
MEMBERS = "MEMBERS.sha256"
DESCRIPTIONS = "MEMBERS.jsonl"
TYPES = ("full", "database", "storage", "platform")
SUFFIX = {"zstd": "zst", "gzip": "gz"}
ID_RE = re.compile(r"^vertexflow-(full|database|storage|platform)-(\d{8}T\d{6}Z)(?:-(\d{1,4}))?$")
_PART_RE = re.compile(r"^storage\.tar\.(zst|gz)\.part(\d{4,6})$")
_DB_RE = re.compile(r"^database\.sqlite3\.(zst|gz)$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
TIME_FORMAT = "%Y%m%dT%H%M%SZ"


def backup_id(kind: str, when: datetime, seq: int = 0) -> str:
    """``vertexflow-full-20261124T131500Z`` (``-N`` appended when that second is taken)."""
    base = f"vertexflow-{kind}-{when.astimezone(UTC).strftime(TIME_FORMAT)}"
    return f"{base}-{seq}" if seq else base


def parse_id(bid: str) -> tuple[str, datetime, int] | None:
    """``(type, created, seq)`` of a backup id, or None if it is not one."""
    m = ID_RE.match(bid)
    if not m:
        return None
    when = datetime.strptime(m.group(2), TIME_FORMAT).replace(tzinfo=UTC)
    return m.group(1), when, int(m.group(3) or 0)


def part_name(codec: str, index: int) -> str:
    return f"storage.tar.{SUFFIX[codec]}.part{index:04d}"


def database_name(codec: str) -> str:
    return f"database.sqlite3.{SUFFIX[codec]}"


@dataclass(frozen=True, slots=True)
class StoredFile:
    """One object of the backup folder as stored: its name, byte size and SHA-256."""

    name: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class StorageSection:
    source: str
    compression: str  # "zstd" | "gzip"
    level: int
    chunk_size: int
    parts: tuple[StoredFile, ...]
    stream_size: int  # all parts joined (the compressed stream)
    stream_sha256: str
    files: int
    bytes: int  # uncompressed content of the files
    members: StoredFile  # MEMBERS.sha256
    #: directories archived (each a tar directory member and a "# directory" line of MEMBERS.sha256);
    #: None for a backup written before directories were archived (its MEMBERS.sha256 lists files only)
    directories: int | None = None
    #: MEMBERS.jsonl, what describes each file; None for a backup written before it was kept
    descriptions: StoredFile | None = None


@dataclass(frozen=True, slots=True)
class DatabaseSection:
    source: str
    compression: str
    stored: StoredFile  # the compressed copy as stored
    size: int  # the SQLite file itself
    sha256: str


@dataclass(frozen=True, slots=True)
class Metadata:
    id: str
    type: str
    created: datetime
    vertexflow_version: str
    storage: StorageSection | None = None
    database: DatabaseSection | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: a platform backup's companies and routes (type ``platform`` only)
    platform: PlatformSection | None = None

    def stored_files(self) -> list[StoredFile]:
        """Every object the backup holds besides SHA256SUMS and metadata.json, in write order."""
        out: list[StoredFile] = []
        if self.database:
            out.append(self.database.stored)
        if self.storage:
            out.extend(self.storage.parts)
            out.append(self.storage.members)
            if self.storage.descriptions is not None:
                out.append(self.storage.descriptions)
        return out

    def sha256sums(self) -> bytes:
        """The SHA256SUMS file: ``sha256sum -c SHA256SUMS`` in the backup folder checks every stored file."""
        return "".join(f"{f.sha256}  {f.name}\n" for f in self.stored_files()).encode()

    def to_json(self) -> bytes:
        doc: dict[str, Any] = {
            "format": FORMAT, "version": VERSION, "id": self.id, "type": self.type,
            "created": self.created.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "vertexflow_version": self.vertexflow_version,
            "source": {"storage": self.storage.source if self.storage else None,
                       "database": self.database.source if self.database else None},
            "storage": None, "database": None,
        }
        if self.storage:
            s = self.storage
            doc["storage"] = {
                "compression": s.compression, "level": s.level, "chunk_size": s.chunk_size,
                "parts": [asdict(p) for p in s.parts],
                "stream": {"size": s.stream_size, "sha256": s.stream_sha256},
                "files": s.files, "bytes": s.bytes, "members": asdict(s.members),
            }
            if s.directories is not None:
                doc["storage"]["directories"] = s.directories
            if s.descriptions is not None:
                doc["storage"]["descriptions"] = asdict(s.descriptions)
        if self.database:
            d = self.database
            doc["database"] = {"compression": d.compression, "stored": asdict(d.stored),
                               "size": d.size, "sha256": d.sha256}
        if self.platform is not None:
            doc["platform"] = self.platform.to_doc()
        return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes, *, where: str) -> Metadata:
        """Parse and check; raises :class:`BadMetadata` naming ``where`` and the bad field."""
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadMetadata(f"{where}: not valid JSON ({exc})") from None
        r = _Reader(doc, where)
        if r.get("format", str) != FORMAT:
            raise BadMetadata(f"{where}: field 'format' is not {FORMAT!r}")
        if r.get("version", int) != VERSION:
            raise BadMetadata(f"{where}: field 'version' {doc.get('version')!r} is not supported "
                              f"(this vertexflow reads {VERSION})")
        bid = r.get("id", str)
        parsed = parse_id(bid)
        kind = r.get("type", str)
        if parsed is None or parsed[0] != kind:
            raise BadMetadata(f"{where}: field 'id' {bid!r} is not a backup id of type {kind!r}")
        try:
            created = datetime.strptime(r.get("created", str), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        except ValueError:
            raise BadMetadata(f"{where}: field 'created' is not a time like 2026-11-24T13:15:00Z") from None
        source = r.sub("source")
        storage = database = None
        if doc.get("storage") is not None:
            storage = _storage(r.sub("storage"), source.get("storage", str))
        if doc.get("database") is not None:
            database = _database(r.sub("database"), source.get("database", str))
        want = {"full": (True, True), "storage": (True, False), "database": (False, True),
                "platform": (True, True)}[kind]
        if (storage is not None, database is not None) != want:
            raise BadMetadata(f"{where}: fields 'storage'/'database' do not match type {kind!r}")
        platform = None
        if kind == "platform":
            assert storage is not None
            platform = _platform(r.sub("platform"), storage)
        elif "platform" in doc:
            raise BadMetadata(f"{where}: field 'platform' belongs to platform backups, not type {kind!r}")
        return cls(id=bid, type=kind, created=created, vertexflow_version=r.get("vertexflow_version", str),
                   storage=storage, database=database, platform=platform)


class _Reader:
    """Typed field access that names the field path in its errors."""

    def __init__(self, doc: Any, path: str) -> None:
        if not isinstance(doc, dict):
            raise BadMetadata(f"{path}: expected an object")
        self.doc, self.path = doc, path

    def get(self, name: str, kind: type) -> Any:
        if name not in self.doc:
            raise BadMetadata(f"{self.path}: field {name!r} is missing")
        value = self.doc[name]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise BadMetadata(f"{self.path}: field {name!r} must be {kind.__name__}, not {type(value).__name__}")
        if kind is int and value < 0:
            raise BadMetadata(f"{self.path}: field {name!r} must not be negative")
        return value

    def sub(self, name: str) -> _Reader:
        return _Reader(self.get(name, dict), f"{self.path}.{name}")

    def sha(self, name: str) -> str:
        value = self.get(name, str)
        if not _HEX64.match(value):
            raise BadMetadata(f"{self.path}: field {name!r} is not a lower-case hex SHA-256")
        return value

    def stored(self, pattern: re.Pattern[str]) -> StoredFile:
        name = self.get("name", str)
        if not pattern.match(name):
            raise BadMetadata(f"{self.path}: field 'name' {name!r} is not a name vertexflow writes")
        return StoredFile(name, self.get("size", int), self.sha("sha256"))


def _codec(r: _Reader) -> str:
    codec = r.get("compression", str)
    if codec not in SUFFIX:
        raise BadMetadata(f"{r.path}: field 'compression' must be one of {', '.join(SUFFIX)}")
    return codec


def _storage(r: _Reader, source: str) -> StorageSection:
    codec = _codec(r)
    raw_parts = r.get("parts", list)
    parts = tuple(_Reader(p, f"{r.path}.parts[{i}]").stored(_PART_RE) for i, p in enumerate(raw_parts))
    for i, p in enumerate(parts):
        if p.name != part_name(codec, i):
            raise BadMetadata(f"{r.path}.parts[{i}]: field 'name' {p.name!r} should be {part_name(codec, i)!r}")
    stream = r.sub("stream")
    members = r.sub("members").stored(re.compile(f"^{re.escape(MEMBERS)}$"))
    descriptions = (r.sub("descriptions").stored(re.compile(f"^{re.escape(DESCRIPTIONS)}$"))
                    if "descriptions" in r.doc else None)
    section = StorageSection(source=source, compression=codec, level=r.get("level", int),
                             chunk_size=r.get("chunk_size", int), parts=parts,
                             stream_size=stream.get("size", int), stream_sha256=stream.sha("sha256"),
                             files=r.get("files", int), bytes=r.get("bytes", int), members=members,
                             directories=r.get("directories", int) if "directories" in r.doc else None,
                             descriptions=descriptions)
    if not parts:
        raise BadMetadata(f"{r.path}: field 'parts' is empty")
    if sum(p.size for p in parts) != section.stream_size:
        raise BadMetadata(f"{r.path}: the parts' sizes do not add up to field 'stream.size'")
    if any(p.size > section.chunk_size for p in parts):
        raise BadMetadata(f"{r.path}: a part is larger than field 'chunk_size'")
    return section


def _database(r: _Reader, source: str) -> DatabaseSection:
    codec = _codec(r)
    stored = r.sub("stored").stored(_DB_RE)
    if stored.name != database_name(codec):
        raise BadMetadata(f"{r.path}.stored: field 'name' should be {database_name(codec)!r}")
    return DatabaseSection(source=source, compression=codec, stored=stored,
                           size=r.get("size", int), sha256=r.sha("sha256"))


# -- the platform section: companies, routes, and what each section of the archive holds ----------

#: changed files named per company and content type: metadata.json stays small (the count is always whole)
CHANGED_SHOWN = 100


@dataclass(frozen=True, slots=True)
class ContentEntry:
    """One company's files of one content type: where they were read and what the archive holds of them.

    The archive holds them under :attr:`path` (``<content type>/<company folder>``).
    ``route`` names the store (``local``, ``minio``, ``yandex_disk`` or a
    connection), ``location`` is ``<route>:<folder there>`` as the platform
    resolved it. ``complete`` is false when the store could not be read
    (``error`` says why; only with ``--allow-incomplete``). ``changed`` names
    files that changed while the backup ran (``modified KEY``, ``added KEY``,
    ``deleted KEY``, ``not archived KEY``): the archive holds them as they were
    when read, or (``not archived``) not at all.
    """

    content_type: str
    path: str
    route: str
    kind: str
    location: str
    files: int = 0
    bytes: int = 0
    directories: int = 0
    complete: bool = True
    error: str | None = None
    changed_count: int = 0
    changed: tuple[str, ...] = ()

    def to_doc(self) -> dict[str, Any]:
        return {"path": self.path, "route": self.route, "kind": self.kind, "location": self.location,
                "files": self.files, "bytes": self.bytes, "directories": self.directories,
                "complete": self.complete, "error": self.error, "changed_count": self.changed_count,
                "changed": list(self.changed)}


@dataclass(frozen=True, slots=True)
class CompanyEntry:
    """A company as the backup found it: its folder, placement columns and one entry per content type."""

    id: int
    folder: str
    name: str | None
    storage_type: str
    storage_connection_id: int | None
    connection: str | None  # the name of storage_connection_id
    yandex_disk_folder_id: str | None
    #: a live migration of the company was in progress (its id): the files were read from its old placement
    migration: int | None
    content: tuple[ContentEntry, ...]

    @property
    def complete(self) -> bool:
        return all(c.complete for c in self.content)

    def to_doc(self) -> dict[str, Any]:
        return {"id": self.id, "folder": self.folder, "name": self.name, "storage_type": self.storage_type,
                "storage_connection_id": self.storage_connection_id, "connection": self.connection,
                "yandex_disk_folder_id": self.yandex_disk_folder_id, "migration_in_progress": self.migration,
                "complete": self.complete, "content": {c.content_type: c.to_doc() for c in self.content}}


@dataclass(frozen=True, slots=True)
class PlatformSection:
    """What a platform backup holds: the storage config it followed and every company's sections."""

    storage_config: str
    content_types: tuple[str, ...]
    companies: tuple[CompanyEntry, ...]

    @property
    def complete(self) -> bool:
        return all(c.complete for c in self.companies)

    def company(self, ref: str) -> CompanyEntry | None:
        """A company by id or folder."""
        for c in self.companies:
            if c.folder == ref or (ref.isdigit() and c.id == int(ref)):
                return c
        return None

    def to_doc(self) -> dict[str, Any]:
        return {"storage_config": self.storage_config, "content_types": list(self.content_types),
                "complete": self.complete, "companies": [c.to_doc() for c in self.companies]}


def section_path(content_type: str, folder: str) -> str:
    """Where one company's files of one content type lie in a platform archive."""
    return f"{content_type}/{folder}"


def _folder_name(value: str) -> bool:
    return bool(value) and "/" not in value and value not in (".", "..") and "\x00" not in value


def _optional(r: _Reader, name: str, kind: type) -> Any:
    if r.doc.get(name) is None:
        if name not in r.doc:
            raise BadMetadata(f"{r.path}: field {name!r} is missing")
        return None
    return r.get(name, kind)


def _platform(r: _Reader, storage: StorageSection) -> PlatformSection:
    cts = r.get("content_types", list)
    if not cts or not all(isinstance(c, str) and _folder_name(c) for c in cts) or len(set(cts)) != len(cts):
        raise BadMetadata(f"{r.path}: field 'content_types' must list distinct content type names")
    companies: list[CompanyEntry] = []
    folders: set[str] = set()
    ids: set[int] = set()
    for i, raw in enumerate(r.get("companies", list)):
        c = _Reader(raw, f"{r.path}.companies[{i}]")
        folder = c.get("folder", str)
        cid = c.get("id", int)
        if not _folder_name(folder):
            raise BadMetadata(f"{c.path}: field 'folder' {folder!r} is not a folder name")
        if folder in folders or cid in ids:
            raise BadMetadata(f"{c.path}: company {cid} ({folder!r}) is listed twice")
        folders.add(folder)
        ids.add(cid)
        content_doc = c.get("content", dict)
        if set(content_doc) != set(cts):
            raise BadMetadata(f"{c.path}: field 'content' must have one entry per content type ({', '.join(cts)})")
        content = []
        for ct in cts:
            e = _Reader(content_doc[ct], f"{c.path}.content.{ct}")
            path = e.get("path", str)
            if path != section_path(ct, folder):
                raise BadMetadata(f"{e.path}: field 'path' {path!r} should be {section_path(ct, folder)!r}")
            changed = e.get("changed", list)
            if not all(isinstance(x, str) for x in changed):
                raise BadMetadata(f"{e.path}: field 'changed' must list strings")
            content.append(ContentEntry(
                content_type=ct, path=path, route=e.get("route", str), kind=e.get("kind", str),
                location=e.get("location", str), files=e.get("files", int), bytes=e.get("bytes", int),
                directories=e.get("directories", int), complete=e.get("complete", bool),
                error=_optional(e, "error", str), changed_count=e.get("changed_count", int),
                changed=tuple(changed)))
        companies.append(CompanyEntry(
            id=cid, folder=folder, name=_optional(c, "name", str), storage_type=c.get("storage_type", str),
            storage_connection_id=_optional(c, "storage_connection_id", int),
            connection=_optional(c, "connection", str),
            yandex_disk_folder_id=_optional(c, "yandex_disk_folder_id", str),
            migration=_optional(c, "migration_in_progress", int), content=tuple(content)))
    section = PlatformSection(storage_config=r.get("storage_config", str), content_types=tuple(cts),
                              companies=tuple(companies))
    files = sum(e.files for c in companies for e in c.content)
    size = sum(e.bytes for c in companies for e in c.content)
    if (files, size) != (storage.files, storage.bytes):
        raise BadMetadata(f"{r.path}: the companies hold {files} files / {size} bytes, field 'storage' says "
                          f"{storage.files} / {storage.bytes}")
    return section


def parse_sha256sums(data: bytes, *, where: str) -> dict[str, str]:
    """``{name: sha256}`` from a SHA256SUMS file; raises :class:`BadMetadata` on a bad line."""
    out: dict[str, str] = {}
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise BadMetadata(f"{where}: not UTF-8 text") from None
    for n, line in enumerate(text.splitlines(), 1):
        m = re.fullmatch(r"([0-9a-f]{64}) [ *](.+)", line)
        if not m:
            raise BadMetadata(f"{where}: line {n} is not '<sha256>  <name>'")
        out[m.group(2)] = m.group(1)
    return out


def check_agreement(meta: Metadata, sums: dict[str, str], *, where: str) -> None:
    """metadata.json and SHA256SUMS must list the same files with the same hashes."""
    listed = {f.name: f.sha256 for f in meta.stored_files()}
    for name in sorted(set(listed) | set(sums)):
        if name not in sums:
            raise BadMetadata(f"{where}: {name} is in metadata.json but not in SHA256SUMS")
        if name not in listed:
            raise BadMetadata(f"{where}: {name} is in SHA256SUMS but not in metadata.json")
        if listed[name] != sums[name]:
            raise BadMetadata(f"{where}: metadata.json and SHA256SUMS disagree on the SHA-256 of {name}")


# -- MEMBERS.sha256: sha256sum's own format, escapes included ------------------------

def member_line(sha256: str, name: str) -> bytes:
    """One line as ``sha256sum`` writes it: a name with a backslash or newline is escaped and the line starts with '\\'."""
    if "\\" in name or "\n" in name or "\r" in name:
        escaped = name.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
        return f"\\{sha256}  {escaped}\n".encode("utf-8", "surrogateescape")
    return f"{sha256}  {name}\n".encode("utf-8", "surrogateescape")


#: how a directory line of MEMBERS.sha256 starts: sha256sum -c skips lines that start with "#"
DIRECTORY_LINE = "# directory "


def directory_line(name: str) -> bytes:
    """``# directory <path>/``: a directory member, as a comment ``sha256sum -c`` passes over.

    The path is always escaped the way sha256sum escapes names (``\\``, ``\n``,
    ``\r``), so any name fits on one line.
    """
    escaped = name.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
    return f"{DIRECTORY_LINE}{escaped}/\n".encode("utf-8", "surrogateescape")


def parse_directory_line(line: bytes, *, where: str) -> str | None:
    """The directory path of a ``# directory`` line; None for any other line. Raises on a bad one."""
    if not line.startswith(b"#"):
        return None
    text = line.decode("utf-8", "surrogateescape").rstrip("\n")
    if not text.startswith(DIRECTORY_LINE) or not text.endswith("/") or len(text) <= len(DIRECTORY_LINE) + 1:
        raise BadMetadata(f"{where}: a line starting with '#' is not '{DIRECTORY_LINE}<path>/'")
    return _unescape(text[len(DIRECTORY_LINE):-1])


def _unescape(name: str) -> str:
    return re.sub(r"\\(.)", lambda g: {"n": "\n", "r": "\r", "\\": "\\"}.get(g.group(1), g.group(1)), name)


def parse_member_line(line: bytes, *, where: str) -> tuple[str, str]:
    text = line.decode("utf-8", "surrogateescape").rstrip("\n")
    escaped = text.startswith("\\")
    if escaped:
        text = text[1:]
    m = re.fullmatch(r"([0-9a-f]{64}) [ *](.+)", text, re.DOTALL)
    if not m:
        raise BadMetadata(f"{where}: a line is not '<sha256>  <path>'")
    name = m.group(2)
    if escaped:
        name = _unescape(name)
    return name, m.group(1)


# -- MEMBERS.jsonl: what describes each file, one JSON object a line ----------------

@dataclass(frozen=True, slots=True)
class Description:
    """What describes one archived file's bytes (``docs/fidelity.md``): all a restore gives back besides them."""

    mtime: datetime | None = None
    content_type: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names of STANDARD_HEADERS
    metadata: Mapping[str, str] = field(default_factory=dict)  # user metadata, vertexflow's SHA-256 left out

    @classmethod
    def of(cls, info: ObjectInfo) -> Description:
        """What ``info`` says; the SHA-256 is MEMBERS.sha256's, and a store computes its own anew."""
        return cls(mtime=info.mtime, content_type=info.content_type, headers=dict(info.headers or {}),
                   metadata={k: v for k, v in info.metadata.items() if k != SHA256})


def description_line(path: str, d: Description) -> bytes:
    """``{"path": ..., "mtime": "<seconds>.<9 digits>", "content_type": ..., "headers": {...}, "metadata": {...}}``.

    Empty fields are left out. A name that is not valid UTF-8 (kept as
    surrogates) is written with JSON's ``\\udcXX`` escapes, so every line is
    valid UTF-8 JSON and reads back to the same name.
    """
    doc: dict[str, Any] = {"path": path}
    mtime = mtime_text(d.mtime) if d.mtime is not None else None
    if mtime is not None:
        doc["mtime"] = mtime
    if d.content_type:
        doc["content_type"] = d.content_type
    if d.headers:
        doc["headers"] = dict(d.headers)
    if d.metadata:
        doc["metadata"] = dict(d.metadata)
    text = json.dumps(doc, ensure_ascii=False, separators=(", ", ": "))
    return text.encode("utf-8", "backslashreplace") + b"\n"


def parse_description_line(line: bytes, *, where: str) -> tuple[str, Description]:
    """``(path, Description)`` of one line; :class:`BadMetadata` naming ``where`` and the field if malformed.

    Fields this vertexflow does not know are passed over (a later one may add some).
    """
    try:
        doc = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        raise BadMetadata(f"{where}: a line is not a JSON object") from None
    r = _Reader(doc, where)
    path = r.get("path", str)
    at = f"{where}, {path!r}"
    mtime = None
    if "mtime" in doc:
        mtime = parse_mtime_text(r.get("mtime", str))
        if mtime is None:
            raise BadMetadata(f"{at}: field 'mtime' is not '<seconds>.<fraction>'")
    content_type = r.get("content_type", str) if "content_type" in doc else None
    if content_type is not None and not _printable(content_type):
        raise BadMetadata(f"{at}: field 'content_type' holds a control character")
    headers = _text_map(r, "headers", at) if "headers" in doc else {}
    for name in headers:
        if name not in STANDARD_HEADERS:
            raise BadMetadata(f"{at}: field 'headers' names {name!r}, not one of {', '.join(STANDARD_HEADERS)}")
    metadata = _text_map(r, "metadata", at) if "metadata" in doc else {}
    metadata.pop(SHA256, None)  # the SHA-256 is MEMBERS.sha256's; the store takes its own
    return path, Description(mtime=mtime, content_type=content_type and sys.intern(content_type),
                             headers=headers or _EMPTY, metadata=metadata or _EMPTY)


#: one shared empty mapping for the many files without headers or user metadata (restore holds them all)
_EMPTY: Mapping[str, str] = MappingProxyType({})


def _printable(text: str) -> bool:
    return text.isprintable()


def _text_map(r: _Reader, name: str, at: str) -> dict[str, str]:
    value = r.get(name, dict)
    for k, v in value.items():
        if not isinstance(v, str):
            raise BadMetadata(f"{at}: field {name!r}: entry {k!r} must be str, not {type(v).__name__}")
        if not k or not _printable(k) or not _printable(v):
            raise BadMetadata(f"{at}: field {name!r}: entry {k!r} holds a control character")
    return dict(value)
