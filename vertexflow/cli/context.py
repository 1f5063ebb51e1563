"""The object the top-level group hands its commands (``ctx.obj``): the ``--config`` file, read when needed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..config_file import NoConfigFile, config_or_none, with_storage_config
from ..errors import ConfigError

if TYPE_CHECKING:
    from ..config import Config


class Ctx:
    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self._file: Config | NoConfigFile | None = None
        self._config: Config | NoConfigFile | None = None

    def _config_file(self) -> Config | NoConfigFile:
        """The config file alone (its remotes, with those of the environment, and its options)."""
        if self._file is None:
            self._file = config_or_none(self.config_path)
        return self._file

    @property
    def config(self) -> Config | NoConfigFile:
        """The config file's remotes and the platform's connections (:mod:`vertexflow.tenancy.namespace`);
        without either, a stand-in that has none (see :mod:`vertexflow.config_file`)."""
        if self._config is None:
            self._config = with_storage_config(self._config_file())
        return self._config

    @property
    def config_source(self) -> str | None:
        """Where the config file was read from (None: no file)."""
        return self._config_file().source

    def options(self) -> dict[str, Any]:
        """The config file's ``[options]`` ({} without a config file). A config file that cannot be read gives
        none here: the command that reads its remotes says what is wrong with it."""
        try:
            return dict(self._config_file().options)
        except ConfigError:
            return {}
