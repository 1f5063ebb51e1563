"""Object filters shared by copy, sync and verify.

Glob rules follow rclone's: ``*`` matches within one path segment, ``**``
across segments, ``?`` one character, ``[abc]`` a set, ``{a,b}`` either
alternative. A pattern without "/" matches the last segment (the file name)
anywhere in the tree; a pattern with "/" matches the whole key (a leading "/"
anchors it at the root). Includes and excludes are checked in order given
below: an object must match an include (if any is given) and no exclude.

``--files-from FILE`` names the keys themselves, one a line (as rclone's:
relative to the location's root, blank lines and lines starting with ``#`` or
``;`` left out, surrounding spaces stripped); only those pass, and the other
filters still apply. ``--include-from`` / ``--exclude-from`` read globs the
same way, as if each line were given to ``--include`` / ``--exclude``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from .errors import ConfigError
from .model import ObjectInfo

_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3, "t": 1024 ** 4}
_AGE_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}


def parse_size(text: str) -> int:
    """``100``, ``1.5M``, ``10k``, ``2G`` (binary units) -> bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([bkmgt]?)(?:i?b)?\s*", text.lower())
    if not m:
        raise ConfigError(f"invalid size {text!r}: use a number with an optional unit k, M, G or T")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2)])


def parse_age(text: str) -> timedelta:
    """``90s``, ``30m``, ``1h``, ``7d``, ``2w``, ``1y``, or combinations like ``1d12h``."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)", text.lower())
    if not parts or "".join(n + u for n, u in parts) != text.lower().replace(" ", ""):
        raise ConfigError(f"invalid age {text!r}: use a number with a unit (s, m, h, d, w, y), e.g. 7d")
    return timedelta(seconds=sum(float(n) * _AGE_UNITS[u] for n, u in parts))


def read_list_file(path: str, option: str) -> list[str]:
    """The lines of a ``--files-from`` / ``--include-from`` / ``--exclude-from`` file, comments and blank
    lines left out; ConfigError naming the option and the file when it cannot be read."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError(f"{option} {path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{option} {path}: a directory, not a file of names") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{option} {path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{option} {path}: {exc.strerror or exc}") from None
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith(("#", ";"))]


def files_from(paths: Sequence[str]) -> frozenset[str] | None:
    """The keys the ``--files-from`` files name (None: none given). A leading ``/`` or ``./`` is the root."""
    if not paths:
        return None
    keys: set[str] = set()
    for path in paths:
        for line in read_list_file(path, "--files-from"):
            key = line
            while key.startswith(("/", "./")):
                key = key[2:] if key.startswith("./") else key[1:]
            if not key or ".." in key.split("/") or "//" in key:
                raise ConfigError(f"--files-from {path}: {line!r} is not a path under the root")
            keys.add(key)
    return frozenset(keys)


def glob_to_regex(pattern: str) -> re.Pattern[str]:
    anchored = pattern.startswith("/")
    body = pattern.lstrip("/")
    out: list[str] = []
    i = 0
    while i < len(body):
        c = body[i]
        if body.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = body.find("]", i + 1)
            if end < 0:
                raise ConfigError(f"invalid glob {pattern!r}: unclosed '['")
            out.append("[" + body[i + 1:end].replace("\\", "\\\\") + "]")
            i = end
        elif c == "{":
            end = body.find("}", i + 1)
            if end < 0:
                raise ConfigError(f"invalid glob {pattern!r}: unclosed '{{'")
            out.append("(?:" + "|".join(re.escape(a) for a in body[i + 1:end].split(",")) + ")")
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    regex = "".join(out)
    # DOTALL and \Z: a key may hold a newline, which ``**`` and the leading folders match like any character
    if "/" in body or anchored:
        return re.compile(("^" if anchored else "^(?:.*/)?") + regex + r"\Z", re.DOTALL)
    return re.compile(r"^(?:.*/)?" + regex + r"\Z", re.DOTALL)


