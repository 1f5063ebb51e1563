"""``vertexflow verify``: compare two locations; exit 1 if anything is missing, extra or different.

``--one-way`` leaves extras out of the differences; ``--fix --delete`` removes
them (guards: :mod:`vertexflow.ops.verify`).

``--metadata`` compares what describes the bytes as well (``docs/fidelity.md``,
"Verifying what describes the bytes").
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from ..errors import ConfigError
from ..locations import parse_location
from .context import Ctx
from .run import EXIT_OK, EXIT_PARTIAL, progress_options, reported, run_or_exit
from .transfer import build_filter, cluster_option, with_filter_options


def parse_sample(sample: str) -> float:
    """``--sample 5%`` -> 0.05."""
    try:
        fraction = float(sample.rstrip("%")) / 100
    except ValueError:
        fraction = -1.0
    if not 0 < fraction <= 1:
        raise ConfigError(f"--sample {sample!r}: use a percentage between 0 and 100, e.g. 5%")
    return fraction


@click.command()
@click.argument("src")
@click.argument("dst")
@click.option("--checksum", "mode", flag_value="checksum", default=True,
              help="Compare sizes and content hashes (the default).")
@click.option("--size-only", "mode", flag_value="size", help="Compare sizes only.")
@click.option("--sample", default="100%", metavar="PCT", help="Check only this share of common objects, e.g. 5%.")
@click.option("--metadata", is_flag=True,
              help="Compare Content-Type, headers, user metadata and mtimes too, where both sides keep them "
                   "(docs/fidelity.md); --fix changes them in place where the store can.")
@click.option("--fix", is_flag=True, help="Copy what is missing or different, then verify again.")
@click.option("--one-way", is_flag=True,
              help="Objects only the destination has are no difference: check that every source object is there.")
@click.option("--delete", is_flag=True,
              help="With --fix: delete objects only the destination has, under the guards of sync --delete.")
@click.option("--max-delete", type=click.IntRange(0), default=None, metavar="N",
              help="With --delete: refuse (copying and deleting nothing) when more than N would be deleted.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--transfers", type=click.IntRange(1, 256), default=8, show_default=True,
              help="Objects hashed at once.")
@progress_options
@cluster_option
@with_filter_options
@click.pass_obj
def verify(obj: Ctx, src: str, dst: str, mode: str, sample: str, metadata: bool, fix: bool, one_way: bool,
           delete: bool, max_delete: int | None, as_json: bool, transfers: int, cluster: str | None = None,
           **filter_kw: Any) -> None:
    """Compare SRC and DST: report missing, extra and different objects (exit 1 if any).

    With --one-way, extra objects are no difference; with --fix --delete they are removed.
    A terminal shows the check's progress (bytes of the source checked, objects, rate, ETA)
    as it goes; --progress-json FILE writes it for scripts.
    """
    from ..ops.copy import resolve_source
    from ..ops.overlap import check_overlap
    from ..ops.verify import verify_and_fix
    from ..pipeline.stats import JobStats

    with reported():
        filt = build_filter(filter_kw)
        fraction = parse_sample(sample)
        src_loc = parse_location(src, obj.config)
        dst_loc = parse_location(dst, obj.config)
        if fix:  # --fix copies: the same refusal as copy's
            check_overlap(src_loc, dst_loc, filt, what="verify --fix")
        if metadata and cluster:
            raise ConfigError("verify --metadata does not run as shards on a cluster: leave out --cluster")
        if delete and not fix:
            raise ConfigError("verify --delete removes extras as part of --fix: add --fix")
        if delete and one_way:
            raise ConfigError("verify --delete with --one-way: --one-way counts no extras, so none would be "
                              "deleted; choose one")
        if max_delete is not None and not delete:
            raise ConfigError("verify --max-delete limits --fix --delete: add them, or leave it out")
        if (one_way or delete) and cluster:
            raise ConfigError("verify --one-way and --delete do not run as shards on a cluster: leave out --cluster")

    stats = JobStats(phase="comparing")

    async def run() -> dict[str, Any]:
        source, _ = await resolve_source(src_loc)
        async with source, dst_loc.backend() as target:
            return await verify_and_fix(source, target, mode=mode, filt=filt, sample=fraction,  # type: ignore[arg-type]
                                        workers=transfers, fix=fix, metadata=metadata, one_way=one_way,
                                        delete=delete, max_delete=max_delete, stats=stats)

    if cluster:  # the same job as shards on a Dask cluster (vertexflow.distributed)
        from ..distributed.jobs import cluster_verify

        with reported():
            result = cluster_verify(address=cluster, src_loc=src_loc, dst_loc=dst_loc,
                                    config_path=obj.config_path, filt=filt, mode=mode, sample=fraction,
                                    fix=fix, transfers=transfers)
    else:
        result = run_or_exit(run, progress=stats, status_of=lambda r: EXIT_OK if r["ok"] else EXIT_PARTIAL)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        _print_report(result)
    sys.exit(EXIT_OK if result["ok"] else EXIT_PARTIAL)


def _print_report(result: dict[str, Any]) -> None:
    if result.get("before_fix"):
        b = result["before_fix"]
        described = f", {b['metadata_different']} described differently" if "metadata_different" in b else ""
        in_place = result.get("fixed_in_place", 0)
        click.echo(f"before --fix: {b['missing']} missing, {b['extra']} extra, {b['different']} different"
                   f"{described}; copied {result['fixed'] - in_place}"
                   + (f", described anew in place {in_place}" if "fixed_in_place" in result else "")
                   + (f", deleted {result['deleted']}" if "deleted" in result else "")
                   + (f" ({result['deletes_skipped']} extras left: a copy failed)"
                      if result.get("deletes_skipped") else ""))
    table = Table(title="verify", show_header=False, box=None)
    for label, key in (("source objects", "src_objects"), ("destination objects", "dst_objects"),
                       ("compared", "compared"), ("read and hashed", "hashed_both_sides"),
                       ("matched", "matched"), ("missing at destination", "missing"),
                       ("extra at destination", "extra"), ("different", "different"),
                       ("described differently", "metadata_different")):
        if key in result:
            table.add_row(label, f"{result[key]:,}")
    Console().print(table)
    if result["problems"]:
        problems = Table("kind", "key", "detail", title="problems")
        for p in result["problems"]:
            problems.add_row(p["kind"], p["key"], p["detail"])
        Console().print(problems)
    click.echo("OK: destination matches source" if result["ok"] else "MISMATCH", err=True)

