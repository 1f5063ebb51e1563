"""Commands on one location: ``delete``, ``purge``, ``rmdir``, ``mkdir``, ``cat``, ``lsd``, ``lsjson``, ``size``,
``about`` and ``cleanup`` (what each does: :mod:`vertexflow.ops.files`; the commands: docs/commands.md).

Exit statuses as every command's (:mod:`.run`): 0 done; 1 some objects
could not be deleted (each is named); 2 bad input, a missing object or
location, a refused root, more than ``--max-delete``, or a fatal error, with
nothing touched where the command could tell before it began; 130 interrupted.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any

import click

from ..errors import BackendError, ConfigError, NotFound
from ..filters import parse_age
from ..locations import Location, parse_location
from ..model import IncompleteUpload
from ..pipeline.progress import human_bytes
from .context import Ctx
from .run import EXIT_OK, EXIT_PARTIAL, reported, run_or_exit
from .transfer import build_filter, with_filter_options

#: a bucket name that lends an S3 store's endpoint and credentials to ``lsd s3://`` (ListBuckets names none)
BUCKET_LISTING = "vertexflow-bucket-listing"
#: ``cleanup --older-than``: an upload or temporary file younger than a day may be a run's still going
DEFAULT_OLDER_THAN = "24h"

dry_run_option = click.option("--dry-run", is_flag=True, help="Say what would be done; change nothing.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
max_delete_option = click.option("--max-delete", type=click.IntRange(0), default=None, metavar="N",
                                 help="Refuse (deleting nothing) when more than N objects would be deleted.")
force_root_option = click.option("--force-root", is_flag=True,
                                 help="Allow the root of a store (a whole bucket, a remote's root); "
                                      "on the command line only.")


def given_on_command_line(name: str) -> bool:
    """Whether the option ``name`` was typed on the command line, not taken from the environment or the
    config file's options: a guard such as ``--force-root`` is lifted only by the person running the command."""
    source = click.get_current_context().get_parameter_source(name)
    return source is click.core.ParameterSource.COMMANDLINE


def shown(name: str) -> str:
    """A key or name for a line of text: control characters (a newline in a name) escaped."""
    return name if name.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in name)


def _location(spec: str, obj: Ctx) -> Location:
    return parse_location(spec, obj.config)


def _delete_summary(report: Any, as_json: bool, what: str) -> None:
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        verb = "would delete" if report.dry_run else "deleted"
        line = f"{what}: {verb} {report.deleted:,} objects ({human_bytes(report.bytes)})"
        if report.folders_removed:
            line += f", {'would remove' if report.dry_run else 'removed'} {report.folders_removed:,} folders"
        click.echo(line, err=True)
    for key, reason, message in report.failures:
        click.echo(f"FAILED {shown(key)}: [{reason}] {message}", err=True)
    if report.failed > len(report.failures):
        click.echo(f"... and {report.failed - len(report.failures):,} more failures", err=True)
    if report.folders_left:
        click.echo(f"vertexflow: {report.folders_left:,} empty folders are left: this store's backend cannot "
                   "remove folders", err=True)


@click.command("delete")
@click.argument("location")
@with_filter_options
@dry_run_option
@max_delete_option
@force_root_option
@click.option("--rmdirs", is_flag=True, help="Remove the folders left empty, too.")
@json_option
@click.pass_obj
def delete(obj: Ctx, location: str, dry_run: bool, max_delete: int | None, force_root: bool, rmdirs: bool,
           as_json: bool, **filter_kw: Any) -> None:
    """Delete the objects under LOCATION (or the one object it names) that pass the filters; folders stay."""
    from ..ops.files import delete_objects, objects_at, open_location, refuse_root, remove_empty_folders

    with reported():
        filt = build_filter(filter_kw)
        loc = _location(location, obj)
        refuse_root(loc, "delete", force_root and given_on_command_line("force_root"))

    async def run() -> Any:
        backend, single = await open_location(loc)
        async with backend:
            report = await delete_objects(backend, objects_at(backend, single, filt), dry_run=dry_run,
                                          max_delete=max_delete, on_object=_announce(dry_run))
            if rmdirs and single is None and not report.failed:
                report.folders_removed, report.folders_left = await remove_empty_folders(
                    backend, filt.prefix.rpartition("/")[0], dry_run=dry_run,
                    on_folder=_announce_folder(dry_run))
        return report

    report = run_or_exit(run)
    _delete_summary(report, as_json, "delete")
    sys.exit(EXIT_PARTIAL if report.failed else EXIT_OK)


