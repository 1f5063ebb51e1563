"""Where an option's value comes from: the command line (anywhere on it), the environment, the config file.

For every option of every command, first match wins:

1. the command line: ``--transfers 32``. The global options (``--config``,
   ``--log-level``, ``--log-format``, ``--no-fsync``) may come before or after the command
   alike: ``vertexflow copy SRC DST --log-level debug`` is
   ``vertexflow --log-level debug copy SRC DST`` (:func:`hoist_global_options`);
2. the environment: ``VERTEXFLOW_<OPTION>``, the option's long name in capitals
   with ``-`` as ``_`` (``VERTEXFLOW_TRANSFERS=32``, ``VERTEXFLOW_MAX_TRANSFER=10G``,
   ``VERTEXFLOW_NO_VERIFY=true``, ``VERTEXFLOW_PROGRESS=false``), as rclone's
   ``RCLONE_<OPTION>``; an option repeated (``--include``) takes several values
   separated by spaces. Options that name a variable of their own keep it
   (``--journal``: ``VERTEXFLOW_JOURNAL``) (:func:`give_envvars`);
3. the config file's ``[options]`` table: ``transfers = 32``,
   ``max-transfer = "10G"``, ``include = ["*.jpg"]`` (:func:`option_defaults`);
4. the option's default.

A remote's keys follow the same order between the environment and the
config file: :mod:`vertexflow.config` (``VERTEXFLOW_REMOTE_<NAME>_<KEY>``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import click

from ..errors import ConfigError

#: the top-level group's options that take a value, accepted after the command as well as before it
GLOBAL_OPTIONS = ("--config", "--log-level", "--log-format")
#: the top-level group's flags, accepted after the command as well as before it
GLOBAL_FLAGS = ("--no-fsync",)
ENV_PREFIX = "VERTEXFLOW_"
#: options of the commands that run a job spec (copy, sync, move...) taken before the command's name as
#: well, as rclone's global flags are: ``vertexflow --timeout 1m copy SRC DST`` (:func:`lower_command_options`)
LEADING_COMMAND_OPTIONS = ("--timeout", "--contimeout")


def _options(command: click.Command) -> Iterator[click.Option]:
    """Every option of ``command`` and of the commands under it (a group's)."""
    for param in command.params:
        if isinstance(param, click.Option):
            yield param
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            yield from _options(sub)


def _long_names(option: click.Option) -> list[str]:
    return [o for o in option.opts if o.startswith("--")]


def _declared(command: click.Command | None) -> set[str]:
    """Every option name ``command`` (and the commands under it) declares."""
    return {name for option in _options(command) for name in option.opts} if command is not None else set()


def hoist_global_options(command: click.Command | None, args: list[str]) -> tuple[list[str], list[str]]:
    """(the global options among ``args``, what follows the command's name, with their values; the rest),
    to put the first in front of the command. An option the command declares (``daemon run --config``)
    stays its own."""
    own = _declared(command)
    moved: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest.extend(args[i:])
            break
        name, eq, _ = arg.partition("=")
        if arg in GLOBAL_FLAGS and arg not in own:
            moved.append(arg)
        elif name in GLOBAL_OPTIONS and name not in own:
            if eq:
                moved.append(arg)
            else:
                moved.extend(args[i:i + 2])
                i += 1
        else:
            rest.append(arg)
        i += 1
    return moved, rest


def lower_command_options(command: click.Command | None, args: list[str]) -> tuple[list[str], list[str]]:
    """(``args``, what comes before the command's name, without the :data:`LEADING_COMMAND_OPTIONS` that
    ``command`` declares; those options with their values), to put the second after the command's name."""
    own = _declared(command)
    kept: list[str] = []
    lowered: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, _ = arg.partition("=")
        if name in LEADING_COMMAND_OPTIONS and name in own:
            lowered.extend([arg] if eq else args[i:i + 2])
            i += 1 if eq else 2
            continue
        kept.append(arg)
        i += 1
    return kept, lowered


def split_command(args: list[str]) -> int | None:
    """The index in ``args`` (the whole command line) of the command's name, after the group's own options."""
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            return i + 1 if i + 1 < len(args) else None
        if arg in GLOBAL_OPTIONS or arg in LEADING_COMMAND_OPTIONS:
            i += 2
        elif arg.startswith("-"):
            i += 1
        else:
            return i
    return None


def give_envvars(command: click.Command) -> None:
    """Let every option of ``command`` (and under it) without a variable of its own be read from
    ``VERTEXFLOW_<OPTION>``."""
    for option in _options(command):
        names = _long_names(option)
        if option.envvar is None and names and not option.is_eager and option.expose_value:
            option.envvar = env_name(names[0])
            option.show_envvar = False


def env_name(long_option: str) -> str:
    return ENV_PREFIX + long_option.lstrip("-").replace("-", "_").upper()


def _key(name: str) -> str:
    return name.lstrip("-").replace("_", "-").lower()


def option_defaults(command: click.Command, options: Mapping[str, Any]) -> dict[str, Any]:
    """A click ``default_map`` for ``command`` from the config file's ``[options]`` (keys: long option names
    without ``--``, such as ``max-transfer``; a flag's ``no-`` form takes the opposite value)."""
    wanted = {_key(k): v for k, v in options.items()}
    out: dict[str, Any] = {}
    for param in command.params:
        if not isinstance(param, click.Option) or param.name is None:
            continue
        for name in _long_names(param):
            if _key(name) in wanted:
                out[param.name] = wanted[_key(name)]
        for name in param.secondary_opts:
            if name.startswith("--") and _key(name) in wanted:
                value = wanted[_key(name)]
                out[param.name] = (not value) if isinstance(value, bool) else value
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            out[name] = option_defaults(sub, options)
    return out


def check_option_names(options: Mapping[str, Any], commands: list[click.Command], source: str | None) -> None:
    """ConfigError naming a key of the config file's ``[options]`` that is no option of any command."""
    known = {_key(name) for command in commands for option in _options(command)
             for name in (*_long_names(option), *option.secondary_opts)}
    unknown = sorted(k for k in options if _key(k) not in known)
    if unknown:
        raise ConfigError(f"config file {source}: options.{unknown[0]}: no command has an option --{_key(unknown[0])}")


def global_flag(options: Mapping[str, Any], name: str, default: bool) -> bool:
    """The config file's value of the group's flag ``--NAME`` (true or false), or ``default``."""
    value = next((v for k, v in options.items() if _key(k) == name), None)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise click.BadParameter(f"{value!r} (the config file's options.{name}): use true or false")
    return value


def global_value(options: Mapping[str, Any], name: str, group: click.Command, default: str) -> str:
    """The config file's value of the group's option ``--NAME`` (checked against its choices), or ``default``."""
    value = next((v for k, v in options.items() if _key(k) == name), None)
    if value is None:
        return default
    option = next(o for o in _options(group) if f"--{name}" in o.opts)
    choices = getattr(option.type, "choices", None)
    if choices is not None and value not in choices:
        raise click.BadParameter(f"{value!r} (the config file's options.{name}): use {', '.join(choices)}")
    return str(value)
