"""Referential integrity between the platform database and its files (``vertexflow company refs``).

The storage config's ``references`` section (:mod:`vertexflow.tenancy.references`)
names the columns that hold file paths. :func:`check_references` checks them,
for one company or all, against each company's current route:

* every referenced file exists there (a row whose file is missing is a
  **dangling** reference, named by its table, column, row id and path); with
  ``checksum`` a declared digest column is compared with the file's digest;
* every file there is referenced by some row (folder markers aside); one that
  is not is an **orphan**. Only content types with a declared reference are
  listed: without one every file would look unreferenced.

Both sides stream, so memory stays flat whatever the size of the platform:
the rows are read ``ORDER BY`` company and key (SQLite sorts on disk beyond its
cache), each company's store is listed in key order (spilled through SQLite
by :func:`~vertexflow.ops.plan.ordered_listing` where a store cannot list in
order), and the two are merged like two sorted files. Reports name at most
``shown`` dangling references and orphans per company and content type; the
counts are always whole.

Orphans are deleted only when asked (``delete_orphans``), and never in a
place where a reference dangles or that no row references at all (a
declaration that does not match the files would make every file look
unreferenced), never when younger than ``orphan_min_age`` (the platform
writes a file before the row that names it), and never more than
``max_delete`` (the run is refused first, nothing deleted).

:func:`refuse_dangling` is the check a migration runs against its target
before it switches.
"""

from __future__ import annotations

import hashlib
import sqlite3
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import anyio

from ..backends.base import Backend, check_key
from ..errors import ConfigError, InvalidKey, MigrationFailed, NotFound
from ..model import SHA256, ObjectInfo
from ..tenancy.adapters import FOLDER_MARKER, StorageAdapter
from ..tenancy.manager import StorageManager
from ..tenancy.references import Declared, check_database, declared, quoted
from ..tenancy.registry import Company
from .plan import empty_if_missing, ordered_listing

#: dangling references and orphans named per company and content type (the counts are always whole)
DEFAULT_SHOWN = 100
#: rows read from the database per hop to its thread
FETCH_ROWS = 2000
#: seconds an orphan must have existed before it may be deleted: a platform writes a file before the row
#: that names it, so an upload in progress looks unreferenced for a moment (an hour covers a slow one)
DEFAULT_ORPHAN_MIN_AGE = 3600.0
#: deletes in flight at once (remote stores answer each in a round trip)
DELETE_CONCURRENCY = 16


@dataclass(frozen=True, slots=True)
class DanglingRef:
    """A row whose file is missing (or, with ``--checksum``, differs from its digest)."""

    reference: str
    row_id: Any
    path: str
    key: str
    why: str
    company: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"reference": self.reference, "row_id": self.row_id, "path": self.path, "key": self.key,
                "why": self.why, "company": self.company}

    def describe(self) -> str:
        shown = self.path if self.path == self.key else f"{self.path} (key {self.key})"
        return f"{self.reference} row {self.row_id}: {shown}: {self.why}"


@dataclass(slots=True)
class ContentRefs:
    """One company's files of one content type against the rows that name them."""

    content_type: str
    where: str
    references: list[str]
    rows: int = 0
    files: int = 0
    #: files named by at least one row
    referenced: int = 0
    dangling: int = 0
    #: rows whose file is there but differs from the row's digest (``checksum``)
    mismatched: int = 0
    digests_checked: int = 0
    orphans: int = 0
    orphan_bytes: int = 0
    first_dangling: list[DanglingRef] = field(default_factory=list)
    first_orphans: list[str] = field(default_factory=list)
    #: orphans deleted (or, in a dry run, that would be)
    deleted: int = 0
    #: orphans left because they are younger than the minimum age
    young: int = 0
    #: why this place's orphans were not deleted (None: they were, or none was asked)
    kept: str | None = None

    @property
    def problems(self) -> int:
        return self.dangling + self.mismatched

    def as_dict(self) -> dict[str, Any]:
        return {"content_type": self.content_type, "where": self.where, "references": self.references,
                "rows": self.rows, "files": self.files, "referenced": self.referenced, "dangling": self.dangling,
                "mismatched": self.mismatched, "digests_checked": self.digests_checked, "orphans": self.orphans,
                "orphan_bytes": self.orphan_bytes, "first_dangling": [d.as_dict() for d in self.first_dangling],
                "first_orphans": self.first_orphans, "deleted": self.deleted, "young": self.young,
                "kept": self.kept}