def _announce(dry_run: bool) -> Any:
    if not dry_run:
        return None
    return lambda info: click.echo(f"delete {shown(info.key)} ({info.size if info.size is not None else '?'} bytes)")


def _announce_folder(dry_run: bool) -> Any:
    if not dry_run:
        return None
    return lambda path: click.echo(f"remove folder {shown(path)}")


@click.command("purge")
@click.argument("location")
@dry_run_option
@max_delete_option
@force_root_option
@json_option
@click.pass_obj
def purge(obj: Ctx, location: str, dry_run: bool, max_delete: int | None, force_root: bool, as_json: bool) -> None:
    """Delete everything under LOCATION: every object, every folder, and the folder itself."""
    from ..ops.files import delete_objects, is_store_root, objects_at, refuse_root, remove_empty_folders

    with reported():
        loc = _location(location, obj)
        refuse_root(loc, "purge", force_root and given_on_command_line("force_root"))

    async def run() -> Any:
        backend = await _folder_backend(loc, "purge")
        async with backend:
            report = await delete_objects(backend, objects_at(backend, None), dry_run=dry_run, max_delete=max_delete,
                                          on_object=_announce(dry_run))
            if report.failed:
                return report  # the folders holding them stay
            report.folders_removed, report.folders_left = await remove_empty_folders(
                backend, dry_run=dry_run, on_folder=_announce_folder(dry_run))
        if not is_store_root(loc) and backend.features.folders:
            removed = await _remove_location_folder(loc, dry_run, report.folders_left == 0)
            report.folders_removed += removed is True
            report.folders_left += removed is None
        return report

    report = run_or_exit(run)
    _delete_summary(report, as_json, "purge")
    sys.exit(EXIT_PARTIAL if report.failed or report.folders_left else EXIT_OK)


async def _folder_backend(loc: Location, what: str) -> Any:
    """The backend of a folder location, checked; ConfigError when it names one object (a local file)."""
    import os

    backend = loc.backend()
    try:
        await backend.check()
        if backend.features.local_path and os.path.isfile(str(loc.args[0])):
            raise ConfigError(f"{what} {loc.spec}: that is one object, not a folder (delete removes it); "
                              "nothing was done")
    except BaseException:
        await backend.aclose()
        raise
    return backend


async def _remove_location_folder(loc: Location, dry_run: bool, emptied: bool) -> bool | None:
    """Remove the folder ``loc`` names, from its parent: True removed (or would be), False not empty,
    None the store cannot remove it."""
    from ..ops.files import remove_folder, removes_folders

    split = loc.split_last()
    if split is None:
        return False
    parent_loc, name = split
    async with parent_loc.backend() as parent:
        if not removes_folders(parent):
            return None
        if dry_run:
            if emptied:
                click.echo(f"remove folder {shown(loc.spec)}")
            return emptied
        return await remove_folder(parent, name)


