"""Refuse a source and a destination that overlap, before anything is listed or written.

A copy into its own subtree grows on every run (``tree`` -> ``tree/inner``
gains ``inner/inner/...``); a sync whose destination holds its source deletes
the source. Two locations overlap when they are in the same store (the same
local filesystem; the same S3 endpoint and bucket; the same Yandex.Disk
account) and one's path is the other's or lies under it, symlinks and ``..``
resolved. A destination inside the source is allowed when the filter leaves
its whole subtree out (``--exclude 'inner/**'``).
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from ..errors import ConfigError
from ..filters import Filter


def _place(location: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(the store, the path's segments within it)."""
    if location.kind == "local":
        path = os.path.realpath(str(location.args[0]))
        return ("local",), tuple(p for p in path.split(os.sep) if p)
    if location.kind == "s3":
        bucket, prefix = location.args
        endpoint = location.kwargs.get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL") or "aws"
        return ("s3", str(endpoint).rstrip("/"), bucket), tuple(p for p in str(prefix).split("/") if p)
    if location.kind == "yandex_disk":
        token = hashlib.sha256(str(location.kwargs.get("token", "")).encode()).hexdigest()  # never the token itself
        store = ("yandex_disk", str(location.kwargs.get("base_url", "")), token)
        return store, tuple(p for p in str(location.kwargs.get("root", "/")).split("/") if p)
    return (location.kind, repr(sorted(location.kwargs.items()))), tuple(str(a) for a in location.args)


def check_overlap(src: Any, dst: Any, filt: Filter, *, what: str) -> None:
    """Raise ConfigError naming the two locations when ``dst`` and ``src`` overlap (see the module docstring)."""
    (src_store, a), (dst_store, b) = _place(src), _place(dst)
    if src_store != dst_store:
        return
    if a == b:
        raise ConfigError(f"{what}: the source {src.spec} and the destination {dst.spec} are the same place; "
                          "nothing was done")
    if b[:len(a)] == a:
        inner = "/".join(b[len(a):])
        if filt.excludes_subtree(inner):
            return  # the filter leaves the destination's subtree out of the source
        raise ConfigError(f"{what}: the destination {dst.spec} is inside the source {src.spec}: each run would "
                          f"copy the copy again; choose a destination outside it, or leave it out with "
                          f"--exclude '{inner}/**'; nothing was done")
    if a[:len(b)] == b:
        raise ConfigError(f"{what}: the source {src.spec} is inside the destination {dst.spec}: the job would "
                          "write into what it reads (and a sync would delete it); choose a destination outside "
                          "it; nothing was done")
