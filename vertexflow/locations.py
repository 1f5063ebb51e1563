"""Turning what a user types (``./photos``, ``s3://media/photos``, ``yadisk:/backup``,
``minio-old:media/``) into a backend.

Forms, first match wins:

* ``s3://BUCKET[/PREFIX]``: S3 with the standard AWS environment variables.
* ``yadisk:[/]PATH``: Yandex.Disk with ``YANDEX_DISK_TOKEN`` (and optionally
  ``YANDEX_DISK_API_URL``, which is how tests point it at the emulator).
* ``file:///PATH``: local disk.
* ``NAME:PATH`` where NAME is a remote of the config file. For an S3 remote
  without a fixed bucket the first PATH segment is the bucket.
* ``SCHEME://...`` with any other scheme: an error naming the known ones.
* anything else: a local path. A path holding ':' is read as a remote name
  when the part before it has no '/' (as rclone does): write ``./a:b``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from .backends import backend_class
from .backends.base import Backend
from .config_file import NoConfigFile
from .errors import ConfigError

if TYPE_CHECKING:
    from .config import Config

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_REMOTE = re.compile(r"^([A-Za-z0-9_.-]+):(.*)$", re.S)
DEFAULT_YANDEX_API = "https://cloud-api.yandex.net/v1/disk"


@dataclass(frozen=True, slots=True)
class Location:
    """A parsed location: which kind of backend, and its constructor arguments."""

    spec: str
    kind: str  # a key of vertexflow.backends.BACKEND_CLASSES
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]

    @property
    def canonical(self) -> str:
        """The spec with local paths made absolute: the same place always reads the same."""
        return f"file://{self.args[0]}" if self.kind == "local" and "name" not in self.kwargs else self.spec

    def backend(self) -> Backend:
        return backend_class(self.kind)(*self.args, **self.kwargs)

    def split_last(self) -> tuple[Location, str] | None:
        """The parent location and the last path segment, for a source that is one object."""
        if self.kind == "local":
            path = str(self.args[0]).rstrip("/")
            parent, name = os.path.split(path)
            return (replace(self, args=(parent or "/",)), name) if name else None
        if self.kind == "s3":
            bucket, prefix = self.args
            parent, _, name = prefix.rstrip("/").rpartition("/")
            return (replace(self, args=(bucket, parent)), name) if name else None
        if self.kind == "yandex_disk":
            parent, _, name = self.kwargs["root"].rstrip("/").rpartition("/")
            return (replace(self, kwargs={**self.kwargs, "root": parent or "/"}), name) if name else None
        return None


def parse_location(spec: str, config: Config | NoConfigFile | None = None,
                   environ: Mapping[str, str] = os.environ) -> Location:
    """Parse ``spec``; raises :class:`ConfigError` naming what is wrong."""
    config = config or NoConfigFile()
    if not spec:
        raise ConfigError("empty location")
    if m := _SCHEME.match(spec):
        scheme, rest = m.group(1).lower(), spec[m.end():]
        if scheme == "s3":
            return _s3(spec, rest, environ)
        if scheme == "file":
            return Location(spec, "local", (rest or "/",), {})
        raise ConfigError(f"unknown scheme {scheme!r} in {spec!r}: use s3://bucket/path, yadisk:/path, "
                          "a local path, or NAME:path with a remote from the config file")
    if spec.startswith("yadisk:") and "yadisk" not in config.remotes:
        return _yandex(spec, spec[len("yadisk:"):], environ)
    if (m := _REMOTE.match(spec)) and "/" not in m.group(1):
        name, path = m.group(1), m.group(2)
        remote = config.remotes.get(name)
        if remote is None:
            where = f"config file {config.source}" if config.source else "no config file was found"
            raise ConfigError(f"unknown remote {name!r} in {spec!r} ({where}); "
                              f"known remotes: {', '.join(sorted(config.remotes)) or 'none'}")
        return remote_location(spec, name, remote, path, environ)
    return Location(spec, "local", (os.path.abspath(spec),), {})


def _s3(spec: str, rest: str, environ: Mapping[str, str]) -> Location:
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise ConfigError(f"no bucket in {spec!r}: use s3://bucket/path")
    return Location(spec, "s3", (bucket, prefix.strip("/")), {})


def _yandex(spec: str, path: str, environ: Mapping[str, str]) -> Location:
    token = environ.get("YANDEX_DISK_TOKEN")
    if not token:
        raise ConfigError(f"{spec!r}: set YANDEX_DISK_TOKEN, or use a yandex_disk remote from the config file")
    kwargs: dict[str, Any] = {
        "root": "/" + path.strip("/"),
        "token": token,
        "base_url": environ.get("YANDEX_DISK_API_URL", DEFAULT_YANDEX_API),
    }
    kwargs.update(backend_class("yandex_disk").settings_from_env(environ))  # type: ignore[attr-defined]
    return Location(spec, "yandex_disk", (), kwargs)


def remote_location(spec: str, name: str, remote: Any, path: str, environ: Mapping[str, str]) -> Location:
    """``path`` on the configured ``remote`` called ``name`` (``spec`` is what the user typed)."""
    from .config import (  # a remote means the models are loaded
        LocalRemote,
        S3Remote,
        YandexDiskRemote,
    )

    if isinstance(remote, LocalRemote):
        return Location(spec, "local", (os.path.join(os.path.abspath(remote.path), path.lstrip("/")),),
                        {"name": name})
    if isinstance(remote, S3Remote):
        path = path.strip("/")
        if remote.bucket:
            bucket, prefix = remote.bucket, path
        else:
            bucket, _, prefix = path.partition("/")
            if not bucket:
                raise ConfigError(f"no bucket in {spec!r}: remote {name!r} has none fixed, use {name}:bucket/path")
        return Location(spec, "s3", (bucket, prefix), remote.backend_kwargs(environ, name))
    if isinstance(remote, YandexDiskRemote):
        kwargs = remote.backend_kwargs(environ, name)
        root = "/".join(p for p in (remote.root.strip("/"), path.strip("/")) if p)
        kwargs["root"] = "/" + root
        return Location(spec, "yandex_disk", (), kwargs)
    raise ConfigError(f"remote {name!r} has an unsupported type")  # pragma: no cover - pydantic prevents it
