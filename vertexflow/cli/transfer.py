"""``vertexflow copy`` and ``vertexflow sync``, and the options other commands share with them.

The options become a :class:`~vertexflow.ops.spec.TransferSpec` (:func:`spec_from_options`)
and the spec a running job through the one assembly path
(:mod:`vertexflow.ops.assembly`); :func:`run_spec` is what ``jobs resume``
calls too, with the spec the journal kept. ``transfer_options`` (copy and
sync), ``filter_options`` / ``with_filter_options`` and ``build_filter``
(also verify and migrate), ``cluster_option`` (also verify).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from ..filters import Filter, files_from, parse_age, parse_size, read_list_file
from ..ops.spec import (
    CANNED_ACLS,
    CUTOFF_MODES,
    DEFAULT_RETRIES,
    SSE_ALGORITHMS,
    StageSpec,
    TransferSettings,
    TransferSpec,
)
from ..pipeline.runner import StopSignal
from ..pipeline.stats import JobStats
from ..errors import ConfigError
from .context import Ctx
from .names import shown
from .run import (
    EXIT_FATAL,
    EXIT_INTERRUPTED,
    EXIT_MAX_DURATION,
    EXIT_MAX_TRANSFER,
    EXIT_OK,
    EXIT_PARTIAL,
    fail,
    print_summary,
    progress_json_option,
    reported,
    run_job,
)

cluster_option = click.option(
    "--cluster", metavar="ADDR", default=None, envvar="VERTEXFLOW_CLUSTER",
    help="Run as shards on a Dask cluster: tcp://SCHEDULER:8786, or local:N worker processes here "
         "(needs vertexflow[dask]; see docs/cluster.md).")


def transfer_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Options shared by copy and sync."""
    for opt in reversed([
        click.option("--transfers", type=click.IntRange(1, 1024), default=None,
                     help="Objects in flight at once [8 local, 16 remote]."),
        click.option("--progress/--no-progress", default=None, help="Live progress bar on stderr [on for a terminal]."),
        progress_json_option,
        click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON."),
        click.option("--no-verify", is_flag=True, help="Skip SHA-256 hashing (local copies use copy_file_range)."),
        click.option("--retries", type=click.IntRange(1, 100), default=DEFAULT_RETRIES, show_default=True,
                     help="Attempts per object before it is reported as failed."),
        click.option("--checksum", is_flag=True, help="Compare by SHA-256 instead of size and mtime."),
        click.option("--size-only", is_flag=True, help="Compare by size alone."),
        click.option("--dry-run", is_flag=True, help="Print the plan; change nothing."),
        click.option("--order-by", type=click.Choice(["size,desc", "size,asc", "mtime,asc", "mtime,desc"]),
                     default=None, help="Transfer order (plans everything first)."),
        click.option("--journal", "journal_path", type=click.Path(dir_okay=False), envvar="VERTEXFLOW_JOURNAL",
                     help="Journal database [~/.local/state/vertexflow/journal.db]."),
        click.option("--no-journal", is_flag=True, help="Keep no record (no resume, no incremental sync)."),
        click.option("--report", "report_path", type=click.Path(dir_okay=False), default=None, metavar="FILE",
                     help="Write one JSON line per object (copied, skipped, deleted, failed) to FILE as the job runs."),
        click.option("--metadata/--no-metadata", default=True,
                     help="Carry Content-Type, headers, user metadata and mtimes with the bytes [on] "
                          "(docs/fidelity.md: what each pair of stores keeps)."),
        click.option("--metadata-set", multiple=True, metavar="KEY=VALUE",
                     help="Set on every object written (repeatable): content-type, cache-control... "
                          "as headers, other keys as user metadata."),
        click.option("--metadata-exclude", multiple=True, metavar="KEY",
                     help="Do not carry this header or user metadata (repeatable; globs such as 'x-*')."),
        click.option("--content-type", "content_types", multiple=True, metavar="PATTERN=TYPE",
                     help="The Content-Type of objects whose key matches the glob (repeatable; the first "
                          "that matches wins), e.g. '*.fset3=application/octet-stream'."),
        click.option("--storage-class", metavar="CLASS",
                     help="S3 storage class of every object written (STANDARD, STANDARD_IA, GLACIER_IR...) "
                          "[the bucket's default]."),
        click.option("--sse", type=click.Choice(SSE_ALGORITHMS),
                     help="S3 server-side encryption of every object written [the bucket's default]."),
        click.option("--sse-kms-key-id", metavar="KEY",
                     help="The KMS key for --sse aws:kms [the account's default key]."),
        click.option("--acl", type=click.Choice(CANNED_ACLS),
                     help="S3 canned ACL of every object written [the bucket's default]."),
        click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE",
                     help="S3 tag set on every object written, over the tags it carries (repeatable)."),
        click.option("--ignore-existing", is_flag=True,
                     help="Skip every object the destination already has, changed or not."),
        click.option("--update", "-u", is_flag=True, help="Skip objects that are newer at the destination."),
        click.option("--immutable", is_flag=True,
                     help="Never overwrite: an existing destination object that differs from its source is a "
                          "failure (exit 1), left as it is."),
        click.option("--create-empty-src-dirs", is_flag=True,
                     help="Make the source's empty folders at the destination (local disk, Yandex.Disk)."),
        click.option("--links", "-l", is_flag=True,
                     help="Store a local source's symbolic links as NAME.rclonelink objects holding their "
                          "target, as rclone does [links are skipped with a warning]."),
        click.option("--copy-links", "-L", is_flag=True,
                     help="Follow a local source's symbolic links: copy what they point to."),
        click.option("--max-transfer", metavar="SIZE",
                     help="Stop once this many bytes have moved (e.g. 10G); run again to continue (exit 8)."),
        click.option("--max-duration", metavar="TIME",
                     help="Stop this long after the start (e.g. 1h30m); run again to continue (exit 10)."),
        click.option("--cutoff-mode", type=click.Choice(CUTOFF_MODES), default="hard", show_default=True,
                     help="At --max-transfer/--max-duration: abort the transfers in flight (hard), let them "
                          "finish (soft), or start none that would pass --max-transfer (cautious)."),
        *timeout_options,
        cluster_option,
        *filter_options,
        *stage_and_limit_options,
    ]):
        fn = opt(fn)
    return fn


