"""``vertexflow migrate plan COMPANY --to CONNECTION``: what a change window needs, before the migration.

It prints the files and bytes per content type, the quota check per target
store, a short throughput probe of both ends and the estimated duration
with its range, then the command that runs the migration
(:mod:`vertexflow.ops.migrate_plan` does the work; ``docs/migration-plan.md``).

Exit status: 0 the plan was made; 1 the company would not fit (a store that
reports its free space has less than the company needs there), or a probe
object could not be deleted (each is named); 2 bad input (an unknown
company or connection, the company already there, an option out of range).
"""

from __future__ import annotations

import shlex
import sys
from typing import Any

import click

from ..ops.migrate_plan import PROBE_SECONDS, PROBE_SECONDS_RANGE
from ..pipeline.progress import human_bytes
from ..tenancy.manager import StorageManager
from .platform import TenancyCtx, echo_data, run_with_manager
from .run import EXIT_PARTIAL, reported
from .transfer import build_filter, with_filter_options

#: the filter options as the command line spells them (for the command that runs the migration)
_FILTER_FLAGS = {"include": "--include", "exclude": "--exclude", "min_size": "--min-size", "max_size": "--max-size",
                 "min_age": "--min-age", "max_age": "--max-age", "prefix": "--prefix", "extensions": "--ext"}


@click.command("plan")
@click.argument("company_ref")
@click.option("--to", "to", required=True, metavar="CONNECTION",
              help="local, minio, yandex_disk, or a named connection.")
@click.option("--probe-seconds", type=click.FloatRange(*PROBE_SECONDS_RANGE), default=PROBE_SECONDS,
              show_default=True,
              help="Wall time of the throughput probe (reads from the source, writes to the target).")
@click.option("--no-probe", is_flag=True, help="Count and check the quota only: no probe, no estimate.")
@click.option("--transfers", type=click.IntRange(1, 1024), default=None,
              help="Files in flight, as the migration will run [8 local, 16 remote].")
@click.option("--seed", type=int, default=None, help="Draw the probe's sample with this seed [random; printed].")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@with_filter_options
@click.pass_obj
def plan(obj: TenancyCtx, company_ref: str, to: str, probe_seconds: float, no_probe: bool, transfers: int | None,
         seed: int | None, as_json: bool, **kw: Any) -> None:
    """Plan migrating COMPANY (id or slug) to CONNECTION: files, bytes, quota, estimated duration.

    \b
    Nothing is recorded and the company does not move. The probe reads a
    random sample of the company's files for a few seconds, writes the same
    bytes to the target under .vertexflow-probe-* keys and deletes them.
    Exit 1 when the company would not fit on the target (or a probe object
    was left), 2 for bad input.
    """
    from ..ops.migrate_plan import plan_migration

    command = _migrate_command(company_ref, to, transfers, kw)
    with reported():
        filt = build_filter(kw)

    async def run(m: StorageManager) -> dict[str, Any]:
        result = await plan_migration(m, company_ref, to, filt=filt, probe_seconds=probe_seconds,
                                      probe=not no_probe, transfers=transfers, seed=seed)
        return result.as_dict()

    data = run_with_manager(obj, run)
    data["command"] = command
    echo_data(data, as_json, _text(data))
    left = (data.get("probe") or {}).get("left") or []
    for where in left:
        click.echo(f"vertexflow: error: a probe object is left on the target: {where}", err=True)
    if not data["fits"]:
        short = [q for q in data["quota"] if q["fits"] is False]
        click.echo("vertexflow: error: the company would not fit: " + "; ".join(
            f"{q['store']} needs {q['needed']:,} bytes, {q['free']:,} free" for q in short), err=True)
    if not data["fits"] or left:
        sys.exit(EXIT_PARTIAL)


