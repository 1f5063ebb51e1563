"""Which columns of the platform database hold file paths: the storage config's ``references`` section.

The platform's rows name its files (``portraits.image_path`` holds
``cats/Image/a.jpg``, or the file's full public URL). This section says
which columns those are, so that vertexflow can check the database against
the stores (``vertexflow company refs``, and a migration before it switches):

.. code-block:: json

    "references": {
      "portraits.image_path": {"content_type": "portraits", "company_column": "company_id"},
      "videos.url":           {"content_type": "videos", "company_column": "company_id",
                               "url_pattern": "^https://cdn\\\\.example\\\\.com/videos/[^/]+/",
                               "digest_column": "sha256"}
    }

Each key is ``<table>.<column>``; the column holds the path of a file of
``content_type`` belonging to the company whose ``companies.id`` is in
``company_column``. A path is the file's key relative to the company's root
(``<category>/<subfolder>/<file>``), or, when ``url_pattern`` (a regular
expression) matches at its start, what follows the match (or the match's
group named ``key``), URL-decoded. ``id_column`` names the row in reports
(``rowid`` by default); ``digest_column`` holds the file's hex digest
(``digest_algorithm``, ``sha256`` by default), compared with ``--checksum``.

The section's shape is checked when the storage config is read (errors name
``references.<table>.<column>``); the tables and columns themselves are
checked against the database (``PRAGMA table_info``) by :func:`check_database`
before any row is read.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote

from pydantic import BaseModel, ConfigDict, field_validator, model_validator
from pydantic_core import PydanticCustomError

from ..errors import ConfigError

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: what a row is named by when ``id_column`` is not given: every SQLite table but a WITHOUT ROWID one has it
#: (an INTEGER PRIMARY KEY ``id`` is the same value)
DEFAULT_ID_COLUMN = "rowid"


def _invalid(message: str) -> PydanticCustomError:
    """A validation error whose message is ``message`` alone (pydantic puts "Value error, " before a ValueError's)."""
    return PydanticCustomError("reference", message)


def _ident(value: str, what: str) -> str:
    if not _IDENT.match(value):
        raise _invalid(f"{what} {value!r} must be an SQL name (letters, digits and '_', not starting with a digit)")
    return value


class Reference(BaseModel):
    """One column of file paths (the value of ``references."<table>.<column>"``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    content_type: str
    #: the column holding the ``companies.id`` of the company the row belongs to
    company_column: str
    id_column: str = DEFAULT_ID_COLUMN
    #: a regular expression matched at the start of a path: what it matches is the platform's URL prefix
    url_pattern: str | None = None
    digest_column: str | None = None
    digest_algorithm: Literal["sha256", "md5"] = "sha256"

    @field_validator("company_column", "id_column", "digest_column")
    @classmethod
    def _columns(cls, v: str | None) -> str | None:
        return None if v is None else _ident(v, "column")

    @field_validator("url_pattern")
    @classmethod
    def _pattern(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            compiled = re.compile(v)
        except re.error as exc:
            raise _invalid(f"not a regular expression: {exc}") from None
        if compiled.match(""):
            raise _invalid(f"{v!r} matches an empty path: it would strip nothing")
        return v

    @model_validator(mode="after")
    def _digest(self) -> Reference:
        if "digest_algorithm" in self.model_fields_set and self.digest_column is None:
            raise _invalid("digest_algorithm needs digest_column (the column holding the digest)")
        return self


def check_names(refs: Mapping[str, Reference]) -> None:
    """Every key is ``<table>.<column>``; a validation error naming the first that is not."""
    for name in refs:
        table, dot, column = name.partition(".")
        if not dot or not _IDENT.match(table) or not _IDENT.match(column):
            raise _invalid(f"{name!r} must be <table>.<column> (SQL names), such as portraits.image_path")


@dataclass(frozen=True, slots=True)
class Declared:
    """A declared reference column, ready to read: where it is and how a path becomes a key."""

    table: str
    column: str
    settings: Reference

    @property
    def name(self) -> str:
        return f"{self.table}.{self.column}"

    @property
    def content_type(self) -> str:
        return self.settings.content_type

    def key_of(self, path: str) -> str:
        """The key ``path`` names, relative to the company's root (a path the pattern does not match is one)."""
        pattern = self.settings.url_pattern
        if pattern is None:
            return path
        m = _compiled(pattern).match(path)
        if m is None:
            return path
        if "key" in m.re.groupindex:
            return unquote(m.group("key") or "")
        return unquote(path[m.end():])

    def matches(self, path: str) -> bool:
        """Whether ``url_pattern`` matches ``path`` (no pattern: False)."""
        pattern = self.settings.url_pattern
        return pattern is not None and _compiled(pattern).match(path) is not None


_PATTERNS: dict[str, re.Pattern[str]] = {}


def _compiled(pattern: str) -> re.Pattern[str]:
    found = _PATTERNS.get(pattern)
    if found is None:
        found = _PATTERNS[pattern] = re.compile(pattern)
    return found


def declared(refs: Mapping[str, Reference], content_type: str | None = None) -> list[Declared]:
    """The declared columns (of ``content_type`` only, if given), in the order of the storage config."""
    out = []
    for name, settings in refs.items():
        table, _, column = name.partition(".")
        if content_type is None or settings.content_type == content_type:
            out.append(Declared(table, column, settings))
    return out


def quoted(name: str) -> str:
    """An SQL name (already checked to be one) quoted for a statement."""
    return '"' + name.replace('"', '""') + '"'


def check_database(db: sqlite3.Connection, refs: list[Declared], *, where: str) -> None:
    """Every declared table and column exists in ``db``; :class:`ConfigError` naming the table and column.

    ``where`` names the database in messages. Checked with ``PRAGMA table_info``, before any row is read.
    """
    for ref in refs:
        what = f"references.{ref.name}"
        rows = db.execute(f"PRAGMA table_info({quoted(ref.table)})").fetchall()
        if not rows:
            raise ConfigError(f"{what}: the platform database {where} has no table {ref.table}")
        have = [r[1] for r in rows]
        s = ref.settings
        for role, column in (("column", ref.column), ("company_column", s.company_column),
                             ("digest_column", s.digest_column), ("id_column", s.id_column)):
            if column is None or column in have:
                continue
            if role == "id_column" and column == DEFAULT_ID_COLUMN:
                try:
                    db.execute(f"SELECT rowid FROM {quoted(ref.table)} LIMIT 0")
                    continue
                except sqlite3.OperationalError:
                    raise ConfigError(f"{what}: table {ref.table} of {where} has no rowid (WITHOUT ROWID): "
                                      "set id_column to the column that names a row") from None
            label = "" if role == "column" else f" ({role})"
            raise ConfigError(f"{what}: table {ref.table} of {where} has no column {column}{label}; "
                              f"its columns: {', '.join(have)}")
