"""One namespace: the platform's storage connections are remotes wherever a remote can be named.

An operator who moves a platform's files lives in two configurations: the
remotes of vertexflow's config file and the connections of the platform's
``storage_config.json``. With a storage config in view, every connection of
it, and its built-in sections (``local``, ``minio``, ``yandex_disk``), can be
named as a remote (``vertexflow ls minio-b:media/``, ``copy``, ``verify``,
``backup --to``, daemon jobs, cluster shards, resumed jobs).

Which storage config: the config file's ``storage_config`` key (a path,
relative to the config file), else ``VERTEXFLOW_STORAGE_CONFIG`` (the
variable ``company`` and ``migrate`` read too). A name defined in both the
config file and the storage config is an error naming both places.

A connection's remote is the connection itself (the platform's storage config
uses the config file's remote models); a ``minio`` connection and the
built-in ``minio`` section are S3 remotes with path-style addressing; the
built-in ``local`` is the ``local.base_path`` folder (relative to the storage
config's folder, as the platform reads it); the built-in ``yandex_disk`` is
the disk's root.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import Config, LocalRemote, YandexDiskRemote
from ..errors import ConfigError
from .storage_config import MinioConnection, StorageConfig, load_storage_config

if TYPE_CHECKING:
    from ..config_file import NoConfigFile


def with_platform_remotes(config: Config | NoConfigFile, path: str) -> Config:
    """``config`` with the connections of the storage config at ``path`` added as remotes.

    Called by :func:`vertexflow.config_file.load_remotes` when a storage config is in view.
    """
    storage = load_storage_config(path)
    platform = platform_remotes(storage)
    if clash := sorted(set(platform) & set(config.remotes)):
        name = clash[0]
        raise ConfigError(f"remote {name!r} is defined twice: in the config file {config.source} (remotes.{name}) "
                          f"and in the storage config {path} ({_where(storage, name)}); rename one of them")
    source = f"{config.source} and storage config {path}" if config.source else f"storage config {path}"
    base = config if isinstance(config, Config) else Config()
    return base.model_copy(update={"remotes": {**config.remotes, **platform}, "source": source})


def _where(storage: StorageConfig, name: str) -> str:
    return f"connections.{name}" if name in storage.connections else f"the {name!r} section"


def platform_remotes(storage: StorageConfig) -> dict[str, Any]:
    """Every connection of ``storage``, and its built-in sections, as a remote of that name."""
    out: dict[str, Any] = {}
    if storage.local is not None:
        base = storage.local.base_path
        if not os.path.isabs(base) and storage.source:
            base = str(Path(storage.source).resolve().parent / base)
        out["local"] = LocalRemote(type="local", path=os.path.abspath(base))
    if storage.minio is not None:
        out["minio"] = storage.minio.as_remote()
    yd = storage.yandex_disk
    if yd is not None and yd.enabled:
        out["yandex_disk"] = YandexDiskRemote(type="yandex_disk", token=yd.token, token_env=yd.token_env,
                                              base_url=yd.base_url, root="/")
    for name, conn in storage.connections.items():
        out[name] = conn.as_remote() if isinstance(conn, MinioConnection) else conn
    return out
