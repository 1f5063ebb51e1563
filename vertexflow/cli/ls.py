"""``vertexflow ls``: list the objects under a location."""

from __future__ import annotations

import json

import click

from ..locations import parse_location
from ..pipeline.progress import human_bytes
from .context import Ctx
from .names import shown
from .run import reported, run_or_exit


@click.command("ls")
@click.argument("location")
@click.option("--long", "-l", "long_", is_flag=True,
              help="Size, modification time and the digests the store lists with each object (Yandex.Disk: "
                   "MD5 and SHA-256; local disk and S3 list none: `verify --mode checksum` reads them).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_obj
def ls(obj: Ctx, location: str, long_: bool, as_json: bool) -> None:
    """List the objects under LOCATION, recursively.

    A name with a control character (a newline) is printed with it escaped (\\n); --json prints names
    exactly, as JSON strings.
    """
    with reported():
        loc = parse_location(location, obj.config)

    async def run() -> None:
        count = total = 0
        async with loc.backend() as backend:
            await backend.check()
            async for info in backend.list():
                count += 1
                total += info.size or 0
                if as_json:
                    click.echo(json.dumps({"key": info.key, "size": info.size,
                                           "mtime": info.mtime.isoformat() if info.mtime else None,
                                           "hashes": dict(info.hashes), "etag": info.etag}))
                elif long_:
                    when = info.mtime.strftime("%Y-%m-%d %H:%M:%S") if info.mtime else "-" * 19
                    digests = "".join(f" {name}:{value}" for name, value in sorted(info.hashes.items()) if value)
                    click.echo(f"{info.size if info.size is not None else '-':>12} {when}{digests}  {shown(info.key)}")
                else:
                    click.echo(shown(info.key))
        if long_ and not as_json:
            click.echo(f"{count:,} objects, {total:,} bytes ({human_bytes(total)})", err=True)

    run_or_exit(run)
