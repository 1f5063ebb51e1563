"""What the platform commands share (``company``, ``migrate``): the database and storage config, and a runner.

``platform_options`` adds ``--db`` (``VERTEXFLOW_DB``) and ``--storage-config``
(``VERTEXFLOW_STORAGE_CONFIG``) to a group; :class:`TenancyCtx` opens a
:class:`~vertexflow.tenancy.StorageManager` from them.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

from ..errors import ConfigError
from ..tenancy.manager import StorageManager
from .run import run_or_exit

T = TypeVar("T")


class TenancyCtx:
    def __init__(self, db: str | None, storage_config: str | None) -> None:
        self.db, self.storage_config = db, storage_config

    def manager(self) -> StorageManager:
        if not self.db:
            raise ConfigError("no platform database: give --db PATH or set VERTEXFLOW_DB")
        return StorageManager.open(self.storage_config, self.db)


def platform_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--storage-config", "storage_config", type=click.Path(dir_okay=False),
                      envvar="VERTEXFLOW_STORAGE_CONFIG",
                      help="The platform's storage_config.json [every content type on local disk].")(fn)
    return click.option("--db", type=click.Path(dir_okay=False), envvar="VERTEXFLOW_DB",
                        help="The platform's SQLite database.")(fn)


def run_with_manager(ctx: TenancyCtx, fn: Callable[[StorageManager], Awaitable[T]]) -> T:
    """Run ``fn`` with a manager (the runner of :mod:`.run` turns errors into the exit status)."""

    async def main() -> T:
        async with ctx.manager() as manager:
            return await fn(manager)

    return run_or_exit(main)


def echo_data(data: Any, as_json: bool, text: str) -> None:
    click.echo(json.dumps(data, indent=2, default=str) if as_json else text)