@dataclass(frozen=True, slots=True, kw_only=True)
class Filter:
    include: Sequence[str] = ()
    exclude: Sequence[str] = ()
    min_size: int | None = None
    max_size: int | None = None
    #: objects must be at least / at most this old (by mtime)
    min_age: timedelta | None = None
    max_age: timedelta | None = None
    #: only keys under this prefix (also passed to the listing, so it is cheap)
    prefix: str = ""
    #: only these file extensions (lower case, without the dot), e.g. ("jpg", "png")
    extensions: Sequence[str] = ()
    #: only keys in the half-open range [start_at, end_before) by code point
    #: (None: unbounded); a cluster shard is such a range (vertexflow.distributed)
    start_at: str | None = None
    end_before: str | None = None
    #: only these keys (``--files-from``); None: any key
    files: frozenset[str] | None = None
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    _inc: tuple[re.Pattern[str], ...] = field(init=False, repr=False, default=())
    _exc: tuple[re.Pattern[str], ...] = field(init=False, repr=False, default=())

    def __post_init__(self) -> None:
        if self.files is not None and not isinstance(self.files, frozenset):
            object.__setattr__(self, "files", frozenset(self.files))  # a JSON list, read back
        object.__setattr__(self, "_inc", tuple(glob_to_regex(p) for p in self.include))
        object.__setattr__(self, "_exc", tuple(glob_to_regex(p) for p in self.exclude))

    @property
    def active(self) -> bool:
        return bool(self.include or self.exclude or self.min_size is not None or self.max_size is not None
                    or self.min_age or self.max_age or self.prefix or self.extensions
                    or self.start_at is not None or self.end_before is not None or self.files is not None)

    @property
    def listing_prefix(self) -> str:
        """What a listing may be narrowed to: ``prefix``, or the folder every ``--files-from`` key lies in."""
        if not self.files:
            return self.prefix
        common = os.path.commonprefix(sorted(self.files)[::len(self.files) - 1 or 1])
        folder = common[:common.rfind("/") + 1]
        if self.prefix and not folder.startswith(self.prefix):
            return self.prefix
        return folder

    def matches_key(self, key: str) -> bool:
        if self.files is not None and key not in self.files:
            return False
        if self.prefix and not key.startswith(self.prefix):
            return False
        if (self.start_at is not None and key < self.start_at) or (
                self.end_before is not None and key >= self.end_before):
            return False
        if self.extensions:
            ext = key.rsplit(".", 1)[-1].lower() if "." in key.rsplit("/", 1)[-1] else ""
            if ext not in self.extensions:
                return False
        if self._inc and not any(r.match(key) for r in self._inc):
            return False
        return not any(r.match(key) for r in self._exc)

    def excludes_subtree(self, prefix: str) -> bool:
        """True when no key under ``prefix`` (a folder, without its "/") can match: the ``prefix``
        option points elsewhere, or an exclude glob covers the whole subtree (``inner/**``)."""
        if self.prefix and not (prefix + "/").startswith(self.prefix) and not self.prefix.startswith(prefix + "/"):
            return True
        probes = (f"{prefix}/a", f"{prefix}/a/b.c", f"{prefix}/.z")
        return any(all(r.match(p) for p in probes) for r in self._exc)

    def matches(self, info: ObjectInfo) -> bool:
        if not self.matches_key(info.key):
            return False
        if info.size is not None:
            if self.min_size is not None and info.size < self.min_size:
                return False
            if self.max_size is not None and info.size > self.max_size:
                return False
        if (self.min_age or self.max_age) and info.mtime is not None:
            age = self.now - info.mtime
            if self.min_age and age < self.min_age:
                return False
            if self.max_age and age > self.max_age:
                return False
        return True

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Filter:
        """The filter :meth:`describe` gave (ages in seconds)."""
        return cls(include=tuple(data.get("include", ())), exclude=tuple(data.get("exclude", ())),
                   min_size=data.get("min_size"), max_size=data.get("max_size"),
                   min_age=timedelta(seconds=data["min_age"]) if data.get("min_age") else None,
                   max_age=timedelta(seconds=data["max_age"]) if data.get("max_age") else None,
                   prefix=data.get("prefix") or "", extensions=tuple(data.get("extensions", ())),
                   start_at=data.get("start_at"), end_before=data.get("end_before"),
                   files=frozenset(data["files"]) if data.get("files") is not None else None)

    def describe(self) -> dict[str, object]:
        """The filter as plain data (part of a job's fingerprint).

        The key range appears only when set, so fingerprints of jobs recorded
        before it existed are unchanged.
        """
        out: dict[str, object] = {
            "include": list(self.include), "exclude": list(self.exclude), "min_size": self.min_size,
            "max_size": self.max_size, "prefix": self.prefix, "extensions": list(self.extensions),
            "min_age": self.min_age.total_seconds() if self.min_age else None,
            "max_age": self.max_age.total_seconds() if self.max_age else None}
        if self.start_at is not None or self.end_before is not None:
            out["start_at"], out["end_before"] = self.start_at, self.end_before
        if self.files is not None:
            out["files"] = sorted(self.files)
        return out


NO_FILTER = Filter()
