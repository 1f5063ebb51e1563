"""The ``vertexflow`` command line (click): the top-level group and where each command lives.

Each command group is a module of this package, imported only when its
command is named (``vertexflow copy`` imports :mod:`.transfer`, not the
backup, tenancy or daemon modules); ``vertexflow --help`` still lists them
all. Exit statuses and the exception -> exit status table: :mod:`.run`.
"""

from __future__ import annotations

import importlib

import click

from .. import __version__, logs
from .context import Ctx

#: command name -> "module of this package:attribute"
COMMANDS = {
    "copy": "transfer:copy",
    "sync": "transfer:sync",
    "verify": "verify:verify",
    "jobs": "jobs:jobs",
    "ls": "ls:ls",
    "lsd": "files:lsd",
    "lsjson": "files:lsjson",
    "size": "files:size",
    "about": "files:about",
    "cat": "files:cat",
    "delete": "files:delete",
    "purge": "files:purge",
    "rmdir": "files:rmdir",
    "mkdir": "files:mkdir",
    "cleanup": "files:cleanup",
    "move": "move:move",
    "moveto": "move:moveto",
    "copyto": "move:copyto",
    "demo": "demo:demo",
    "emulate": "demo:emulate",
    "backup": "backup:backup",
    "company": "tenancy:company",
    "migrate": "tenancy:migrate",
    "daemon": "daemon:daemon",
}


class Commands(click.Group):
    """The top-level group; a command's module is imported when the command is named (or listed by --help)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in COMMANDS and name not in self.commands:
            module, _, attr = COMMANDS[name].partition(":")
            self.add_command(getattr(importlib.import_module(f"{__name__}.{module}"), attr), name)
        return super().get_command(ctx, name)


@click.group(cls=Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vertexflow")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), envvar="VERTEXFLOW_CONFIG",
              help="Config file with named remotes (TOML or JSON).")
@click.option("--log-format", type=click.Choice(["auto", "console", "json"]), default="auto",
              help="Log lines as text (terminal) or JSON.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="warning")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, log_format: str, log_level: str) -> None:
    """Move objects between local disk, S3-compatible stores and Yandex.Disk."""
    logs.configure(log_format, log_level)
    ctx.obj = Ctx(config_path)


def entry() -> None:  # pragma: no cover - console script shim
    main()