def _migrate_command(company_ref: str, to: str, transfers: int | None, kw: dict[str, Any]) -> str:
    args = ["vertexflow", "migrate", "company", company_ref, "--to", to]
    for name, flag in _FILTER_FLAGS.items():
        value = kw.get(name)
        for v in value if isinstance(value, tuple) else (value,):
            if v:
                args += [flag, str(v)]
    if transfers is not None:
        args += ["--transfers", str(transfers)]
    return shlex.join(args)


def human_seconds(s: float) -> str:
    """``0.25 s``, ``12 s``, ``3 min 20 s``, ``2 h 05 min``."""
    if s < 10:
        return f"{s:.2g} s" if s < 1 else f"{s:.1f} s"
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        m, sec = divmod(round(s), 60)
        return f"{m} min {sec:02d} s"
    h, m = divmod(round(s / 60), 60)
    return f"{h} h {m:02d} min"


def _text(d: dict[str, Any]) -> str:
    lines = [f"company {d['company']}: {d['from'].get('name')} -> {d['to'].get('name')}"]
    for p in d["plan"]:
        left = f" ({p['left_out']} left out by the filter)" if p.get("left_out") else ""
        lines.append(f"  {p['content_type']}: {p['objects']:,} files, {p['bytes']:,} bytes{left}  "
                     f"{p['from']} -> {p['to']}")
        if p.get("extras"):  # left on the target by an earlier placement: the migration deletes them first
            shown = ", ".join(p["first_extras"]) + (", ..." if p["extras"] > len(p["first_extras"]) else "")
            lines.append(f"    {p['extras']} files on the target the company no longer has "
                         f"({p['extra_bytes']:,} bytes), to delete: {shown}")
    lines.append(f"  total: {d['files']:,} files, {d['bytes']:,} bytes ({human_bytes(d['bytes'])})")
    for q in d["quota"]:
        if q["free"] is None:
            verdict = "free space unknown (the store reports none): not checked"
        else:
            verdict = (f"{q['free']:,} bytes free ({human_bytes(q['free'])}, {q['how']}): "
                       + ("fits" if q["fits"] else "DOES NOT FIT"))
        lines.append(f"quota: {q['store']}: needs {q['needed']:,} bytes; {verdict}")
    probe = d.get("probe")
    if probe is not None:
        lines.append(f"probe: {probe['sampled']} of {probe['population']:,} files sampled (seed {probe['seed']}), "
                     f"{probe['transfers']} in flight, {probe['seconds']:.1f} s of {probe['budget_seconds']:g} s")
        for name, side in (("read", probe["read"]), ("write", probe["write"])):
            rate = f", {human_bytes(side['bytes_per_s'])}/s, {side['files_per_s']:g} files/s" \
                if side["bytes_per_s"] is not None else ""
            extra = "".join(f", {side[k]} {k}" for k in ("censored", "errors", "vanished") if side[k])
            est = (f" -> all files: {human_seconds(side['estimate_seconds'])}"
                   if side["estimate_seconds"] is not None else "")
            lines.append(f"  {name}: {side['completed']} files, {side['bytes']:,} bytes in {side['seconds']:.2f} s"
                         f"{rate}{extra}{est}")
            if side["first_error"]:
                lines.append(f"    first error: {side['first_error']}")
        lines.append(f"  probe objects: {probe['deleted']} deleted, "
                     + (f"{len(probe['left'])} LEFT" if probe["left"] else "none left")
                     + f" (under {', '.join(probe['where'])})")
    est = d.get("estimate")
    if est is not None:
        lines.append(f"estimated duration: {human_seconds(est['seconds'])} (range {human_seconds(est['low_seconds'])}"
                     f" - {human_seconds(est['high_seconds'])}): the copy, the slower of reads and writes; "
                     f"{human_seconds(est['serial_seconds'])} if they do not overlap")
        lines.append(f"  not included: listing ({d['listing_seconds']:.1f} s here), provisioning, verification")
    else:
        lines.append(f"estimated duration: none: {d['no_estimate']}")
    lines.append(f"to migrate: {d['command']}")
    return "\n".join(lines)
