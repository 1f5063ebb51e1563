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
from . import settings
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
            command = getattr(importlib.import_module(f"{__name__}.{module}"), attr)
            settings.give_envvars(command)  # VERTEXFLOW_<OPTION>
            self.add_command(command, name)
        return super().get_command(ctx, name)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """The global options are taken after the command's name too (``copy SRC DST --log-level debug``),
        and a command's timeouts before it (``--timeout 1m copy SRC DST``)."""
        at = settings.split_command(args)
        if at is not None:
            command = self.get_command(ctx, args[at])
            before, lowered = settings.lower_command_options(command, args[:at])
            moved, rest = settings.hoist_global_options(command, args[at + 1:])
            args = [*before, *moved, args[at], *lowered, *rest]
        return super().parse_args(ctx, args)


@click.group(cls=Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vertexflow")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), envvar="VERTEXFLOW_CONFIG",
              help="Config file with named remotes (TOML or JSON).")
@click.option("--log-format", type=click.Choice(["auto", "console", "json"]), default="auto",
              envvar="VERTEXFLOW_LOG_FORMAT", help="Log lines as text (terminal) or JSON.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="warning",
              envvar="VERTEXFLOW_LOG_LEVEL")
@click.option("--no-fsync", is_flag=True, envvar="VERTEXFLOW_NO_FSYNC",
              help="Do not fsync local files (and the journal) before they become visible: faster, but a "
                   "power loss may leave short files under their names.")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, log_format: str, log_level: str, no_fsync: bool) -> None:
    """Move objects between local disk, S3-compatible stores and Yandex.Disk.

    \b
    Every option may also be given as VERTEXFLOW_<OPTION> (VERTEXFLOW_TRANSFERS=32),
    or in the config file's [options] table; the command line wins, then the
    environment, then the config file (README: Options).
    """
    # the console script starts here (``python -m vertexflow`` installs it earlier): a SIGINT/SIGTERM
    # while the config file is read or a command's modules load then exits 130, not by the signal
    from ..interrupts import INTERRUPTS

    INTERRUPTS.install()
    ctx.obj = Ctx(config_path)
    options = ctx.obj.options()
    if options:
        from .run import reported

        with reported():  # a key that is no option of any command: exit 2, naming it
            settings.check_option_names(options, [main, *(main.get_command(ctx, n) for n in COMMANDS)],
                                        ctx.obj.config_source)
    if options and ctx.invoked_subcommand is not None:
        command = ctx.command.get_command(ctx, ctx.invoked_subcommand)  # type: ignore[attr-defined]
        if command is not None:
            ctx.default_map = {ctx.invoked_subcommand: settings.option_defaults(command, options)}
    # these two are the group's own: the config file's [options] give them where neither flag nor variable does
    if ctx.get_parameter_source("log_format") is click.core.ParameterSource.DEFAULT:
        log_format = settings.global_value(options, "log-format", main, log_format)
    if ctx.get_parameter_source("log_level") is click.core.ParameterSource.DEFAULT:
        log_level = settings.global_value(options, "log-level", main, log_level)
    if ctx.get_parameter_source("no_fsync") is click.core.ParameterSource.DEFAULT:
        no_fsync = settings.global_flag(options, "no-fsync", no_fsync)
    logs.configure(log_format, log_level)
    from ..durability import set_fsync

    set_fsync(not no_fsync)


def entry() -> None:  # pragma: no cover - console script shim
    main()
