"""The platform's ``storage_config.json``, plus vertexflow's named connections.

Shape (every key but the content types is optional)::

    {
      "portraits": {"storage_type": "local"},
      "videos":    {"storage_type": "minio", "bucket": "videos"},
      "local":      {"base_path": "/var/lib/platform/storage"},
      "yandex_disk": {"enabled": true, "token": "...",
                      "base_url": "https://cloud-api.yandex.net/v1/disk",
                      "base_paths": {"portraits": "/ar/portraits"}},
      "minio": {"endpoint": "127.0.0.1:9000", "access_key": "...", "secret_key": "...",
                "bucket": "platform", "secure": false},
      "backup": {"schedule": "0 3 * * *", "keep": 7},
      "connections": {
        "minio-b": {"type": "minio", "endpoint": "10.0.0.7:9000", "access_key": "...",
                    "secret_key": "...", "bucket": "media"},
        "aws":     {"type": "s3", "endpoint": "https://s3.eu-west-1.amazonaws.com", "bucket": "media",
                    "access_key_id_env": "AWS_KEY", "secret_access_key_env": "AWS_SECRET"},
        "gcs":     {"type": "gcs", "bucket": "media", "access_key_id_env": "GCS_HMAC_ID",
                    "secret_access_key_env": "GCS_HMAC_SECRET"},
        "disk":    {"type": "yandex_disk", "token_env": "YANDEX_DISK_TOKEN", "root": "/platform"},
        "nas":     {"type": "local", "path": "/mnt/nas/platform"}
      }
    }

Every top-level key that is not one of ``local, yandex_disk, minio, backup,
connections, company_folder, references`` is a content type, and must be an object with a
``storage_type`` of ``local``, ``minio`` or ``yandex_disk``. Connection
``type`` is ``s3``, ``gcs``, ``minio``, ``local`` or ``yandex_disk``; ``s3``,
``gcs`` (Google Cloud Storage's XML API, docs/gcs.md), ``local`` and
``yandex_disk`` take the keys of the config file's remotes
(:mod:`vertexflow.config`), ``minio`` takes the platform's MinIO keys.
Any connection may add ``public_base_url`` (how :meth:`get_public_url`
spells a public address) and ``bwlimit`` (bytes per second to and from that
store, as for ``--bwlimit``; a migration or rollback moving a company's
files to or from it keeps to it, on top of its own ``--bwlimit``).
``references`` names the database columns that hold file paths
(:mod:`.references`).

Errors name the file and the dotted key (``videos.storage_type: ...``).
:func:`save_storage_config` validates first and writes atomically; what was
read is written back as it was (keys not given stay absent, secrets are
written in clear since the file is where they live).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    SerializationInfo,
    ValidationError,
    field_serializer,
    field_validator,
)

from ..config import BwLimit, GcsRemote, LocalRemote, S3Remote, YandexDiskRemote
from ..errors import ConfigError
from .references import Reference, check_names

StorageType = Literal["local", "minio", "yandex_disk"]
RESERVED = ("local", "yandex_disk", "minio", "backup", "connections", "company_folder", "references")
#: content types a platform without a config file has, all on local disk
DEFAULT_CONTENT_TYPES = ("portraits", "videos")


def _reveal(value: SecretStr | None, info: SerializationInfo) -> str | None:
    if value is None:
        return None
    ctx = info.context or {}
    return value.get_secret_value() if ctx.get("reveal") else "**********"


def _name_ok(name: str) -> bool:
    return bool(name) and all(c.isalnum() or c in "-_." for c in name)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ContentTypeSettings(_Strict):
    """Where one content type lives for companies that have no connection of their own."""

    storage_type: StorageType
    #: folder (local, Yandex.Disk) or key prefix (MinIO) of this content type; the content type's name if unset
    path: str | None = None
    #: MinIO bucket for this content type; the ``minio`` section's bucket if unset
    bucket: str | None = None
    public_base_url: str | None = None


class LocalSettings(_Strict):
    base_path: str = "storage"
    public_base_url: str | None = None


class YandexDiskSettings(_Strict):
    enabled: bool = False
    token: SecretStr | None = None
    token_env: str | None = None
    base_url: str = "https://cloud-api.yandex.net/v1/disk"
    base_paths: dict[str, str] = Field(default_factory=dict)

    ser_token = field_serializer("token")(_reveal)

    @field_validator("base_paths")
    @classmethod
    def _absolute(cls, v: dict[str, str]) -> dict[str, str]:
        for ct, path in v.items():
            if not path.startswith("/"):
                raise ValueError(f"base path of {ct!r} must start with '/', not {path!r}")
        return v


class MinioSettings(_Strict):
    """The platform's MinIO keys (the ``minio`` Python client's names)."""

    endpoint: str = Field(description="host:port, or a URL")
    access_key: SecretStr | None = None
    secret_key: SecretStr | None = None
    bucket: str | None = None
    secure: bool = False
    region: str | None = None
    public_base_url: str | None = None

    ser_keys = field_serializer("access_key", "secret_key")(_reveal)

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str) -> str:
        if not v or " " in v:
            raise ValueError("must be host:port or a URL")
        return v

    def endpoint_url(self) -> str:
        if self.endpoint.startswith(("http://", "https://")):
            return self.endpoint
        return ("https://" if self.secure else "http://") + self.endpoint

    def as_remote(self) -> S3Remote:
        """The same store as an S3 remote (path-style addressing, as MinIO wants)."""
        return S3Remote(type="s3", endpoint=self.endpoint_url(), region=self.region, bucket=self.bucket,
                        access_key_id=self.access_key, secret_access_key=self.secret_key,
                        addressing_style="path")


class BackupSettings(_Strict):
    schedule: str = "0 3 * * *"
    keep: int = Field(7, ge=1)

    @field_validator("schedule")
    @classmethod
    def _cron(cls, v: str) -> str:
        if len(v.split()) != 5:
            raise ValueError("must be a cron expression with 5 fields, e.g. '0 3 * * *'")
        return v


class S3Connection(S3Remote):
    public_base_url: str | None = None

    ser_keys = field_serializer("access_key_id", "secret_access_key")(_reveal)


class GcsConnection(GcsRemote):
    """Google Cloud Storage with an HMAC key (docs/gcs.md); ``endpoint`` defaults to storage.googleapis.com."""

    public_base_url: str | None = None

    ser_keys = field_serializer("access_key_id", "secret_access_key")(_reveal)


class MinioConnection(MinioSettings):
    type: Literal["minio"]
    bwlimit: BwLimit = None

    def as_remote(self) -> S3Remote:
        return super().as_remote().model_copy(update={"bwlimit": self.bwlimit})


class LocalConnection(LocalRemote):
    public_base_url: str | None = None


class YandexDiskConnection(YandexDiskRemote):
    public_base_url: str | None = None

    ser_token = field_serializer("token")(_reveal)


Connection = Annotated[S3Connection | GcsConnection | MinioConnection | LocalConnection | YandexDiskConnection,
                       Field(discriminator="type")]
CONNECTION_TYPES = ("s3", "gcs", "minio", "local", "yandex_disk")


def connection_storage_type(conn: Any) -> StorageType:
    """The platform's ``storage_type`` word for a connection (S3, GCS and MinIO are all "minio")."""
    return "minio" if conn.type in ("s3", "gcs", "minio") else conn.type


