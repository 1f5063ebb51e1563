"""The emulated disk's folders and files, the trash, and their persistence.

Paths arrive as ``disk:/a/b`` (or ``/a/b``, or ``a/b``) and are kept as a
tuple of names; answers always spell them ``disk:/a/b``. Every change goes
through :meth:`Tree.set` (put a subtree at a path, or remove it), which also
keeps blob references and space accounting right and, with a data
directory, appends the change to a journal (one JSON line) that is replayed
on the next start and then compacted into a snapshot.
"""

from __future__ import annotations

import json
import mimetypes
import os
import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from . import _errors as err
from ._blobs import BlobStore

DISK = "disk"
TRASH = "trash"
Parts = tuple[str, ...]

# Yandex's own media types for the most common MIME families.
_MEDIA_BY_MIME = {
    "application/pdf": "document", "application/msword": "document", "text/plain": "document",
    "application/zip": "compressed", "application/gzip": "compressed", "application/x-tar": "compressed",
    "application/x-7z-compressed": "compressed", "application/x-rar-compressed": "compressed",
    "application/json": "text", "text/html": "web", "text/css": "web",
    "application/octet-stream": "unknown",
}


def format_time(t: int) -> str:
    """``2024-07-06T21:06:25+00:00``: whole seconds, explicit offset, as the service writes them."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def guess_types(name: str) -> tuple[str, str]:
    mime = mimetypes.guess_type(name, strict=False)[0] or "application/octet-stream"
    media = _MEDIA_BY_MIME.get(mime) or mime.split("/")[0]
    if media not in ("image", "video", "audio", "text", "document", "compressed", "web", "unknown"):
        media = "document" if media == "application" else "unknown"
    return mime, media


def parse_path(raw: str | None, *, area: str = DISK, name: str = "path") -> Parts:
    """Names of a path in ``area``; raises the service's 400 answers for bad ones."""
    if raw is None or raw == "":
        raise err.field_error(name, "This field is required.")
    scheme, sep, rest = raw.partition(":")
    if sep and "/" not in scheme:
        if scheme != area:
            raise err.bad_request(f'Unsupported path "{raw}".')
        if not rest.startswith("/"):
            raise err.bad_request(f'Invalid path "{raw}".')  # "disk:path" is refused
        raw = rest
    parts = tuple(p for p in raw.split("/") if p)
    if any(p in (".", "..") for p in parts):
        raise err.bad_request(f'Invalid path "{raw}".')
    return parts


def display(area: str, parts: Parts) -> str:
    return f"{area}:/" + "/".join(parts)


@dataclass(slots=True, eq=False)
class Node:
    """A folder (``children`` set) or a file (``sha256`` names its blob)."""

    type: str
    created: int
    modified: int
    resource_id: str
    revision: int
    size: int = 0
    md5: str = ""
    sha256: str = ""
    mime_type: str = ""
    media_type: str = ""
    children: dict[str, Node] | None = None
    public_key: str | None = None
    public_url: str | None = None
    custom_properties: dict[str, Any] | None = None
    origin_path: str | None = None  # trash entries only
    deleted: int | None = None

    @property
    def is_dir(self) -> bool:
        return self.children is not None

    def files(self) -> Iterator[Node]:
        stack = [self]
        while stack:
            node = stack.pop()
            if node.children is None:
                yield node
            else:
                stack.extend(node.children.values())

    def nodes(self) -> Iterator[Node]:
        stack = [self]
        while stack:
            node = stack.pop()
            yield node
            if node.children is not None:
                stack.extend(node.children.values())

    def total_size(self) -> int:
        return sum(f.size for f in self.files())

    def to_json(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in ("type", "created", "modified", "resource_id", "revision")}
        for k in ("size", "md5", "sha256", "mime_type", "media_type", "public_key", "public_url",
                  "custom_properties", "origin_path", "deleted"):
            v = getattr(self, k)
            if v:
                out[k] = v
        if self.children is not None:
            out["children"] = {name: child.to_json() for name, child in self.children.items()}
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Node:
        data = dict(data)
        children = data.pop("children", None)
        node = cls(**data)
        if children is not None:
            node.children = {name: cls.from_json(c) for name, c in children.items()}
        return node


