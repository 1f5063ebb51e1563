"""Names (keys, paths) in lines of text: a control character in a name never breaks a line or the terminal."""

from __future__ import annotations


def shown(name: str) -> str:
    """``name`` for a line of text: control and other unprintable characters escaped as Python writes them
    (a newline as ``\\n``, an escape as ``\\x1b``); a printable name as it is."""
    return name if name.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in name)
