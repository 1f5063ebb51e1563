"""Tar without tarfile's file objects: headers for a stream we write, a push parser for one we read.

Writing: :func:`member_header` gives the header block(s) of a regular file
and :func:`directory_header` those of a directory (POSIX pax where a name
needs it, plain ustar otherwise), :func:`padding`
the zeros after its data and :func:`end_of_archive` the closing blocks, so
the archive is produced while the objects stream and never exists whole.

Reading: :class:`TarParser` takes decompressed bytes in any slices and
returns events (:class:`Member`, data pieces, :data:`END_MEMBER`). It reads
ustar, pax (``x`` records; ``g`` global headers are skipped) and GNU long
names, which covers archives written by vertexflow, GNU tar and bsdtar.
:func:`safe_key` is the restore rule for where a member may go.
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass

from ...errors import CorruptArchive, UnsafeArchive

BLOCK = 512
#: tar(1) pads an archive to whole records of 20 blocks; readers do not need it, we do it for likeness
RECORD = 20 * BLOCK
#: a pax or GNU long-name header larger than this is refused (a name is at most a few KiB)
MAX_META = 1024 * 1024
_ZERO = bytes(BLOCK)


def member_header(name: str, size: int, mtime: float) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = int(mtime)
    info.mode = 0o644
    info.type = tarfile.REGTYPE
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def directory_header(name: str, mtime: float) -> bytes:
    """A directory member (``tar -x`` creates it, empty or not); tarfile ends its name with "/"."""
    info = tarfile.TarInfo(name)
    info.mtime = int(mtime)
    info.mode = 0o755
    info.type = tarfile.DIRTYPE
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def padding(size: int) -> bytes:
    return bytes(-size % BLOCK)


def end_of_archive(offset: int) -> bytes:
    """Two zero blocks, then zeros up to a whole record; ``offset`` is the archive length so far."""
    end = offset + 2 * BLOCK
    return bytes(2 * BLOCK + (-end % RECORD))


@dataclass(frozen=True, slots=True)
class Member:
    name: str
    size: int
    type: bytes  # a tarfile type constant
    linkname: str
    mtime: float

    @property
    def is_file(self) -> bool:
        return self.type in (tarfile.REGTYPE, tarfile.AREGTYPE)

    @property
    def is_dir(self) -> bool:
        return self.type == tarfile.DIRTYPE


#: event: the current member's data has all been given
END_MEMBER = object()

_HEADER, _DATA, _PAD, _META, _AFTER_END = range(5)


class TarParser:
    """Push parser: ``feed(data)`` returns events in stream order.

    Events are :class:`Member` (before its data), ``bytes`` (data of the
    current member, in order) and :data:`END_MEMBER`. :attr:`ended` turns
    true at the end-of-archive marker; :meth:`finish` raises
    :class:`CorruptArchive` if the stream stopped before it.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._state = _HEADER
        self._remaining = 0  # bytes of data (or meta) left in the current entry
        self._pad = 0
        self._meta = bytearray()
        self._meta_type = b""
        self._pax: dict[str, str] = {}
        self._long_name: str | None = None
        self._long_link: str | None = None
        self.ended = False
        self.members = 0

    def feed(self, data: bytes | memoryview) -> list[object]:
        events: list[object] = []
        view = memoryview(data)
        while view:
            if self._state == _AFTER_END:
                return events  # what follows the end marker (record padding) is not looked at
            if self._state == _DATA:
                piece = view[:self._remaining]
                view = view[len(piece):]
                self._remaining -= len(piece)
                # a piece that is the whole input is handed on as is: no copy
                events.append(data if len(piece) == len(data) and isinstance(data, bytes) else bytes(piece))
                if self._remaining == 0:
                    events.append(END_MEMBER)
                    self._state = _PAD
                continue
            if self._state == _PAD:
                skip = min(self._pad, len(view))
                view, self._pad = view[skip:], self._pad - skip
                if self._pad == 0:
                    self._state = _HEADER
                continue
            if self._state == _META:
                piece = view[:self._remaining]
                view = view[len(piece):]
                self._remaining -= len(piece)
                self._meta += piece
                if self._remaining == 0:
                    self._end_meta()
                continue
            # _HEADER: gather one block
            take = BLOCK - len(self._buf)
            self._buf += view[:take]
            view = view[take:]
            if len(self._buf) == BLOCK:
                block, self._buf = bytes(self._buf), bytearray()
                self._header(block, events)
        return events

    def _header(self, block: bytes, events: list[object]) -> None:
        if block == _ZERO:
            self.ended = True
            self._state = _AFTER_END
            return
        try:
            info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
        except tarfile.HeaderError as exc:
            raise CorruptArchive(f"bad tar header after {self.members} members: {exc}") from None
        size = info.size
        if info.type in (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE,
                         tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK):
            if size > MAX_META:
                raise CorruptArchive(f"a {info.type!r} header of {size} bytes is too large")
            self._meta_type, self._meta = info.type, bytearray()
            self._remaining, self._pad = size, -size % BLOCK
            self._state = _META if size else _HEADER
            if not size:
                self._end_meta()
            return
        name = self._pax.pop("path", None) or self._long_name or info.name
        link = self._pax.pop("linkpath", None) or self._long_link or info.linkname
        if "size" in self._pax:
            try:
                size = int(self._pax.pop("size"))
            except ValueError:
                raise CorruptArchive(f"member {name!r}: bad pax size") from None
        self._pax.clear()
        self._long_name = self._long_link = None
        has_data = info.type not in (tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE,
                                     tarfile.BLKTYPE, tarfile.FIFOTYPE)
        size = size if has_data else 0
        self.members += 1
        events.append(Member(name=name, size=size, type=info.type, linkname=link, mtime=info.mtime))
        self._remaining, self._pad = size, -size % BLOCK
        if size:
            self._state = _DATA
        else:
            events.append(END_MEMBER)
            self._state = _HEADER

    def _end_meta(self) -> None:
        data = bytes(self._meta)
        self._state = _PAD if self._pad else _HEADER
        if self._meta_type in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK):
            text = data.rstrip(b"\x00").decode("utf-8", "surrogateescape")
            if self._meta_type == tarfile.GNUTYPE_LONGNAME:
                self._long_name = text
            else:
                self._long_link = text
            return
        records = _pax_records(data)
        if self._meta_type != tarfile.XGLTYPE:  # global headers set defaults we do not use
            self._pax.update(records)

    def finish(self) -> None:
        if not self.ended:
            where = "inside a member" if self._state in (_DATA, _META, _PAD) else "before the end-of-archive marker"
            raise CorruptArchive(f"the archive is truncated: it stops {where} (after {self.members} members)")