class StorageConfig(_Strict):
    content_types: dict[str, ContentTypeSettings] = Field(default_factory=dict)
    local: LocalSettings | None = None
    yandex_disk: YandexDiskSettings | None = None
    minio: MinioSettings | None = None
    backup: BackupSettings | None = None
    connections: dict[str, Connection] = Field(default_factory=dict)
    #: how each company's folder is named: "slug", "column:NAME" or a template such as "company_{id}"
    #: (:meth:`vertexflow.tenancy.registry.Registry.open`); None: the slug column
    company_folder: str | None = None
    #: which database columns hold file paths (``<table>.<column>``): :mod:`.references`
    references: dict[str, Reference] = Field(default_factory=dict)
    source: str | None = Field(None, exclude=True)

    @field_validator("references")
    @classmethod
    def _ref_names(cls, v: dict[str, Reference]) -> dict[str, Reference]:
        check_names(v)
        return v

    @field_validator("connections")
    @classmethod
    def _conn_names(cls, v: dict[str, Any]) -> dict[str, Any]:
        for name in v:
            if not _name_ok(name) or name in ("local", "minio", "yandex_disk", "default"):
                raise ValueError(f"connection name {name!r} must be letters, digits, '-', '_' or '.', "
                                 "and not local, minio, yandex_disk or default")
        return v

    def content_type_names(self) -> list[str]:
        return list(self.content_types) or list(DEFAULT_CONTENT_TYPES)

    def content_type(self, name: str) -> ContentTypeSettings:
        """The settings of ``name``; an unknown content type is a :class:`ConfigError`."""
        if name in self.content_types:
            return self.content_types[name]
        if not self.content_types and name in DEFAULT_CONTENT_TYPES:
            return ContentTypeSettings(storage_type="local")
        raise ConfigError(f"unknown content type {name!r}; known: {', '.join(self.content_type_names())}")

    def to_raw(self) -> dict[str, Any]:
        """The platform's JSON shape, secrets in clear, keys that were not given left out."""
        data = self.model_dump(mode="json", exclude_unset=True, context={"reveal": True})
        out: dict[str, Any] = dict(data.pop("content_types", {}))
        out.update(data)
        return out


