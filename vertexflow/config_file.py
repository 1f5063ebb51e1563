"""Finding the config file, and the stand-in for a run that has none.

Kept apart from :mod:`vertexflow.config` (the pydantic models) because a run
without a config file needs nothing of those: importing pydantic and building
the models took ~0.1 s, a third of the start-up of a local copy.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import Config


#: a remote's key from the environment: ``VERTEXFLOW_REMOTE_<NAME>_<KEY>`` (:mod:`vertexflow.config`)
REMOTE_ENV_PREFIX = "VERTEXFLOW_REMOTE_"


def remote_variables(environ: Mapping[str, str] = os.environ) -> list[str]:
    """The ``VERTEXFLOW_REMOTE_*`` variables set (an empty one counts as unset)."""
    return [k for k, v in environ.items() if k.startswith(REMOTE_ENV_PREFIX) and v != ""]


def default_config_path(environ: Mapping[str, str] = os.environ) -> Path | None:
    """``VERTEXFLOW_CONFIG``, else ``$XDG_CONFIG_HOME/vertexflow/config.toml`` if it exists, else None."""
    if environ.get("VERTEXFLOW_CONFIG"):
        return Path(environ["VERTEXFLOW_CONFIG"])
    base = Path(environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    candidate = base / "vertexflow" / "config.toml"
    return candidate if candidate.is_file() else None


@dataclass(frozen=True, slots=True)
class NoConfigFile:
    """What a run without a config file sees: no remotes.

    Stands in for :class:`~vertexflow.config.Config` where only ``remotes``
    and ``source`` are read (locations, the job's middleware).
    """

    remotes: Mapping[str, Any] = field(default_factory=dict)
    source: str | None = None
    storage_config: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


def config_or_none(path: str | os.PathLike[str] | None = None,
                   environ: Mapping[str, str] = os.environ) -> Config | NoConfigFile:
    """:func:`~vertexflow.config.load_config`, or :class:`NoConfigFile` when no file is named or found and the
    environment defines no remote."""
    if path is None and default_config_path(environ) is None and not remote_variables(environ):
        return NoConfigFile()
    from .config import load_config

    return load_config(path, environ)


#: where the platform's storage config is named when the config file does not name one
STORAGE_CONFIG_VARIABLE = "VERTEXFLOW_STORAGE_CONFIG"


def storage_config_path(config: Config | NoConfigFile, environ: Mapping[str, str] = os.environ) -> str | None:
    """The platform storage config in view: the config file's ``storage_config`` (relative to the file), else
    ``VERTEXFLOW_STORAGE_CONFIG``; None when there is none."""
    named = config.storage_config
    if named:
        if not os.path.isabs(named) and config.source:
            return str(Path(config.source).resolve().parent / named)
        return named
    return environ.get(STORAGE_CONFIG_VARIABLE) or None


def load_remotes(path: str | os.PathLike[str] | None = None,
                 environ: Mapping[str, str] = os.environ) -> Config | NoConfigFile:
    """The remotes a location may name: the config file's (:func:`config_or_none`) and, with a platform storage
    config in view, its connections (:mod:`vertexflow.tenancy.namespace`, imported only then: a run without one
    loads none of the platform's code)."""
    return with_storage_config(config_or_none(path, environ), environ)


def with_storage_config(config: Config | NoConfigFile,
                        environ: Mapping[str, str] = os.environ) -> Config | NoConfigFile:
    """``config`` with the platform's connections as remotes when a storage config is in view; else ``config``."""
    path = storage_config_path(config, environ)
    if path is None:
        return config
    from .tenancy.namespace import with_platform_remotes

    return with_platform_remotes(config, path)

