"""``backup verify``: every part's SHA-256, the archive read through to its end, the database's integrity.

MEMBERS.sha256 and MEMBERS.jsonl are checked against the metadata (size,
SHA-256) and each other (one description per listed file).

Problems are collected, not raised, each named by the part, object or
member it concerns, so one run reports everything it can see: after a
broken part the remaining parts are still hashed, but the archive is not
read further (what follows cannot be trusted).

Like a restore, a read that fails a check is made once more before it is
reported (:func:`.reading.reread`): the member lists and the database copy
each, the archive as a whole pass; a byte changed on the way reads right
the second time, damage in the store is reported by the second read.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field

from ...errors import BackupError, IntegrityError, UnsafeArchive
from .parts import Problem, scan_archive
from .reading import (
    READS,
    Members,
    Opened,
    failed_check,
    fetch_database,
    load_descriptions,
    load_members,
    platform_problems,
    reading_again,
)
from .tarstream import END_MEMBER, Member, safe_key


@dataclass(slots=True)
class VerifyReport:
    backup: str
    problems: list[Problem] = field(default_factory=list)
    files: int = 0
    bytes: int = 0
    parts: int = 0
    directories: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, object]:
        return {"backup": self.backup, "ok": self.ok, "parts": self.parts, "files": self.files,
                "bytes": self.bytes, "directories": self.directories, "problems": [{"where": p.where, "what": p.what} for p in self.problems]}


async def verify_backup(opened: Opened) -> VerifyReport:
    report = VerifyReport(opened.name)
    meta = opened.meta
    if meta.storage is not None:
        await _verify_storage(opened, report)
    if meta.database is not None:
        with tempfile.TemporaryDirectory(prefix="vertexflow-verify-") as tmp:
            try:
                await fetch_database(opened, os.path.join(tmp, "database.sqlite3"))
            except (BackupError, IntegrityError) as exc:
                report.problems.append(Problem(meta.database.stored.name, getattr(exc, "message", str(exc))))
    return report


async def _verify_storage(opened: Opened, report: VerifyReport) -> None:
    section = opened.meta.storage
    assert section is not None
    report.parts = len(section.parts)
    try:
        members: Members | None = await load_members(opened.folder, section, bid=opened.name)
    except (BackupError, IntegrityError) as exc:
        report.problems.append(Problem(section.members.name, getattr(exc, "message", str(exc))))
        members = None
    if members is not None and opened.meta.platform is not None:
        report.problems.extend(Problem(where, what) for where, what in platform_problems(opened.meta.platform, members))
    if members is not None and section.descriptions is not None:
        try:
            await load_descriptions(opened.folder, section, members, bid=opened.name)
        except (BackupError, IntegrityError) as exc:
            report.problems.append(Problem(section.descriptions.name, getattr(exc, "message", str(exc))))
    seen: set[str] = set()
    seen_dirs: set[str] = set()
    listed_dirs = members.directories if members is not None and section.directories is not None else None
    current: Member | None = None
    h = hashlib.sha256()
    before = len(report.problems)
    def handle(event: object) -> None:  # runs in the reading worker thread
        nonlocal current, h
        if isinstance(event, Member):
            current, h = event, hashlib.sha256()
            try:
                key = safe_key(event)
            except UnsafeArchive as exc:
                report.problems.append(Problem(event.name, str(exc)))
                return
            if event.is_dir and key is not None:
                report.directories += 1
                seen_dirs.add(key)
                if listed_dirs is not None and key not in listed_dirs:
                    report.problems.append(Problem(event.name, "directory not in MEMBERS.sha256"))
        elif event is END_MEMBER:
            assert current is not None
            if current.is_file:
                report.files += 1
                report.bytes += current.size
                seen.add(current.name)
                if members is not None and members.files.get(current.name) != h.hexdigest():
                    what = ("not in MEMBERS.sha256" if current.name not in members.files
                            else "content differs from MEMBERS.sha256")
                    report.problems.append(Problem(current.name, what))
        else:
            h.update(event)  # type: ignore[arg-type]

    what = f"backup {opened.name}: the parts and the archive"
    for attempt in range(1, READS + 1):
        # each read of the archive starts from nothing: what an earlier read found is not kept
        del report.problems[before:]
        report.files = report.bytes = report.directories = 0
        seen.clear()
        seen_dirs.clear()
        try:
            await scan_archive(opened.folder, section, handle, bid=opened.name, problems=report.problems)
        except Exception as exc:  # noqa: BLE001 - a part whose answer fails the store's digest: a problem of the read
            err = failed_check(exc)
            if attempt == READS or err is None:
                raise
            reading_again(what, err)
            continue
        if len(report.problems) == before:
            break
        if attempt < READS:
            reading_again(what, report.problems[before])
    if len(report.problems) > before:
        return  # the archive was not read through: counts would only repeat the problem
    if report.files != section.files or report.bytes != section.bytes:
        report.problems.append(Problem("archive", f"holds {report.files} files / {report.bytes} bytes, metadata "
                                                  f"says {section.files} / {section.bytes}"))
    if members is not None:
        for name in sorted(set(members.files) - seen)[:20]:
            report.problems.append(Problem(name, "listed in MEMBERS.sha256 but not in the archive"))
    if listed_dirs is not None:
        for name in sorted(listed_dirs - seen_dirs)[:20]:
            report.problems.append(Problem(name + "/", "directory listed in MEMBERS.sha256 but not in the archive"))