@click.command("rmdir")
@click.argument("location")
@dry_run_option
@click.pass_obj
def rmdir(obj: Ctx, location: str, dry_run: bool) -> None:
    """Remove the folder LOCATION if it is empty (no object, no folder in it); on S3 ``s3://BUCKET``, the empty
    bucket."""
    from ..ops.files import is_store_root, remove_folder, removes_folders

    with reported():
        loc = _location(location, obj)
        root = is_store_root(loc)

    async def bucket() -> str:
        async with loc.backend() as backend:
            if not backend.features.buckets:
                raise ConfigError(f"rmdir {loc.spec}: that is the root of a store (a remote's root), not a "
                                  "folder: rmdir removes folders and buckets only; nothing was done")
            await backend.check()  # no such bucket: NotFound, exit 2
            if dry_run:
                async for _ in backend.list():
                    raise ConfigError(f"rmdir {loc.spec}: the bucket is not empty, it holds objects (purge "
                                      "--force-root deletes them); nothing was done")
                return f"would remove bucket {backend.describe()}"
            if not await backend.remove_bucket():
                raise ConfigError(f"rmdir {loc.spec}: the bucket is not empty, it holds objects (purge --force-root "
                                  "deletes them); nothing was done")
            return f"removed bucket {backend.describe()}"

    if root:
        click.echo(run_or_exit(bucket), err=True)
        return

    async def run() -> str:
        backend = await _folder_backend(loc, "rmdir")
        async with backend:
            async for _ in backend.list():
                raise ConfigError(f"rmdir {loc.spec}: not empty, it holds objects (purge removes a folder with "
                                  "everything in it); nothing was done")
            if not backend.features.folders:
                return (f"nothing to remove: {backend.describe()} keeps no folders, only key prefixes, and no "
                        "object is left under this one")
            inside = await backend.list_folders("")
            if inside:
                raise ConfigError(f"rmdir {loc.spec}: not empty, it holds {len(inside)} folders "
                                  f"({shown(inside[0])}...); nothing was done")
        split = loc.split_last()
        assert split is not None  # not a store's root
        parent_loc, name = split
        async with parent_loc.backend() as parent:
            if not removes_folders(parent):
                raise ConfigError(f"rmdir {loc.spec}: {parent.describe()} cannot remove folders (its backend has "
                                  "no folder removal); nothing was done")
            if dry_run:
                return f"would remove folder {shown(loc.spec)}"
            if not await remove_folder(parent, name):
                raise ConfigError(f"rmdir {loc.spec}: not empty (something was written into it meanwhile); "
                                  "nothing was done")
        return f"removed folder {shown(loc.spec)}"

    click.echo(run_or_exit(run), err=True)


@click.command("mkdir")
@click.argument("location")
@dry_run_option
@click.pass_obj
def mkdir(obj: Ctx, location: str, dry_run: bool) -> None:
    """Make the folder LOCATION (and its parents); one that exists is fine. On S3, the bucket if it is missing
    (S3 keeps no folders)."""
    from ..ops.files import is_store_root

    with reported():
        loc = _location(location, obj)

    async def run() -> str:
        async with loc.backend() as backend:
            if backend.features.buckets and is_store_root(loc):
                return await made_bucket(backend)
            if not backend.features.folders:
                await backend.check()  # the bucket must exist: a folder in it makes none (mkdir s3://B does)
                return f"nothing to make: {backend.describe()} keeps no folders (a key prefix needs none)"
            try:
                await backend.check()
                exists = True
            except NotFound:
                exists = False
            if dry_run:
                return f"{backend.describe()} exists" if exists else f"would make {backend.describe()}"
            await backend.check(write=True)  # a file where the folder should be: Conflict, exit 2
            return f"{backend.describe()} exists" if exists else f"made {backend.describe()}"

    async def made_bucket(backend: Any) -> str:
        """The bucket made if missing (as rclone's mkdir of a bucket). A location inside a missing bucket is
        an error, as before: a mistyped bucket name is not made by a mkdir of a folder in it."""
        try:
            await backend.check()
            exists = True
        except NotFound:
            exists = False
        if not exists and dry_run:
            return f"would make bucket {backend.describe()}"
        if exists or not await backend.make_bucket():
            return f"bucket {backend.describe()} exists"
        return f"made bucket {backend.describe()}"

    click.echo(run_or_exit(run), err=True)


