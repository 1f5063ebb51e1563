"""``vertexflow company refs`` and ``vertexflow company smoke``: the platform's database against its files.

Registered on the ``company`` group by :mod:`.tenancy`. The work is done by
:mod:`vertexflow.ops.refs` and :mod:`vertexflow.ops.smoke`; this module
parses and prints. Exit status: 0 all good; 1 a reference dangles (or
differs from its digest), or a smoke step failed; 2 bad input (an unknown
company, a declaration naming a table or column the database lacks, a
``url_pattern`` matching no path, more orphans than ``--max-delete``).
"""

from __future__ import annotations

from typing import Any

import click

from ..errors import ConfigError
from ..ops.refs import DEFAULT_SHOWN
from ..ops.smoke import HTTP_TIMEOUT
from ..tenancy.manager import StorageManager
from .platform import TenancyCtx, echo_data, run_with_manager
from .run import EXIT_PARTIAL, reported

def _refs_text(data: dict[str, Any]) -> str:
    lines = []
    for co in data["companies"]:
        for c in co["content_types"]:
            line = (f"{co['slug']} {c['content_type']} ({c['where']}): {c['rows']:,} rows, {c['files']:,} files; "
                    f"{c['dangling']:,} dangling, {c['orphans']:,} orphans ({c['orphan_bytes']:,} bytes)")
            if data["checksum"]:
                line += f", {c['mismatched']:,} differ from their digest ({c['digests_checked']:,} compared)"
            if data["state"] != "checked":
                line += f"; {'would delete' if data['state'] == 'dry_run' else 'deleted'} {c['deleted']:,}"
            if c["kept"]:
                line += f" (kept: {c['kept']})"
            lines.append(line)
            lines += [f"  dangling {d['reference']} row {d['row_id']}: {d['path']}"
                      + (f" (key {d['key']})" if d["key"] != d["path"] else "") + f": {d['why']}"
                      for d in c["first_dangling"]]
            lines += [f"  orphan {key}" for key in c["first_orphans"]]
    unknown = data["unknown_company"]
    if unknown["rows"]:
        lines.append(f"{unknown['rows']:,} rows name a company that does not exist:")
        lines += [f"  dangling {d['reference']} row {d['row_id']}: {d['path']}: {d['why']}" for d in unknown["first"]]
    lines += [f"note: {n}" for n in data["notes"]]
    totals = "; ".join(f"{ct}: {t['rows']:,} rows, {t['files']:,} files, {t['dangling']:,} dangling, "
                       f"{t['orphans']:,} orphans" for ct, t in data["totals"].items())
    verdict = "ok" if data["ok"] else f"{data['dangling']:,} dangling references" + (
        f", {data['mismatched']:,} differing from their digest" if data["mismatched"] else "")
    lines.append(f"{verdict} ({totals})" if totals else verdict)
    return "\n".join(lines)


@click.command("refs")
@click.argument("company_ref", required=False, metavar="[COMPANY]")
@click.option("--all", "all_companies", is_flag=True, help="Every company of the platform database.")
@click.option("--checksum", is_flag=True,
              help="Also compare each file with its row's digest column (where one is declared); reads the files.")
@click.option("--limit", type=click.IntRange(0), default=DEFAULT_SHOWN, show_default=True, metavar="N",
              help="Name at most N dangling references and N orphans per company and content type (the counts "
                   "are whole).")
@click.option("--delete-orphans", is_flag=True,
              help="Delete the unreferenced files (never where a reference dangles, nor files younger than "
                   "--min-age).")
@click.option("--dry-run", is_flag=True, help="With --delete-orphans: count what would be deleted, delete nothing.")
@click.option("--max-delete", type=click.IntRange(0), default=None, metavar="N",
              help="With --delete-orphans: refuse (deleting nothing) if there are more than N to delete [no limit].")
@click.option("--min-age", default="1h", show_default=True, metavar="AGE",
              help="With --delete-orphans: keep orphans younger than this (an upload whose row is not written yet).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def refs(obj: TenancyCtx, company_ref: str | None, all_companies: bool, checksum: bool, limit: int,
         delete_orphans: bool, dry_run: bool, max_delete: int | None, min_age: str, as_json: bool) -> None:
    """Check the database's file references of COMPANY (or --all) against its current storage.

    \b
    The storage config's "references" section names the columns that hold file
    paths (docs/references.md). Reports dangling references (row id, column,
    path) and unreferenced files (orphans), with counts per content type; exit 1
    when a reference dangles. Orphans are deleted only with --delete-orphans.
    """
    from ..filters import parse_age
    from ..ops.refs import check_references

    with reported():
        if bool(company_ref) == all_companies:
            raise ConfigError("company refs: name a COMPANY or give --all (not both)")
        if not delete_orphans and (dry_run or max_delete is not None):
            raise ConfigError("company refs: --dry-run and --max-delete go with --delete-orphans")
        age = 0.0 if min_age.strip() == "0" else parse_age(min_age).total_seconds()

    async def run(m: StorageManager) -> dict[str, Any]:
        report = await check_references(m, company_ref, checksum=checksum, shown=limit,
                                        delete_orphans=delete_orphans, dry_run=dry_run, max_delete=max_delete,
                                        orphan_min_age=age)
        return report.as_dict()

    data = run_with_manager(obj, run)
    echo_data(data, as_json, _refs_text(data))
    if not data["ok"]:
        raise SystemExit(EXIT_PARTIAL)


@click.command("smoke")
@click.argument("company_ref", metavar="COMPANY")
@click.option("--content-type", "content_types", multiple=True, metavar="NAME",
              help="Only this content type (repeatable) [all].")
@click.option("--timeout", type=click.FloatRange(0.1), default=HTTP_TIMEOUT, show_default=True, metavar="SECONDS",
              help="The longest the fetch of a public URL may take.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def smoke(obj: TenancyCtx, company_ref: str, content_types: tuple[str, ...], timeout: float, as_json: bool) -> None:
    """Upload, read back, fetch by public URL and delete a test file on each content type of COMPANY.

    \b
    Through the platform's StorageManager, on the company's current route; also
    reads one existing file. Each step is printed with its latency; exit 1 when
    one fails (the message names the step and the route).
    """
    from ..ops.smoke import smoke_company

    async def run(m: StorageManager) -> dict[str, Any]:
        report = await smoke_company(m, company_ref, content_types=list(content_types) or None,
                                     http_timeout=timeout)
        return report.as_dict()

    data = run_with_manager(obj, run)
    marks = {True: "ok", False: "FAILED", None: "skipped"}
    text = "\n".join([*(f"{s['content_type']:<12} {s['step']:<14} {marks[s['ok']]:<8} {s['seconds'] * 1000:9.1f} ms"
                        f"  {s['detail']}" for s in data["steps"]), data["message"]])
    echo_data(data, as_json, text)
    if not data["ok"]:
        click.echo(f"vertexflow: error: {data['message']}", err=True)
        raise SystemExit(EXIT_PARTIAL)
