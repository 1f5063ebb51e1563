"""``--timeout`` / ``--contimeout`` before the command's name: where the command line is split and what moves."""

from __future__ import annotations

import click

from vertexflow.cli import COMMANDS, main, settings


def _command(name: str) -> click.Command:
    command = main.get_command(click.Context(main), name)
    assert command is not None and name in COMMANDS
    return command


def test_the_command_is_found_past_a_leading_timeout() -> None:
    assert settings.split_command(["--timeout", "1s", "copy", "a", "b"]) == 2
    assert settings.split_command(["--contimeout", "2s", "--log-level", "info", "sync", "a", "b"]) == 4
    assert settings.split_command(["--timeout=1s", "move", "a", "b"]) == 1


def test_leading_timeouts_move_after_a_command_that_takes_them() -> None:
    before = ["--log-level", "debug", "--timeout", "1s", "--contimeout=2s", "--config", "c.toml"]
    for name in ("copy", "sync", "move", "moveto", "copyto"):
        kept, lowered = settings.lower_command_options(_command(name), before)
        assert kept == ["--log-level", "debug", "--config", "c.toml"]
        assert lowered == ["--timeout", "1s", "--contimeout=2s"]
    # a command without them keeps them where they are, for click to name
    kept, lowered = settings.lower_command_options(_command("ls"), ["--timeout", "1s"])
    assert (kept, lowered) == (["--timeout", "1s"], [])