def _pax_records(data: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        try:
            length = int(data[pos:space])
        except ValueError:
            raise CorruptArchive("bad pax header record") from None
        record = data[space + 1:pos + length]
        if length <= 0 or not record.endswith(b"\n") or b"=" not in record:
            raise CorruptArchive("bad pax header record")
        key, _, value = record[:-1].partition(b"=")
        out[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return out


_KIND = {tarfile.CHRTYPE: "a character device", tarfile.BLKTYPE: "a block device", tarfile.FIFOTYPE: "a fifo"}


def safe_key(member: Member) -> str | None:
    """The backend key (or folder path) a member restores to; None only for the archive's root ("./").

    A file's key, or a directory's path without its trailing "/" (``docs/empty``).

    Raises :class:`UnsafeArchive` for an absolute path, a ".." segment, a NUL,
    a symbolic or hard link (object stores cannot hold one; one pointing
    outside the target is named as an escape), a device file, a fifo or any
    other special member.
    """
    name = member.name
    if "\x00" in name:
        raise UnsafeArchive(f"member {name!r}: the name holds a NUL byte")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":" and name[0].isalpha()):
        raise UnsafeArchive(f"member {name!r}: absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchive(f"member {name!r}: path traversal ('..' segment)")
    if member.type in (tarfile.SYMTYPE, tarfile.LNKTYPE):
        kind = "symbolic link" if member.type == tarfile.SYMTYPE else "hard link"
        target = member.linkname
        base = parts[:-1] if member.type == tarfile.SYMTYPE else []
        escapes = target.startswith("/") or _escapes(base, target)
        if escapes:
            raise UnsafeArchive(f"member {name!r}: {kind} to {target!r} points outside the target")
        raise UnsafeArchive(f"member {name!r}: {kind} to {target!r}; links cannot be restored to object storage")
    if member.type in _KIND:
        raise UnsafeArchive(f"member {name!r}: {_KIND[member.type]}")
    if member.type == tarfile.DIRTYPE:
        return "/".join(parts) or None
    if not member.is_file:
        raise UnsafeArchive(f"member {name!r}: unsupported member type {member.type!r}")
    if not parts:
        raise UnsafeArchive(f"member {name!r}: empty path")
    return "/".join(parts)


def _escapes(base: list[str], target: str) -> bool:
    depth = len(base)
    for p in target.split("/"):
        if p == "..":
            depth -= 1
            if depth < 0:
                return True
        elif p not in ("", "."):
            depth += 1
    return False