#: rclone's ``--timeout`` and ``--contimeout``, on every command that runs a job spec
timeout_options = [
    click.option("--timeout", metavar="DURATION", default=None,
                 help="A network store's request that sends no byte for this long fails, and is retried "
                      "(e.g. 30s, 5m) [S3: 60s; Yandex.Disk: the remote's request_timeout, 30s]."),
    click.option("--contimeout", metavar="DURATION", default=None,
                 help="A connection to a network store not made within this long fails, and is retried "
                      "[S3: 5s; Yandex.Disk: its request_timeout, which --timeout sets]."),
]

stage_and_limit_options = [
    click.option("--hash", "hash_algorithms", metavar="LIST",
                 help="Digests taken in-stream: sha256 (always), md5, blake3, xxh128, e.g. sha256,md5."),
    click.option("--compress", metavar="CODEC[:LEVEL]",
                 help="Compress objects on the way: zstd:1-19 or gzip:1-9, stored as KEY.zst / KEY.gz."),
    click.option("--compress-force", is_flag=True,
                 help="Compress content recognised as already compressed (JPEG, MP4, ZIP...) too."),
    click.option("--chunk-size", metavar="SIZE",
                 help="Store objects larger than SIZE (e.g. 100M) as parts plus a manifest under KEY.vfchunk/."),
    click.option("--stages", metavar="ORDER",
                 help="The order the bytes pass the stages [hash,compress,chunk]; naming one turns it on."),
    click.option("--decompress", is_flag=True, help="Decompress the source's .zst/.gz objects."),
    click.option("--reassemble", is_flag=True, help="Join the source's chunked objects, verifying every part."),
    click.option("--hash-threads", type=click.IntRange(1, 64), default=None,
                 help="Worker threads hashing at once [one per core]."),
    click.option("--compress-threads", type=click.IntRange(1, 64), default=None,
                 help="Worker threads compressing at once [one per core]."),
    click.option("--bwlimit", metavar="RATE",
                 help='Bytes per second each way: 10M, 10M:1M (up:down), off, or a timetable '
                      '"08:00,512k 19:00,10M 23:00,off" (weekdays: "Mon-08:00,512k Sat-00:00,off").'),
    click.option("--bwlimit-up", metavar="RATE",
                 help="Limit for writes to the destination alone (overrides --bwlimit)."),
    click.option("--bwlimit-down", metavar="RATE", help="Limit for reads from the source alone (overrides --bwlimit)."),
    click.option("--adaptive/--no-adaptive", default=True,
                 help="Cut the requests in flight to a remote store when it answers 429/503/SlowDown, "
                      "and grow them back on success [on]."),
]
#: the stage options, named as :class:`~vertexflow.ops.spec.StageSpec` names them
STAGE_OPTION_NAMES = ("hash_algorithms", "compress", "compress_force", "chunk_size", "stages", "decompress",
                      "reassemble", "hash_threads", "compress_threads")

