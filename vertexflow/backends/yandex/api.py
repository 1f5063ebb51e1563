"""Wire types of the Yandex.Disk REST API (``https://cloud-api.yandex.net/v1/disk``).

Only the fields vertexflow uses are parsed; unknown fields are ignored and
absent ones are None, because the service leaves fields out (and ``fields=``
requests leave out more). Timestamps look like ``2024-07-06T21:06:25+00:00``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

#: Status values of an operation. An older page of the docs says "failure".
IN_PROGRESS = "in-progress"
SUCCESS = "success"
FAILED = ("failed", "failure")


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _str(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) and value else None


def _strings(value: Any) -> dict[str, str] | None:
    if not isinstance(value, dict):
        return None
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}


def _int(data: dict[str, Any], key: str) -> int | None:
    value = data.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True, slots=True)
class Link:
    """A Link object: where to go next (``href``), with which ``method``."""

    href: str
    method: str = "GET"
    templated: bool = False

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Link:
        return cls(href=str(data.get("href", "")), method=str(data.get("method", "GET")),
                   templated=bool(data.get("templated", False)))


@dataclass(frozen=True, slots=True)
class UploadLink:
    """``GET /resources/upload``: PUT the body to ``href``; ``operation_id`` tracks it."""

    href: str
    method: str
    operation_id: str | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UploadLink:
        return cls(href=str(data.get("href", "")), method=str(data.get("method", "PUT")),
                   operation_id=_str(data, "operation_id"))


@dataclass(frozen=True, slots=True)
class Resource:
    """A file or folder. ``embedded`` is set for a folder asked for with its contents."""

    name: str
    path: str
    type: str
    size: int | None = None
    md5: str | None = None
    sha256: str | None = None
    created: datetime | None = None
    modified: datetime | None = None
    mime_type: str | None = None
    media_type: str | None = None
    resource_id: str | None = None
    revision: int | None = None
    public_url: str | None = None
    embedded: ResourceList | None = None
    #: free-form properties (``PATCH /resources``); only string values are kept
    custom_properties: Mapping[str, str] | None = None
    #: a file's download link (the ``href`` ``GET /resources/download`` would give)
    file: str | None = None

    @property
    def is_dir(self) -> bool:
        return self.type == "dir"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Resource:
        embedded = data.get("_embedded")
        return cls(
            name=str(data.get("name", "")), path=str(data.get("path", "")), type=str(data.get("type", "")),
            size=_int(data, "size"), md5=_str(data, "md5"), sha256=_str(data, "sha256"),
            created=parse_time(data.get("created")), modified=parse_time(data.get("modified")),
            mime_type=_str(data, "mime_type"), media_type=_str(data, "media_type"),
            resource_id=_str(data, "resource_id"), revision=_int(data, "revision"),
            public_url=_str(data, "public_url"),
            embedded=ResourceList.from_json(embedded) if isinstance(embedded, dict) else None,
            custom_properties=_strings(data.get("custom_properties")), file=_str(data, "file"))


@dataclass(frozen=True, slots=True)
class ResourceList:
    """A folder's ``_embedded``: one page of ``items`` and the folder's ``total``."""

    items: tuple[Resource, ...]
    limit: int | None = None
    offset: int | None = None
    total: int | None = None
    path: str | None = None
    sort: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ResourceList:
        items = data.get("items")
        return cls(items=tuple(Resource.from_json(i) for i in items if isinstance(i, dict))
                   if isinstance(items, list) else (),
                   limit=_int(data, "limit"), offset=_int(data, "offset"), total=_int(data, "total"),
                   path=_str(data, "path"), sort=data.get("sort") if isinstance(data.get("sort"), str) else None)


@dataclass(frozen=True, slots=True)
class Operation:
    status: str

    @property
    def done(self) -> bool:
        return self.status == SUCCESS or self.status in FAILED

    @property
    def failed(self) -> bool:
        return self.status in FAILED

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Operation:
        return cls(status=str(data.get("status", "")))


@dataclass(frozen=True, slots=True)
class Disk:
    """``GET /v1/disk``. Trash counts toward ``used_space``."""

    total_space: int | None
    used_space: int | None
    trash_size: int | None
    max_file_size: int | None
    is_paid: bool | None

    @property
    def free_space(self) -> int | None:
        if self.total_space is None or self.used_space is None:
            return None
        return max(0, self.total_space - self.used_space)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Disk:
        paid = data.get("is_paid")
        return cls(total_space=_int(data, "total_space"), used_space=_int(data, "used_space"),
                   trash_size=_int(data, "trash_size"), max_file_size=_int(data, "max_file_size"),
                   is_paid=paid if isinstance(paid, bool) else None)


@dataclass(frozen=True, slots=True)
class ErrorBody:
    """``{"message", "description", "error"}``; ``error`` is the stable name to branch on."""

    error: str | None
    description: str | None
    message: str | None

    @classmethod
    def from_json(cls, data: Any) -> ErrorBody:
        if not isinstance(data, dict):
            return cls(None, None, None)
        return cls(error=_str(data, "error"), description=_str(data, "description"), message=_str(data, "message"))


# Error names the backend branches on.
DIR_EXISTS = "DiskPathPointsToExistentDirectoryError"
ALREADY_EXISTS = "DiskResourceAlreadyExistsError"
PARENT_MISSING = "DiskPathDoesntExistsError"
NOT_FOUND = "DiskNotFoundError"
