"""The object the top-level group hands its commands (``ctx.obj``): the ``--config`` file, read when needed."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..config_file import NoConfigFile, config_or_none

if TYPE_CHECKING:
    from ..config import Config


class Ctx:
    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self._config: Config | NoConfigFile | None = None

    @property
    def config(self) -> Config | NoConfigFile:
        """The config file's remotes; without a file, a stand-in that has none (see :mod:`vertexflow.config_file`)."""
        if self._config is None:
            self._config = config_or_none(self.config_path)
        return self._config