def parse_storage_config(raw: Any, *, source: str = "<storage config>") -> StorageConfig:
    """Validate the platform's JSON shape; :class:`ConfigError` names ``source`` and the key."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"storage config {source}: the top level must be a JSON object")
    shaped: dict[str, Any] = {"content_types": {}}
    for key, value in raw.items():
        if key in RESERVED:
            shaped[key] = value
        elif not _name_ok(key):
            raise ConfigError(f"storage config {source}: {key!r} is not a valid content type name")
        else:
            shaped["content_types"][key] = value
    if not shaped["content_types"]:
        del shaped["content_types"]
    try:
        config = StorageConfig.model_validate(shaped)
    except ValidationError as exc:
        raise ConfigError(f"storage config {source}: " + "; ".join(_describe(e) for e in exc.errors())) from None
    _cross_check(config, source)
    return config.model_copy(update={"source": source})


def _cross_check(config: StorageConfig, source: str) -> None:
    for name, ct in config.content_types.items():
        if ct.storage_type == "minio" and config.minio is None:
            raise ConfigError(f"storage config {source}: {name}.storage_type: 'minio' needs a 'minio' section")
        if ct.storage_type == "minio" and not (ct.bucket or (config.minio and config.minio.bucket)):
            raise ConfigError(f"storage config {source}: {name}.bucket: no bucket here nor in minio.bucket")
        if ct.storage_type == "yandex_disk" and not (config.yandex_disk and config.yandex_disk.enabled):
            raise ConfigError(f"storage config {source}: {name}.storage_type: 'yandex_disk' needs "
                              "yandex_disk.enabled = true")
    for name, ref in config.references.items():
        if ref.content_type not in config.content_type_names():
            raise ConfigError(f"storage config {source}: references.{name}.content_type: unknown content type "
                              f"{ref.content_type!r}; known: {', '.join(config.content_type_names())}")


def _describe(error: Mapping[str, Any]) -> str:
    loc = [str(p) for p in error["loc"]]
    if loc and loc[0] == "content_types":
        del loc[0]
    # drop the discriminator tag pydantic puts in the location ("connections.x.s3.endpoint")
    if len(loc) > 2 and loc[0] == "connections" and loc[2] in CONNECTION_TYPES:
        del loc[2]
    msg = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
    return f"{'.'.join(loc) or '(top level)'}: {msg}"


def load_storage_config(path: str | os.PathLike[str] | None) -> StorageConfig:
    """Read and validate ``path``; None gives the default (every content type on local disk)."""
    if path is None:
        return StorageConfig()
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"storage config {file} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"storage config {file}: {exc.strerror}") from exc
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"storage config {file} is not valid JSON: {exc}") from exc
    return parse_storage_config(raw, source=str(file))


def save_storage_config(config: StorageConfig | Mapping[str, Any], path: str | os.PathLike[str]) -> StorageConfig:
    """Validate and write ``config`` to ``path`` atomically (a temp file renamed over it, mode 0600)."""
    file = Path(path)
    raw = config.to_raw() if isinstance(config, StorageConfig) else dict(config)
    checked = parse_storage_config(raw, source=str(file))  # a bad config is never written
    text = json.dumps(checked.to_raw(), indent=2, ensure_ascii=False) + "\n"
    file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=f".{file.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(tmp, 0o600)  # the file holds tokens and keys
        os.replace(tmp, file)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return checked