@dataclass(slots=True)
class CompanyRefs:
    id: int
    slug: str
    content: list[ContentRefs] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(c.rows for c in self.content)

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "slug": self.slug, "content_types": [c.as_dict() for c in self.content]}


@dataclass(slots=True)
class RefsReport:
    companies: list[CompanyRefs] = field(default_factory=list)
    checksum: bool = False
    #: rows whose company column is NULL (no company's files: not checked)
    unowned: int = 0
    #: rows naming a company that is not in the companies table (their files cannot be found: dangling)
    unknown_company: int = 0
    first_unknown: list[DanglingRef] = field(default_factory=list)
    #: "checked", "dry_run" (orphans counted for deletion) or "deleted"
    state: str = "checked"
    notes: list[str] = field(default_factory=list)

    @property
    def dangling(self) -> int:
        return sum(c.dangling for co in self.companies for c in co.content) + self.unknown_company

    @property
    def mismatched(self) -> int:
        return sum(c.mismatched for co in self.companies for c in co.content)

    @property
    def orphans(self) -> int:
        return sum(c.orphans for co in self.companies for c in co.content)

    @property
    def deleted(self) -> int:
        return sum(c.deleted for co in self.companies for c in co.content)

    @property
    def ok(self) -> bool:
        return self.dangling == 0 and self.mismatched == 0

    def totals(self) -> dict[str, dict[str, int]]:
        """Counts per content type, over every company checked."""
        out: dict[str, dict[str, int]] = {}
        for co in self.companies:
            for c in co.content:
                t = out.setdefault(c.content_type, dict.fromkeys(
                    ("rows", "files", "referenced", "dangling", "mismatched", "orphans", "orphan_bytes",
                     "deleted"), 0))
                for name in t:
                    t[name] += getattr(c, name)
        return out

    def first_problem(self) -> DanglingRef | None:
        for co in self.companies:
            for c in co.content:
                if c.first_dangling:
                    return c.first_dangling[0]
        return self.first_unknown[0] if self.first_unknown else None

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "state": self.state, "checksum": self.checksum, "dangling": self.dangling,
                "mismatched": self.mismatched, "orphans": self.orphans, "deleted": self.deleted,
                "totals": self.totals(), "unowned_rows": self.unowned,
                "unknown_company": {"rows": self.unknown_company,
                                    "first": [d.as_dict() for d in self.first_unknown]},
                "companies": [co.as_dict() for co in self.companies], "notes": self.notes}


class _Row(NamedTuple):
    company: Any  # companies.id (an int), None, or a value that names no company
    key: str
    row_id: Any
    path: str
    digest: Any
    ref: int  # index into the declared references (the storage config's order)


def _company_expr(column: str) -> str:
    """The company column as an integer where it holds one, so that 5, 5.0 and '5' sort (and group) together."""
    c = quoted(column)
    return (f"CASE WHEN typeof({c}) = 'integer' THEN {c} "
            f"WHEN typeof({c}) = 'real' AND {c} = CAST({c} AS INTEGER) THEN CAST({c} AS INTEGER) "
            f"WHEN typeof({c}) = 'text' AND {c} != '' AND {c} NOT GLOB '*[^0-9]*' THEN CAST({c} AS INTEGER) "
            f"ELSE {c} END")


