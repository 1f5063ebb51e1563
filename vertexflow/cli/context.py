"""The object the top-level group hands its commands (``ctx.obj``): the ``--config`` file, read when needed."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..config_file import NoConfigFile

if TYPE_CHECKING:
    from ..config import Config


class Ctx:
    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self._config: Config | NoConfigFile | None = None

    @property
    def config(self) -> Config | NoConfigFile:
        """The config file's remotes and the platform's connections (:mod:`vertexflow.tenancy.namespace`);
        without either, a stand-in that has none (see :mod:`vertexflow.config_file`)."""
        if self._config is None:
            from ..tenancy.namespace import load_remotes

            self._config = load_remotes(self.config_path)
        return self._config
