"""Typed configuration: named remotes read from a TOML (or JSON) file.

Where the file comes from, first match wins: ``--config PATH``, the
``VERTEXFLOW_CONFIG`` variable, ``$XDG_CONFIG_HOME/vertexflow/config.toml``
(``~/.config/...``). No file is fine: ``s3://``, ``yadisk:`` and plain paths
work from the environment alone.

Example (``configs/remotes.toml`` holds a commented one)::

    [remotes.minio-old]
    type = "s3"
    endpoint = "http://10.0.0.5:9000"
    access_key_id_env = "OLD_MINIO_KEY"        # read the secret from a variable,
    secret_access_key_env = "OLD_MINIO_SECRET" # or give `secret_access_key = "..."`

Every key of a remote may also come from the environment, as rclone's
``RCLONE_CONFIG_<NAME>_<KEY>``: ``VERTEXFLOW_REMOTE_<NAME>_<KEY>``, the remote's
name and the key in capitals (``-`` and ``.`` of a name as ``_``). A variable
wins over the file's key; a remote the file does not define is defined by its
``VERTEXFLOW_REMOTE_<NAME>_TYPE`` (its name: ``<NAME>`` in small letters)::

    VERTEXFLOW_REMOTE_MINIO_OLD_ENDPOINT=http://10.0.0.6:9000   # over remotes.minio-old.endpoint
    VERTEXFLOW_REMOTE_MYS3_TYPE=s3                               # a remote "mys3", from the environment alone
    VERTEXFLOW_REMOTE_MYS3_ENDPOINT=http://127.0.0.1:8333

The file's ``[options]`` table gives options their values where neither the
command line nor ``VERTEXFLOW_<OPTION>`` does (:mod:`vertexflow.cli.settings`).

Validation is done by pydantic; every error names the file and the dotted key
(``remotes.minio-old.endpoint``), or the variable it came from. Secrets are
``SecretStr`` and never printed.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from .config_file import REMOTE_ENV_PREFIX, default_config_path, remote_variables
from .errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _secret(value: SecretStr | None, env_name: str | None, environ: Mapping[str, str],
            what: str) -> str | None:
    if value is not None:
        return value.get_secret_value()
    if env_name is not None:
        if env_name not in environ:
            raise ConfigError(f"{what}: environment variable {env_name} is not set")
        return environ[env_name]
    return None


def _check_bwlimit(value: str | None) -> str | None:
    if value is not None:
        from .throttle import parse_bwlimit

        try:
            parse_bwlimit(value, "bwlimit")
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
    return value


#: This remote's own bandwidth limit, as for --bwlimit: "10M", "10M:1M" (up:down),
#: or a timetable "08:00,512k 19:00,10M 23:00,off" (vertexflow.throttle).
BwLimit = Annotated[str | None, AfterValidator(_check_bwlimit)]


class LocalRemote(_Strict):
    type: Literal["local"]
    path: str = Field(description="directory that is the remote's root")
    bwlimit: BwLimit = None


class S3Remote(_Strict):
    type: Literal["s3"]
    endpoint: str | None = Field(None, description="e.g. http://127.0.0.1:9000; AWS when omitted")
    region: str | None = None
    bucket: str | None = Field(None, description="fixed bucket; otherwise the first path segment")
    access_key_id: SecretStr | None = None
    access_key_id_env: str | None = None
    secret_access_key: SecretStr | None = None
    secret_access_key_env: str | None = None
    session_token_env: str | None = None
    profile: str | None = None
    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    # 16 in-flight requests saturate a gigabit link with 8 MiB parts while
    # keeping one process's memory near 16 x 8 MiB.
    concurrency: int = Field(16, ge=1, le=1024)
    part_size: int = Field(8 * 1024 * 1024, ge=5 * 1024 * 1024, le=5 * 1024 ** 3)
    verify_tls: bool | str = True
    #: the server lists keys in byte order (real S3 does); false makes vertexflow
    #: sort listings itself, through a temporary SQLite file
    sorted_listing: bool = True
    bwlimit: BwLimit = None

    @field_validator("endpoint")
    @classmethod
    def _endpoint_is_url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v

    def backend_kwargs(self, environ: Mapping[str, str], name: str) -> dict[str, Any]:
        what = f"remote {name!r}"
        return {
            "endpoint_url": self.endpoint,
            "region": self.region,
            "access_key_id": _secret(self.access_key_id, self.access_key_id_env, environ, what),
            "secret_access_key": _secret(self.secret_access_key, self.secret_access_key_env, environ, what),
            "session_token": _secret(None, self.session_token_env, environ, what),
            "profile": self.profile,
            "addressing_style": self.addressing_style,
            "max_concurrency": self.concurrency,
            "part_size": self.part_size,
            "multipart_threshold": self.part_size,
            "verify_tls": self.verify_tls,
            "sorted_listing": self.sorted_listing,
            "name": name,
        }


#: Google Cloud Storage's S3-interoperable XML API
GCS_ENDPOINT = "https://storage.googleapis.com"


class GcsRemote(S3Remote):
    """Google Cloud Storage through its XML API with an HMAC key (docs/gcs.md): an S3 remote that
    sends nothing the XML API does not take as S3 does (``provider="gcs"`` of the S3 backend)."""

    type: Literal["gcs"]  # type: ignore[assignment]
    endpoint: str | None = GCS_ENDPOINT  # the XML API's one global endpoint; a private one may be given
    # GCS takes any region in a SigV4 scope; "auto" is the one its documentation uses for HMAC keys
    region: str | None = "auto"

    def backend_kwargs(self, environ: Mapping[str, str], name: str) -> dict[str, Any]:
        return {**super().backend_kwargs(environ, name), "provider": "gcs"}


class YandexDiskRemote(_Strict):
    type: Literal["yandex_disk"]
    token: SecretStr | None = None
    token_env: str | None = Field(None, description="variable holding the OAuth token; YANDEX_DISK_TOKEN when neither is set")
    base_url: str = "https://cloud-api.yandex.net/v1/disk"
    root: str = "/"
    request_timeout: float | None = Field(None, gt=0)
    chunk_size_mb: int | None = Field(None, ge=1)
    upload_concurrency: int | None = Field(None, ge=1, le=64)
    directory_cache_ttl: float | None = Field(None, ge=0)
    directory_cache_size: int | None = Field(None, ge=0)
    pool_connections: int | None = Field(None, ge=1)
    pool_maxsize: int | None = Field(None, ge=1)
    bwlimit: BwLimit = None

    def backend_kwargs(self, environ: Mapping[str, str], name: str) -> dict[str, Any]:
        token = _secret(self.token, self.token_env, environ, f"remote {name!r}")
        if token is None:
            token = environ.get("YANDEX_DISK_TOKEN")
        if not token:
            raise ConfigError(f"remote {name!r}: no OAuth token (set token, token_env or YANDEX_DISK_TOKEN)")
        kwargs: dict[str, Any] = {"token": token, "base_url": self.base_url, "name": name}
        for field, arg, scale in (
            ("request_timeout", "request_timeout", 1),
            ("chunk_size_mb", "chunk_size", 1024 * 1024),
            ("upload_concurrency", "upload_concurrency", 1),
            ("directory_cache_ttl", "dir_cache_ttl", 1),
            ("directory_cache_size", "dir_cache_size", 1),
            ("pool_connections", "pool_connections", 1),
            ("pool_maxsize", "pool_maxsize", 1),
        ):
            value = getattr(self, field)
            if value is not None:
                kwargs[arg] = value * scale
        return kwargs


Remote = Annotated[LocalRemote | S3Remote | GcsRemote | YandexDiskRemote, Field(discriminator="type")]


class Config(_Strict):
    remotes: dict[str, Remote] = Field(default_factory=dict)
    #: option name (as on the command line, without ``--``) -> value, for any command that has it
    options: dict[str, Any] = Field(default_factory=dict)
    #: the platform's storage_config.json (relative to this file): its connections are remotes too
    #: (:mod:`vertexflow.tenancy.namespace`)
    storage_config: str | None = None
    source: str | None = Field(None, exclude=True, description="where this config was read from")

    @field_validator("remotes")
    @classmethod
    def _names(cls, remotes: dict[str, Remote]) -> dict[str, Remote]:
        for name in remotes:
            if not name or not all(c.isalnum() or c in "-_." for c in name) or name in ("s3", "yadisk", "file"):
                raise ValueError(f"remote name {name!r} must be letters, digits, '-', '_' or '.', "
                                 "and not a URL scheme")
        return remotes


def load_config(path: str | os.PathLike[str] | None = None,
                environ: Mapping[str, str] = os.environ) -> Config:
    """Read and validate a config file; no path and no default file gives an empty config."""
    explicit = path is not None or bool(environ.get("VERTEXFLOW_CONFIG"))
    file = Path(path) if path is not None else default_config_path(environ)
    if file is None:
        return _with_environment({}, None, environ)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"config file {file} does not exist") from None
        return _with_environment({}, None, environ)
    except OSError as exc:
        raise ConfigError(f"config file {file}: {exc.strerror}") from exc
    try:
        raw = json.loads(text) if file.suffix == ".json" else tomllib.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"config file {file} is not valid {'JSON' if file.suffix == '.json' else 'TOML'}: {exc}") from exc
    return _with_environment(raw, str(file), environ)


def _with_environment(raw: Mapping[str, Any], source: str | None, environ: Mapping[str, str]) -> Config:
    """The config ``raw`` (a file's, or {}) with the remotes' keys the environment gives over it."""
    file_remotes = raw.get("remotes") if isinstance(raw.get("remotes"), Mapping) else {}
    overrides, origins = env_remotes(environ, list(file_remotes or {}))
    if not overrides:
        return parse_config(raw, source=source or "<config>")
    remotes = {name: dict(value) if isinstance(value, Mapping) else value
               for name, value in (file_remotes or {}).items()}
    for name, keys in overrides.items():
        remotes.setdefault(name, {}).update(keys)
    config = parse_config({**raw, "remotes": remotes}, source=source or "the environment", origins=origins)
    return config if source is not None else config.model_copy(update={"source": None})


#: fields of a remote that take true/false (a variable's text is read as such for them)
_BOOLEAN_KEYS = ("verify_tls", "sorted_listing")


def env_remotes(environ: Mapping[str, str],
                names: list[str]) -> tuple[dict[str, dict[str, Any]], dict[tuple[str, str], str]]:
    """(remote name -> keys, (name, key) -> the variable) from ``VERTEXFLOW_REMOTE_<NAME>_<KEY>``;
    ``names``: the remotes the file defines. ConfigError naming a variable that names no remote."""
    variables = remote_variables(environ)
    by_form = {n.upper(): n for n in (var[len(REMOTE_ENV_PREFIX):-len("_TYPE")].lower()
                                      for var in variables if var.endswith("_TYPE")) if n}
    by_form.update({n.upper().replace("-", "_").replace(".", "_"): n for n in names})
    out: dict[str, dict[str, Any]] = {}
    origins: dict[tuple[str, str], str] = {}
    for var in sorted(variables):
        rest = var[len(REMOTE_ENV_PREFIX):]
        form = max((f for f in by_form if rest.startswith(f + "_") and len(rest) > len(f) + 1), key=len,
                   default=None)
        if form is None:
            raise ConfigError(f"environment variable {var}: names no remote: define it in the config file, or "
                              f"with {REMOTE_ENV_PREFIX}<NAME>_TYPE (s3, gcs, local or yandex_disk)")
        name, key = by_form[form], rest[len(form) + 1:].lower()
        value: Any = environ[var]
        if key in _BOOLEAN_KEYS and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
            value = value.strip().lower() in ("true", "1", "yes")
        out.setdefault(name, {})[key] = value
        origins[(name, key)] = var
    return out, origins


def parse_config(raw: Mapping[str, Any], *, source: str = "<config>",
                 origins: Mapping[tuple[str, str], str] | None = None) -> Config:
    """``raw`` validated; ``origins``: the variable each remote key given by the environment came from."""
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        where = f"config file {source}" if origins is None or source != "the environment" else "the environment"
        raise ConfigError(f"{where}: " + "; ".join(_describe(e, origins or {}) for e in exc.errors())) from None
    return config.model_copy(update={"source": source})


def _describe(error: Mapping[str, Any], origins: Mapping[tuple[str, str], str]) -> str:
    # drop the discriminator tag pydantic puts in the location ("remotes.x.s3.endpoint")
    loc = [str(p) for p in error["loc"]]
    if len(loc) > 2 and loc[0] == "remotes" and loc[2] in ("local", "s3", "gcs", "yandex_disk"):
        del loc[2]
    msg = error["msg"]
    if error["type"] == "extra_forbidden":
        msg = "unknown key"
    if len(loc) > 2 and loc[0] == "remotes" and (loc[1], loc[2]) in origins:
        return f"{'.'.join(loc)} (environment variable {origins[(loc[1], loc[2])]}): {msg}"
    if len(loc) == 2 and loc[0] == "remotes" and (loc[1], "type") in origins:
        return f"{'.'.join(loc)} (environment variable {origins[(loc[1], 'type')]}): {msg}"
    return f"{'.'.join(loc)}: {msg}"