@click.command("cat")
@click.argument("location")
@click.option("--offset", type=click.IntRange(0), default=0, help="Start at this byte.")
@click.option("--count", type=click.IntRange(0), default=None, help="Send at most this many bytes.")
@click.pass_obj
def cat(obj: Ctx, location: str, offset: int, count: int | None) -> None:
    """Write the bytes of the object LOCATION to standard output."""
    from ..ops.files import NOTHING_THERE, open_location

    with reported():
        loc = _location(location, obj)

    async def run() -> None:
        try:
            backend, key = await open_location(loc)
        except NotFound as exc:
            if exc.message != NOTHING_THERE:
                raise  # a missing bucket says so
            raise NotFound("no such object", backend=exc.backend or loc.spec) from None
        async with backend:
            if key is None:
                raise ConfigError(f"cat {loc.spec}: that is a folder, not one object (ls lists what it holds)")
            out = sys.stdout.buffer
            try:
                async with backend.open(key, offset=offset, length=count) as chunks:
                    async for chunk in chunks:
                        out.write(chunk)
                out.flush()
            except BrokenPipeError:  # the reader has all it wanted (cat ... | head)
                import os

                os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())  # what is still buffered goes nowhere

    run_or_exit(run)


def _bucket_store(spec: str, obj: Ctx) -> Location | None:
    """For ``s3://`` (or ``NAME:`` of an S3 remote without a fixed bucket): a location of that store, whose
    backend lists its buckets; None for any other location."""
    import re

    bare = spec.rstrip("/")
    if bare == "s3:":
        trial = f"s3://{BUCKET_LISTING}"
    elif m := re.fullmatch(r"([A-Za-z0-9_.-]+):/*", spec):
        trial = f"{m.group(1)}:{BUCKET_LISTING}"
    else:
        return None
    loc = parse_location(trial, obj.config)
    if loc.kind == "s3" and tuple(loc.args) == (BUCKET_LISTING, ""):
        return loc
    return None


@click.command("lsd")
@click.argument("location")
@json_option
@click.pass_obj
def lsd(obj: Ctx, location: str, as_json: bool) -> None:
    """List the folders directly under LOCATION (on S3 the key prefixes one level down); ``lsd s3://``
    lists the buckets."""
    from ..ops.files import folder_names

    with reported():
        try:
            loc = _location(location, obj)
            store = None
        except ConfigError:
            store = _bucket_store(location, obj)
            if store is None:
                raise

    async def buckets() -> list[dict[str, Any]]:
        from ..backends.s3.prefixes import list_buckets

        assert store is not None
        async with store.backend() as backend:
            try:
                found = await list_buckets(backend)  # type: ignore[arg-type]
            except BackendError as exc:
                exc.backend = f"the S3 store at {backend.endpoint}"  # type: ignore[attr-defined]
                raise
        return [{"name": name, "created": created.isoformat() if created else None} for name, created in found]

    async def folders() -> list[dict[str, Any]]:
        async with loc.backend() as backend:
            await backend.check()
            out = []
            async for name in folder_names(backend):
                if not as_json:
                    click.echo(f"{shown(name)}/")
                out.append({"name": name})
            return out

    if store is not None:
        found = run_or_exit(buckets)
        if not as_json:
            for b in found:
                click.echo(f"{b['created'] or '-':<32} {shown(b['name'])}")
    else:
        found = run_or_exit(folders)
    if as_json:
        click.echo(json.dumps(found, indent=2))


@click.command("lsjson")
@click.argument("location")
@with_filter_options
@click.pass_obj
def lsjson(obj: Ctx, location: str, **filter_kw: Any) -> None:
    """List the objects under LOCATION, recursively, as one JSON array (written as the listing streams)."""
    from ..ops.files import info_json, objects_at, open_location

    with reported():
        filt = build_filter(filter_kw)
        loc = _location(location, obj)

    async def run() -> None:
        backend, single = await open_location(loc)
        async with backend:
            click.echo("[", nl=False)
            first = True
            async for info in objects_at(backend, single, filt):
                click.echo(("\n" if first else ",\n") + json.dumps(info_json(info)), nl=False)
                first = False
            click.echo("\n]" if not first else "]")

    run_or_exit(run)