class _Rows:
    """The platform database's reference rows, streamed in (company, key) order from a connection of its own."""

    def __init__(self, path: Path, refs: list[Declared]) -> None:
        self.path = path
        self.refs = refs
        self._limiter = anyio.CapacityLimiter(1)  # one thread at a time on the connection
        self._db: sqlite3.Connection | None = None

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    async def open(self) -> None:
        def connect() -> sqlite3.Connection:
            try:
                db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
                db.execute("PRAGMA query_only = ON")  # this connection only reads the platform's rows
            except sqlite3.Error as exc:
                raise ConfigError(f"cannot open the platform database {self.path}: {exc}") from exc
            refs = self.refs
            db.create_function("vf_key", 2, lambda i, p: refs[i].key_of(str(p)), deterministic=True)
            db.create_function("vf_match", 2, lambda i, p: refs[i].matches(str(p)), deterministic=True)
            return db

        self._db = await self._run(connect)

    async def aclose(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            with anyio.CancelScope(shield=True):
                await self._run(db.close)

    @property
    def db(self) -> sqlite3.Connection:
        assert self._db is not None
        return self._db

    async def check(self) -> None:
        """The declared tables and columns exist, and each ``url_pattern`` matches some path of its column."""
        await self._run(lambda: check_database(self.db, self.refs, where=str(self.path)))
        for i, ref in enumerate(self.refs):
            pattern = ref.settings.url_pattern
            if pattern is None:
                continue
            t, c, rid = quoted(ref.table), quoted(ref.column), quoted(ref.settings.id_column)
            base = f"FROM {t} WHERE {c} IS NOT NULL AND {c} != ''"

            def probe(sql: str, args: tuple[Any, ...] = ()) -> Any:
                return self.db.execute(sql, args).fetchone()

            if await self._run(probe, f"SELECT 1 {base} AND vf_match(?, {c}) LIMIT 1", (i,)) is not None:
                continue
            first = await self._run(probe, f"SELECT {rid}, {c} {base} LIMIT 1")
            if first is not None:
                raise ConfigError(f"references.{ref.name}.url_pattern {pattern!r} matches none of the paths in "
                                  f"{ref.name} (row {first[0]}: {str(first[1])!r}): fix the pattern, or remove it "
                                  "if the column holds keys relative to the company's folder")

    def _select(self, i: int, ref: Declared, company_id: int | None) -> tuple[str, list[Any]]:
        s = ref.settings
        t, c = quoted(ref.table), quoted(ref.column)
        key = f"CAST({c} AS TEXT)" if s.url_pattern is None else f"vf_key({i}, {c})"
        digest = quoted(s.digest_column) if s.digest_column else "NULL"
        where = f"{c} IS NOT NULL AND {c} != ''"
        args: list[Any] = []
        if company_id is not None:  # the column itself, so that an index on it serves the query
            where += f" AND {quoted(s.company_column)} = ?"
            args.append(company_id)
        return (f"SELECT {_company_expr(s.company_column)} AS cid, {key} AS k, {quoted(s.id_column)} AS rid, "
                f"CAST({c} AS TEXT) AS path, {digest} AS digest, {i} AS ref FROM {t} WHERE {where}"), args

    async def rows(self, indexes: list[int], company_id: int | None) -> AsyncIterator[_Row]:
        """The rows of the references ``indexes`` (one content type), ordered by company and key."""
        parts, args = [], []
        for i in indexes:
            sql, a = self._select(i, self.refs[i], company_id)
            parts.append(sql)
            args.extend(a)
        sql = " UNION ALL ".join(parts) + " ORDER BY cid, k, ref, rid"
        cur = await self._run(self.db.execute, sql, args)
        try:
            while batch := await self._run(cur.fetchmany, FETCH_ROWS):
                for cid, k, rid, path, digest, ref in batch:
                    yield _Row(cid, k, rid, path, digest, ref)
        finally:
            with anyio.CancelScope(shield=True):
                await self._run(cur.close)


class _Peek:
    """An async iterator with one item of look-ahead."""

    _EMPTY = object()

    def __init__(self, it: AsyncIterator[_Row]) -> None:
        self.it = it
        self._next: Any = self._EMPTY

    async def peek(self) -> _Row | None:
        if self._next is self._EMPTY:
            self._next = await anext(self.it, None)
        return self._next  # type: ignore[no-any-return]

    async def pop(self) -> _Row | None:
        item = await self.peek()
        self._next = self._EMPTY
        return item

    async def take_while(self, pred: Callable[[_Row], bool]) -> AsyncIterator[_Row]:
        while (item := await self.peek()) is not None and pred(item):
            self._next = self._EMPTY
            yield item


def _is_marker(key: str) -> bool:
    return key.rsplit("/", 1)[-1] == FOLDER_MARKER


async def _digest(backend: Backend, info: ObjectInfo, algorithm: str) -> str:
    """The file's hex digest: the store's own where it reports one, else read and hashed."""
    if info.hashes.get(algorithm):
        return info.hashes[algorithm].lower()
    if algorithm in backend.features.stat_hashes:
        stat = await backend.stat(info.key)
        if stat.hashes.get(algorithm):
            return stat.hashes[algorithm].lower()
    if algorithm == SHA256 and backend.features.local_path:
        return (await backend.file_sha256(info.key)).lower()
    h = hashlib.new(algorithm)
    async with backend.open(info.key) as chunks:
        async for chunk in chunks:
            h.update(chunk)
    return h.hexdigest()


def _why_missing(key: str) -> str:
    try:
        check_key(key)
    except InvalidKey as exc:
        return f"not a key of the company's files ({exc.args[0] if exc.args else exc})"
    return "missing"


class _Orphans:
    """Orphans spooled to a temporary SQLite file (flat memory), to be deleted after the whole check."""

    def __init__(self, spill_dir: str | None) -> None:
        self._tmp = tempfile.TemporaryDirectory(dir=spill_dir, prefix="vertexflow-orphans-")
        self.db = sqlite3.connect(Path(self._tmp.name) / "orphans.db", check_same_thread=False)
        self.db.execute("CREATE TABLE o (company INTEGER, ct TEXT, key TEXT, mtime REAL)")
        self._batch: list[tuple[int, str, str, float | None]] = []

    def add(self, company: int, ct: str, info: ObjectInfo) -> None:
        self._batch.append((company, ct, info.key, info.mtime.timestamp() if info.mtime else None))
        if len(self._batch) >= 5000:
            self.flush()

    def flush(self) -> None:
        with self.db:
            self.db.executemany("INSERT INTO o VALUES (?, ?, ?, ?)", self._batch)
        self._batch = []

    def close(self) -> None:
        self.db.close()
        self._tmp.cleanup()


async def _merge(rows: AsyncIterator[_Row], backend: Backend, out: ContentRefs, refs: list[Declared], *,
                 company: str | None, checksum: bool, shown: int, spill_dir: str | None,
                 on_orphan: Callable[[ObjectInfo], None] | None) -> None:
    """Merge one company's rows of one content type (key order) with its store's listing (key order)."""
    listing = empty_if_missing(ordered_listing(backend, spill_dir=spill_dir))

    def orphan(info: ObjectInfo) -> None:
        if _is_marker(info.key):
            return
        out.files += 1
        out.orphans += 1
        out.orphan_bytes += info.size or 0
        if len(out.first_orphans) < shown:
            out.first_orphans.append(info.key)
        if on_orphan is not None:
            on_orphan(info)

    def dangling(row: _Row, why: str) -> None:
        if len(out.first_dangling) < shown:
            out.first_dangling.append(DanglingRef(refs[row.ref].name, row.row_id, row.path, row.key, why, company))

    async with aclosing(listing):  # type: ignore[type-var]
        cur = await anext(listing, None)
        last: str | None = None
        found: ObjectInfo | None = None
        digests: dict[str, str] = {}
        async for row in rows:
            out.rows += 1
            if row.key != last:
                if last is not None and row.key < last:  # the query orders them: a broken order is a bug
                    raise RuntimeError(f"reference rows out of key order: {row.key!r} after {last!r}")
                while cur is not None and cur.key < row.key:
                    orphan(cur)
                    cur = await anext(listing, None)
                if cur is not None and cur.key == row.key:
                    found = cur
                    out.referenced += 1
                    if not _is_marker(cur.key):
                        out.files += 1
                    cur = await anext(listing, None)
                else:
                    found = None
                last, digests = row.key, {}
            if found is None:
                out.dangling += 1
                dangling(row, _why_missing(row.key))
                continue
            if not checksum or row.digest is None or str(row.digest).strip() == "":
                continue
            algorithm = refs[row.ref].settings.digest_algorithm
            if algorithm not in digests:
                digests[algorithm] = await _digest(backend, found, algorithm)
            out.digests_checked += 1
            want = str(row.digest).strip().lower()
            if want != digests[algorithm]:
                out.mismatched += 1
                dangling(row, f"{algorithm} differs: the row says {want}, the file is {digests[algorithm]}")
        while cur is not None:
            orphan(cur)
            cur = await anext(listing, None)


def _content_refs(manager: StorageManager) -> dict[str, list[int]]:
    """Content type -> indexes of its declared references (in the storage config's order)."""
    by_ct: dict[str, list[int]] = {}
    for i, ref in enumerate(declared(manager.config.references)):
        by_ct.setdefault(ref.content_type, []).append(i)
    return by_ct


async def check_references(manager: StorageManager, company_ref: int | str | None = None, *,
                           checksum: bool = False, shown: int = DEFAULT_SHOWN, delete_orphans: bool = False,
                           dry_run: bool = False, max_delete: int | None = None,
                           orphan_min_age: float = DEFAULT_ORPHAN_MIN_AGE, spill_dir: str | None = None,
                           adapters: Mapping[str, StorageAdapter] | None = None) -> RefsReport:
    """Check the declared references of one company (``company_ref``) or of all (None); see the module docstring.

    ``adapters`` (content type -> adapter) checks one company against those stores instead of its
    current route (a migration's target). Raises :class:`ConfigError` for bad declarations (a table
    or column that does not exist, a ``url_pattern`` that matches no path), an unknown company, and
    for more orphans to delete than ``max_delete`` (nothing deleted).
    """
    refs = declared(manager.config.references)
    if not refs:
        raise ConfigError(f"the storage config {manager.config.source or '(none given)'} declares no references: "
                          "add a \"references\" section naming the columns that hold file paths "
                          "(docs/references.md)")
    registry = manager.require_registry()
    one = manager.company(company_ref) if company_ref is not None else None
    companies = [one] if one is not None else sorted(registry.companies(), key=lambda c: c.id)
    by_ct = _content_refs(manager)
    report = RefsReport(checksum=checksum, companies=[CompanyRefs(c.id, c.slug) for c in companies])
    by_id = {c.id: c for c in report.companies}
    source = _Rows(registry.path, refs)
    orphans = _Orphans(spill_dir) if delete_orphans else None
    try:
        await source.open()
        await source.check()
        for ct, indexes in by_ct.items():
            names = [refs[i].name for i in indexes]
            rows = _Peek(source.rows(indexes, one.id if one is not None else None))
            try:
                for company in companies:
                    # rows before this company's: no company (NULL), or one that does not exist
                    while (r := await rows.peek()) is not None and (
                            r.company is None or (isinstance(r.company, int) and r.company < company.id)):
                        _unattached(report, await rows.pop(), refs, shown)  # type: ignore[arg-type]
                    if adapters is not None:
                        adapter, owned = adapters[ct], False
                    else:
                        adapter, owned = manager.adapter_for(manager.target(company, ct)), True
                    out = ContentRefs(ct, adapter.describe(), names)
                    by_id[company.id].content.append(out)
                    sink = None
                    if orphans is not None:
                        sink = (lambda info, cid=company.id, ct=ct: orphans.add(cid, ct, info))  # type: ignore[misc]
                    try:
                        await _merge(rows.take_while(lambda r, cid=company.id: r.company == cid),  # type: ignore[misc]
                                     adapter.backend, out, refs, company=company.slug, checksum=checksum,
                                     shown=shown, spill_dir=spill_dir, on_orphan=sink)
                    finally:
                        if owned:
                            with anyio.CancelScope(shield=True):
                                await adapter.aclose()
                while (r := await rows.pop()) is not None:
                    _unattached(report, r, refs, shown)
            finally:
                await _close(rows.it)
        for co in report.companies:
            if co.rows == 0:
                report.notes.append(f"no row of {', '.join(r.name for r in refs)} belongs to company {co.slug} "
                                    f"(id {co.id}): nothing references its files, so every one of them is "
                                    "counted as an orphan")
        if report.unowned:
            report.notes.append(f"{report.unowned} rows have no company (their company column is NULL): "
                                "not checked")
        if orphans is not None:
            orphans.flush()
            await _delete_orphans(manager, report, orphans, dry_run=dry_run, max_delete=max_delete,
                                  min_age=orphan_min_age)
    finally:
        await source.aclose()
        if orphans is not None:
            orphans.close()
    return report


async def _close(it: AsyncIterator[Any]) -> None:
    """Close an async generator left part-read (its database cursor with it)."""
    close = getattr(it, "aclose", None)
    if close is not None:
        with anyio.CancelScope(shield=True):
            await close()


def _unattached(report: RefsReport, row: _Row, refs: list[Declared], shown: int) -> None:
    if row.company is None:
        report.unowned += 1
        return
    report.unknown_company += 1
    if len(report.first_unknown) < shown:
        report.first_unknown.append(DanglingRef(refs[row.ref].name, row.row_id, row.path, row.key,
                                                f"no company {row.company!r} in the companies table"))


async def _delete_orphans(manager: StorageManager, report: RefsReport, orphans: _Orphans, *, dry_run: bool,
                          max_delete: int | None, min_age: float) -> None:
    """Delete the orphans of each place that may lose them (see the module docstring); ConfigError over max_delete."""
    cutoff = time.time() - min_age
    eligible: list[tuple[int, ContentRefs]] = []
    for co in report.companies:
        for c in co.content:
            if c.orphans == 0:
                continue
            if c.problems:
                c.kept = (f"{c.problems} references of it dangle or differ: a declaration or a route that does not "
                          "match the files makes files look unreferenced; fix those first")
            elif c.rows == 0:
                c.kept = "no row references this company's files: a company_column naming the wrong column would " \
                         "look the same; delete them by hand if they really are unreferenced"
            else:
                eligible.append((co.id, c))
    db = orphans.db
    total = 0
    for cid, c in eligible:
        c.young = db.execute("SELECT count(*) FROM o WHERE company = ? AND ct = ? AND (mtime IS NULL OR mtime > ?)",
                             (cid, c.content_type, cutoff)).fetchone()[0]
        total += c.orphans - c.young
    if max_delete is not None and total > max_delete:
        slugs = {co.id: co.slug for co in report.companies}
        first = next((f"company {slugs[cid]} {c.content_type} {c.first_orphans[0]}" for cid, c in eligible
                      if c.first_orphans), "?")
        raise ConfigError(f"{total} orphans to delete (first: {first}), more than --max-delete {max_delete}; nothing "
                          f"was deleted. List them with --dry-run; allow it with --max-delete {total}")
    report.state = "dry_run" if dry_run else "deleted"
    for cid, c in eligible:
        if dry_run:
            c.deleted = c.orphans - c.young
            continue
        limiter = anyio.CapacityLimiter(DELETE_CONCURRENCY)
        cur = db.execute("SELECT key FROM o WHERE company = ? AND ct = ? AND mtime IS NOT NULL AND mtime <= ?",
                         (cid, c.content_type, cutoff))

        async def delete(key: str, cid: int = cid, c: ContentRefs = c) -> None:
            async with limiter:
                try:  # through the manager: a delete during a live migration reaches both stores
                    await manager.delete_file(c.content_type, key, company_id=cid)
                except NotFound:
                    pass
                c.deleted += 1

        while batch := cur.fetchmany(FETCH_ROWS):
            async with anyio.create_task_group() as tg:
                for (key,) in batch:
                    tg.start_soon(delete, key)
        if c.young:
            c.kept = f"{c.young} orphans younger than the minimum age kept"


async def refuse_dangling(manager: StorageManager, company: Company, adapters: Mapping[str, StorageAdapter], *,
                          migration_id: int | None = None) -> None:
    """Raise :class:`MigrationFailed` when a reference of ``company`` would dangle on ``adapters`` (a target).

    Nothing is checked when the storage config declares no references.
    """
    if not manager.config.references:
        return
    report = await check_references(manager, company.id, shown=1, adapters=adapters)
    if report.ok:
        return
    first = report.first_problem()
    where = ", ".join(sorted({c.where for co in report.companies for c in co.content if c.dangling}))
    raise MigrationFailed(f"reference check of company {company.slug} on {where or 'the target'} failed: "
                          f"{report.dangling} references would dangle there (first: "
                          f"{first.describe() if first else '?'}); `vertexflow company refs {company.slug}` lists "
                          "them on its current route", migration_id=migration_id)