filter_options = [
    click.option("--include", multiple=True, metavar="GLOB", help="Only keys matching (repeatable)."),
    click.option("--exclude", multiple=True, metavar="GLOB", help="Skip keys matching (repeatable)."),
    click.option("--min-size", metavar="SIZE", help="Only objects at least this big (e.g. 1M)."),
    click.option("--max-size", metavar="SIZE", help="Only objects at most this big (e.g. 1G)."),
    click.option("--min-age", metavar="AGE", help="Only objects older than this (e.g. 7d)."),
    click.option("--max-age", metavar="AGE", help="Only objects younger than this (e.g. 1h)."),
    click.option("--prefix", default="", metavar="P", help="Only keys under this prefix."),
    click.option("--ext", "extensions", metavar="LIST", help="Only these file extensions, e.g. jpg,png,mp4."),
    click.option("--files-from", multiple=True, metavar="FILE", type=click.Path(dir_okay=False),
                 help="Only the keys FILE names, one a line ('#' and ';' start comments; repeatable)."),
    click.option("--include-from", multiple=True, metavar="FILE", type=click.Path(dir_okay=False),
                 help="Globs to include, one a line, as if each were given to --include (repeatable)."),
    click.option("--exclude-from", multiple=True, metavar="FILE", type=click.Path(dir_okay=False),
                 help="Globs to exclude, one a line, as if each were given to --exclude (repeatable)."),
]


def with_filter_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    for opt in reversed(filter_options):
        fn = opt(fn)
    return fn


def build_filter(kw: dict[str, Any]) -> Filter:
    """The filter the filter options ask for (popped from ``kw``); ConfigError naming a bad one."""
    include = [*kw.pop("include", ()), *(p for f in kw.pop("include_from", ()) or ()
                                          for p in read_list_file(f, "--include-from"))]
    exclude = [*kw.pop("exclude", ()), *(p for f in kw.pop("exclude_from", ()) or ()
                                          for p in read_list_file(f, "--exclude-from"))]
    return Filter(
        include=tuple(include), exclude=tuple(exclude), files=files_from(kw.pop("files_from", ()) or ()),
        min_size=parse_size(v) if (v := kw.pop("min_size", None)) else None,
        max_size=parse_size(v) if (v := kw.pop("max_size", None)) else None,
        min_age=parse_age(v) if (v := kw.pop("min_age", None)) else None,
        max_age=parse_age(v) if (v := kw.pop("max_age", None)) else None,
        prefix=kw.pop("prefix", "") or "",
        extensions=tuple(e.strip().lower().lstrip(".") for e in (kw.pop("extensions", None) or "").split(",")
                         if e.strip()),
    )


@click.command()
@click.argument("src")
@click.argument("dst")
@transfer_options
@click.pass_obj
def copy(obj: Ctx, src: str, dst: str, **kw: Any) -> None:
    """Copy the contents of SRC under DST, skipping objects already there unchanged.

    \b
    Locations: ./dir, /abs/dir, s3://bucket/prefix, yadisk:/path, or REMOTE:path
    with a remote from the config file. Rerunning an interrupted copy resumes it.
    """
    _transfer(obj, "copy", src, dst, delete=False, max_delete=None, **kw)


@click.command()
@click.argument("src")
@click.argument("dst")
@transfer_options
@click.option("--delete", is_flag=True, help="Delete destination objects that are not at the source.")
@click.option("--max-delete", type=click.IntRange(0), default=None, help="Refuse to delete more than N objects.")
@click.option("--backup-dir", metavar="LOCATION",
              help="Copy each destination object the sync would overwrite or delete to LOCATION (same key) "
                   "first; LOCATION must overlap neither the source nor the destination.")
@click.pass_obj
def sync(obj: Ctx, src: str, dst: str, **kw: Any) -> None:
    """Make DST like SRC: copy what is new or changed (and delete extras with --delete).

    A repeated sync compares against the journal's record of DST, so it sends no
    per-object requests for unchanged objects.
    """
    _transfer(obj, "sync", src, dst, **kw)


def _transfer(obj: Ctx, mode: str, src: str, dst: str, *, progress: bool | None, as_json: bool,
              cluster: str | None = None, **kw: Any) -> None:
    with reported():
        spec = spec_from_options(mode, src, dst, obj.config_path, kw)
        config = obj.config
        if cluster and (spec.settings.max_transfer or spec.settings.max_duration):
            raise ConfigError("--max-transfer and --max-duration hold for one process's run: leave out --cluster "
                              "(each shard would count its own)")
        if spec.backup_dir is not None:
            from ..ops.keep import backup_location

            backup_location(spec, config)
    run_spec(spec, config, as_json=as_json, progress=progress, cluster=cluster, title=f"{src} -> {dst}")