class Ids:
    """Resource ids, revisions, public keys and operation ids (seeded: reproducible runs)."""

    UID = "1130000001"

    def __init__(self, seed: int | None) -> None:
        self._rng = random.Random(seed)
        self._last_revision = 0

    def hex(self, bits: int = 256) -> str:
        return f"{self._rng.getrandbits(bits):0{bits // 4}x}"

    def resource_id(self) -> str:
        return f"{self.UID}:{self.hex()}"

    def token(self, nbytes: int = 12) -> str:
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
        return "".join(self._rng.choice(alphabet) for _ in range(nbytes))

    def revision(self) -> int:
        # microseconds since the epoch, strictly increasing, like the service's
        self._last_revision = max(self._last_revision + 1, time.time_ns() // 1000)
        return self._last_revision

    def seen_revision(self, revision: int) -> None:
        self._last_revision = max(self._last_revision, revision)


class Journal:
    """``state.json`` (a snapshot) plus ``journal.jsonl`` (changes since)."""

    def __init__(self, directory: Path) -> None:
        self.snapshot = directory / "state.json"
        self.log = directory / "journal.jsonl"
        self._fh: TextIO | None = None

    def load(self) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        snap = json.loads(self.snapshot.read_text("utf-8")) if self.snapshot.exists() else None
        changes = []
        if self.log.exists():
            with open(self.log, encoding="utf-8") as fh:
                for line in fh:
                    try:
                        changes.append(json.loads(line))
                    except json.JSONDecodeError:
                        break  # a torn last line from a crash
        return snap, changes

    def compact(self, roots: dict[str, Node]) -> None:
        tmp = self.snapshot.with_suffix(".tmp")
        tmp.write_text(json.dumps({a: n.to_json() for a, n in roots.items()}, ensure_ascii=False), "utf-8")
        os.replace(tmp, self.snapshot)
        self.close()
        self._fh = open(self.log, "w", encoding="utf-8")  # noqa: SIM115 - kept open for appends

    def append(self, record: dict[str, Any]) -> None:
        if self._fh is None:
            self._fh = open(self.log, "a", encoding="utf-8")  # noqa: SIM115
        self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


@dataclass
class Tree:
    blobs: BlobStore
    ids: Ids
    journal: Journal | None = None
    roots: dict[str, Node] = field(default_factory=dict)
    used_space: int = 0
    trash_size: int = 0

    def __post_init__(self) -> None:
        now = int(time.time())
        for area in (DISK, TRASH):
            self.roots[area] = self.new_dir(now)
        if self.journal is not None:
            self._load()

    # -- building nodes ---------------------------------------------------
    def new_dir(self, now: int | None = None) -> Node:
        now = int(time.time()) if now is None else now
        return Node(type="dir", created=now, modified=now, resource_id=self.ids.resource_id(),
                    revision=self.ids.revision(), children={})

    def new_file(self, name: str, size: int, sha256: str, md5: str, created: int | None = None) -> Node:
        now = int(time.time())
        mime, media = guess_types(name)
        return Node(type="file", created=created or now, modified=now, resource_id=self.ids.resource_id(),
                    revision=self.ids.revision(), size=size, md5=md5, sha256=sha256,
                    mime_type=mime, media_type=media)

    def clone(self, node: Node) -> Node:
        """A copy with fresh identities (what a server-side copy creates)."""
        data = node.to_json()
        copy = Node.from_json(data)
        for n in copy.nodes():
            n.resource_id = self.ids.resource_id()
            n.revision = self.ids.revision()
            n.public_key = n.public_url = None
        return copy

    # -- reading ----------------------------------------------------------
    def get(self, area: str, parts: Parts) -> Node | None:
        node = self.roots[area]
        for name in parts:
            if node.children is None:
                return None
            node = node.children.get(name)  # type: ignore[assignment]
            if node is None:
                return None
        return node

    def require(self, area: str, parts: Parts) -> Node:
        node = self.get(area, parts)
        if node is None:
            raise err.not_found()
        return node

    def parent_dir(self, area: str, parts: Parts) -> Node:
        """The folder that holds ``parts``; the service's 409 when there is none."""
        parent = self.get(area, parts[:-1])
        if parent is None or not parent.is_dir:
            raise err.parent_missing(display(area, parts[:-1]))
        return parent

    # -- the one way to change anything -----------------------------------
    def set(self, area: str, parts: Parts, node: Node | None) -> Node | None:
        """Put ``node`` at ``parts`` (replacing what is there) or remove it; returns the old node."""
        if not parts:
            raise err.bad_request("The root cannot be replaced.")
        old = self._apply(area, parts, node)
        for f in old.files() if old is not None else ():
            self.blobs.decref(f.sha256)
        if self.journal is not None:
            self.journal.append({"area": area, "path": list(parts),
                                 "node": node.to_json() if node is not None else None})
        return old

    def _apply(self, area: str, parts: Parts, node: Node | None) -> Node | None:
        parent = self.get(area, parts[:-1])
        assert parent is not None and parent.children is not None, "callers check the parent"
        old = parent.children.pop(parts[-1], None)
        if node is not None:
            parent.children[parts[-1]] = node
        delta = 0
        if old is not None:
            delta -= old.total_size()
        if node is not None:
            for f in node.files():
                self.blobs.incref(f.sha256)
            delta += node.total_size()
        self.used_space += delta
        if area == TRASH:
            self.trash_size += delta
        return old

    # -- persistence ------------------------------------------------------
    def _load(self) -> None:
        assert self.journal is not None
        snap, changes = self.journal.load()
        if snap is not None:
            self.roots = {area: Node.from_json(data) for area, data in snap.items()}
        for change in changes:
            node = Node.from_json(change["node"]) if change["node"] is not None else None
            parent = self.get(change["area"], tuple(change["path"][:-1]))
            if parent is not None and parent.is_dir:
                self._apply(change["area"], tuple(change["path"]), node)
        counts: Counter[str] = Counter()
        self.used_space = self.trash_size = 0
        for area, root in self.roots.items():
            for n in root.nodes():
                self.ids.seen_revision(n.revision)
            for f in root.files():
                counts[f.sha256] += 1
                self.used_space += f.size
                if area == TRASH:
                    self.trash_size += f.size
        self.blobs.reset_refs(counts)
        self.journal.compact(self.roots)