@click.command("size")
@click.argument("location")
@with_filter_options
@json_option
@click.pass_obj
def size(obj: Ctx, location: str, as_json: bool, **filter_kw: Any) -> None:
    """Count the objects under LOCATION that pass the filters, and their bytes."""
    from ..ops.files import objects_at, open_location

    with reported():
        filt = build_filter(filter_kw)
        loc = _location(location, obj)

    async def run() -> tuple[int, int, int]:
        backend, single = await open_location(loc)
        count = total = unknown = 0
        async with backend:
            async for info in objects_at(backend, single, filt):
                count += 1
                total += info.size or 0
                unknown += info.size is None
        return count, total, unknown

    count, total, unknown = run_or_exit(run)
    if as_json:
        click.echo(json.dumps({"objects": count, "bytes": total, "objects_of_unknown_size": unknown}, indent=2))
        return
    click.echo(f"objects: {count:,}")
    click.echo(f"bytes:   {total:,} ({human_bytes(total)})" + (f", {unknown:,} objects of unknown size"
                                                                if unknown else ""))


@click.command("about")
@click.argument("remote")
@json_option
@click.pass_obj
def about(obj: Ctx, remote: str, as_json: bool) -> None:
    """The space of the store REMOTE is in, where the store says: total, used and free bytes."""
    from ..ops.files import usage

    with reported():
        loc = _location(remote, obj)

    async def run() -> tuple[str, Any]:
        async with loc.backend() as backend:
            await backend.check()
            return backend.describe(), await usage(backend)

    where, space = run_or_exit(run)
    if as_json:
        click.echo(json.dumps({"store": where, **space.as_dict()}, indent=2))
        return
    click.echo(where)
    for label, value in (("total", space.total), ("used", space.used), ("free", space.free)):
        click.echo(f"{label + ':':<7} " + (f"{value:,} ({human_bytes(value)})" if value is not None
                                            else "not reported by this store"))


@click.command("cleanup")
@click.argument("location")
@click.option("--older-than", default=DEFAULT_OLDER_THAN, show_default=True, metavar="AGE",
              help="Only what was begun (uploads) or last written (temporary files) longer ago than this.")
@dry_run_option
@json_option
@click.pass_obj
def cleanup(obj: Ctx, location: str, older_than: str, dry_run: bool, as_json: bool) -> None:
    """Abort the incomplete multipart uploads under LOCATION (S3) and remove this tool's stale temporary
    files (local disk)."""
    from ..ops.files import cleanup as clean

    with reported():
        age = parse_age(older_than)
        loc = _location(location, obj)

    verb = "would " if dry_run else ""

    def upload_line(u: IncompleteUpload) -> None:
        if not as_json:
            begun = u.initiated.isoformat() if isinstance(u.initiated, datetime) else "?"
            click.echo(f"{verb}abort upload {shown(u.key)} (begun {begun}, id {u.upload_id})")

    def temp_line(path: str, n: int) -> None:
        if not as_json:
            click.echo(f"{verb}remove temporary file {shown(path)} ({n:,} bytes)")

    async def run() -> tuple[str, Any]:
        async with loc.backend() as backend:
            await backend.check()
            return backend.describe(), await clean(backend, older_than=age, dry_run=dry_run,
                                                   on_upload=upload_line, on_temp_file=temp_line)

    where, report = run_or_exit(run)
    if as_json:
        click.echo(json.dumps({"store": where, **report.as_dict()}, indent=2))
        return
    if not report.looked_at:
        click.echo(f"nothing to clean up: {where} keeps no incomplete uploads and no temporary files of "
                   "this tool", err=True)
        return
    done = "would be " if dry_run else ""
    click.echo(f"{where}: {report.uploads:,} incomplete uploads {done}aborted, {report.temp_files:,} "
               f"temporary files ({human_bytes(report.temp_bytes)}) {done}removed"
               + (f"; {report.undated:,} uploads of unknown age left" if report.undated else ""), err=True)