def spec_from_options(mode: str, src: str, dst: str, config_path: str | None, kw: dict[str, Any]) -> TransferSpec:
    """The job spec the command-line options of copy and sync ask for. Raises ConfigError naming a bad one."""
    if kw.get("checksum") and kw.get("size_only"):
        fail("--checksum and --size-only exclude each other")
    compare = "checksum" if kw.pop("checksum", False) else "size_only" if kw.pop("size_only", False) else "size_mtime"
    filt = build_filter(kw)
    stages = StageSpec(**{n: kw.pop(n) for n in STAGE_OPTION_NAMES})
    settings = TransferSettings(transfers=kw.pop("transfers"), retries=kw.pop("retries"), verify=not kw.pop("no_verify"),
                                stages=stages, bwlimit=kw.pop("bwlimit"), bwlimit_up=kw.pop("bwlimit_up"),
                                bwlimit_down=kw.pop("bwlimit_down"), adaptive=kw.pop("adaptive"),
                                metadata=kw.pop("metadata", True), metadata_set=tuple(kw.pop("metadata_set", ())),
                                metadata_exclude=tuple(kw.pop("metadata_exclude", ())),
                                content_types=tuple(kw.pop("content_types", ())),
                                storage_class=kw.pop("storage_class", None), sse=kw.pop("sse", None),
                                sse_kms_key_id=kw.pop("sse_kms_key_id", None), acl=kw.pop("acl", None),
                                tags=tuple(kw.pop("tags", ())), max_transfer=kw.pop("max_transfer", None),
                                max_duration=kw.pop("max_duration", None),
                                cutoff_mode=kw.pop("cutoff_mode", None) or "hard",
                                timeout=kw.pop("timeout", None), contimeout=kw.pop("contimeout", None))
    return TransferSpec(mode=mode, source=src, dest=dst, config_path=config_path,  # type: ignore[arg-type]
                        delete=kw.pop("delete", False), max_delete=kw.pop("max_delete", None), compare=compare,
                        dry_run=kw.pop("dry_run"), order_by=kw.pop("order_by"), filter=filt, settings=settings,
                        journal=kw.pop("journal_path"), no_journal=kw.pop("no_journal"),
                        report=kw.pop("report_path", None), ignore_existing=kw.pop("ignore_existing", False),
                        update=kw.pop("update", False), immutable=kw.pop("immutable", False),
                        backup_dir=kw.pop("backup_dir", None),
                        create_empty_src_dirs=kw.pop("create_empty_src_dirs", False),
                        links=_links(kw.pop("links", False), kw.pop("copy_links", False)))


def _links(store: bool, follow: bool) -> str:
    if store and follow:
        raise ConfigError("--links and --copy-links: store links as links, or follow them; choose one")
    return "store" if store else "follow" if follow else "skip"


def run_spec(spec: TransferSpec, config: Any, *, as_json: bool, progress: bool | None, cluster: str | None,
             title: str) -> None:
    """Run ``spec`` here (or as shards on ``cluster``), print its summary and exit with its status."""
    from ..ops.assembly import Transfer

    with reported():
        transfer = Transfer.prepare(spec, config)
    show_progress = (sys.stderr.isatty() if progress is None else progress) and not spec.dry_run
    if cluster and not spec.dry_run:  # a dry run only plans: it stays in this process
        from ..distributed.jobs import cluster_transfer

        stats, error = cluster_transfer(address=cluster, transfer=transfer, show_progress=show_progress)
        if error is not None:
            click.echo(f"vertexflow: error: {error}", err=True)
        print_summary(stats, as_json, f"{title} on {cluster}")
        sys.exit(EXIT_FATAL if stats.fatal else EXIT_INTERRUPTED if stats.interrupted
                 else EXIT_PARTIAL if stats.failed_objects else EXIT_OK)
    stats = JobStats()
    stop = StopSignal()
    plan_lines: list[str] = []

    def on_plan(d: Any) -> None:
        if d.action in ("copy", "delete", "refuse"):
            line = f"{d.action} {shown(d.key)} ({d.why})"
            if as_json:
                plan_lines.append(line)
            else:
                click.echo(line)

    async def job() -> None:
        await transfer.run(stats, stop, on_plan=on_plan)

    code = run_job(job, stats, stop, show_progress)
    print_summary(stats, as_json, title + (" (dry run)" if spec.dry_run else ""),
                  extra={"plan": plan_lines} if spec.dry_run and as_json else None)
    sys.exit(cutoff_status(stats, code))


def cutoff_status(stats: JobStats, code: int) -> int:
    """A run that did all it started but stopped at --max-transfer / --max-duration exits 8 / 10 (rclone's)."""
    cutoff = stats.reporters.get("cutoff")
    if code != EXIT_OK or cutoff is None or cutoff.reached is None:
        return code
    return EXIT_MAX_TRANSFER if cutoff.reached == "max-transfer" else EXIT_MAX_DURATION
