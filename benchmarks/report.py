"""Medians, ratios against the peers, targets met or missed; the markdown and JSON reports.

Units: MB = 10^6 bytes (throughput and RSS alike). A ratio compares
vertexflow's median rate with a peer's on the same data in the same run:
``vertexflow_rate / peer_rate``, so > 1 means vertexflow was faster.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .scenarios import Sample, ScenarioResult, Target
from .tools import Contender

#: RSS(200k objects) - RSS(20k objects) may be at most this many MB
RSS_GROWTH_LIMIT_MB = 50.0
LIMIT_NOTE = ("; against `limit`, the fraction of what the server delivers to or accepts from a trivial client "
              "(benchmarks/limit.py), as in the column \"of limit\" below.")


@dataclass(slots=True)
class RowStats:
    contender: Contender
    files: int
    bytes: int
    ok_runs: int
    runs: int
    wall_median: float | None
    wall_min: float | None
    wall_max: float | None
    rss_mb: float | None       # median peak RSS of the ok runs
    load1: float | None        # median 1-minute load average when its runs started
    problems: list[str]

    @property
    def mb_s(self) -> float | None:
        return self.bytes / 1e6 / self.wall_median if self.wall_median else None

    @property
    def obj_s(self) -> float | None:
        return self.files / self.wall_median if self.wall_median else None

    def rate(self, metric: str) -> float | None:
        return self.mb_s if metric == "MB/s" else self.obj_s


def row_stats(result: ScenarioResult) -> list[RowStats]:
    rows = []
    for c in result.scenario.contenders:
        mine = [s for s in result.samples if s.contender == c.name]
        ok = [s for s in mine if s.ok]
        walls = [s.wall_s for s in ok]
        rss = [s.peak_rss_kib * 1024 / 1e6 for s in ok if s.peak_rss_kib]
        files, nbytes = result.scenario.moved(c)
        rows.append(RowStats(
            contender=c, files=files, bytes=nbytes, ok_runs=len(ok), runs=len(mine),
            wall_median=statistics.median(walls) if walls else None,
            wall_min=min(walls) if walls else None, wall_max=max(walls) if walls else None,
            rss_mb=statistics.median(rss) if rss else None,
            load1=statistics.median(s.load1 for s in mine) if mine else None,
            problems=[f"round {s.rep}: {s.problem}" for s in mine if not s.ok]))
    return rows


def of_limit(result: ScenarioResult) -> dict[str, float | None]:
    """Each row's rate as a fraction of the limit row's (the scenario's metric); empty without a limit row."""
    rows = row_stats(result)
    limit = next((r for r in rows if r.contender.tool == "limit"), None)
    if limit is None:
        return {}
    metric = "MB/s" if result.scenario.dataset.label == "A" else "objects/s"
    ceiling = limit.rate(metric)
    out: dict[str, float | None] = {}
    for row in rows:
        rate = row.rate(metric)
        out[row.contender.name] = rate / ceiling if rate and ceiling else None
    return out


@dataclass(slots=True)
class Verdict:
    scenario: str
    ours: str
    peer: str
    metric: str
    ratio: float | None      # or, for the RSS check, the growth in MB
    target: str
    met: bool | None         # None: informational, no target
    cold: bool = False       # from a cold-cache scenario


def verdicts(result: ScenarioResult) -> list[Verdict]:
    sc = result.scenario
    rows = {r.contender.name: r for r in row_stats(result)}
    out: list[Verdict] = []
    if sc.group == "rss":
        small, large = (rows[c.name] for c in sc.contenders)
        growth = (large.rss_mb - small.rss_mb) if large.rss_mb is not None and small.rss_mb is not None else None
        out.append(Verdict(sc.title, f"{large.files:,} vs {small.files:,} objects", "", "peak RSS growth MB",
                           growth, f"<= {RSS_GROWTH_LIMIT_MB:.0f} MB",
                           growth is not None and growth <= RSS_GROWTH_LIMIT_MB))
        return out
    targeted = {(t.ours, t.peer): t for t in sc.targets}
    for ours in (c for c in sc.contenders if c.ours):
        for peer in (c for c in sc.contenders if not c.ours):
            t = targeted.get((ours.name, peer.name))
            metric = t.metric if t else ("MB/s" if sc.dataset.label == "A" else "objects/s")
            a, b = rows[ours.name].rate(metric), rows[peer.name].rate(metric)
            ratio = a / b if a and b else None
            cold = sc.group == "local-cold"
            if t is None:
                out.append(Verdict(sc.title, ours.name, peer.name, metric, ratio, "-", None, cold))
            else:
                out.append(Verdict(sc.title, ours.name, peer.name, metric, ratio, f">= {t.minimum:g}x",
                                   ratio is not None and ratio >= t.minimum, cold))
    return out


# -- markdown ---------------------------------------------------------------------------

def _f(value: float | None, fmt: str, missing: str = "n/a") -> str:
    return missing if value is None else format(value, fmt)


def _met(v: Verdict) -> str:
    if v.met is None:
        return "(info)"
    return "**yes**" if v.met else "**NO**"


def markdown(results: list[ScenarioResult], meta: dict[str, Any]) -> str:
    lines = [f"# vertexflow benchmarks ({meta['mode']})", ""]
    lines += [(f"Run {meta['started']} on {meta['host']}; command `{meta['command']}`; "
              f"{meta['duration_s'] / 60:.1f} minutes."), "",
              f"vertexflow code: {meta['code']}.", ""]

    all_verdicts = [v for r in results if r.error is None for v in verdicts(r)]
    if all_verdicts:
        lines += ["## Targets", "",
                  "| scenario | vertexflow | vs | metric | ratio | target | met? |",
                  "|---|---|---|---|---:|---|---|"]
        for v in all_verdicts:
            value = (_f(v.ratio, "+.1f") + " MB") if v.metric.startswith("peak RSS") else _f(v.ratio, ".2f") + "x"
            if v.ratio is None:
                value = "n/a"
            lines.append(f"| {v.scenario} | {v.ours} | {v.peer or '-'} | {v.metric} | {value} | {v.target} | {_met(v)} |")
        # the bars are judged on the warm rows; the cold-cache rows (the same bars) are counted apart
        targeted = [v for v in all_verdicts if v.met is not None and not v.cold]
        cold = [v for v in all_verdicts if v.met is not None and v.cold]
        cold_count = (f" Cold-cache rows (page cache dropped before every run, counted apart): "
                      f"{sum(bool(v.met) for v in cold)} of {len(cold)}." if cold else "")
        lines += ["", (f"Targets met: {sum(bool(v.met) for v in targeted)} of {len(targeted)}.{cold_count} "
                  "Ratio = vertexflow rate / peer rate (median of the rounds; > 1: vertexflow faster)"
                  f"{LIMIT_NOTE if any(v.peer == 'limit' for v in all_verdicts) else '.'} "
                  "Machine load during the runs is in the last column below: compare with care."), ""]

    lines += ["## Measurements", "",
              "| scenario | tool | wall s, median (min-max) | MB/s | objects/s | of limit | peak RSS MB | ok runs "
              "| load |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        if r.error is not None:
            lines.append(f"| {r.scenario.title} | (scenario failed: {r.error}) | | | | | | | |")
            continue
        fractions = of_limit(r)
        for row in row_stats(r):
            frac = _f(fractions[row.contender.name], ".2f") if fractions else "-"
            wall = (f"{row.wall_median:.2f} ({row.wall_min:.2f}-{row.wall_max:.2f})"
                    if row.wall_median is not None else "failed")
            obj_fmt = ",.2f" if row.obj_s is not None and row.obj_s < 10 else ",.0f"
            lines.append(f"| {r.scenario.title} | {row.contender.name} | {wall} | {_f(row.mb_s, ',.1f')} | "
                         f"{_f(row.obj_s, obj_fmt)} | {frac} | {_f(row.rss_mb, ',.0f')} | {row.ok_runs}/{row.runs} | "
                         f"{_f(row.load1, '.1f')} |")
    lines.append("")

    problems = [(r.scenario.title, row.contender.name, p) for r in results if r.error is None
                for row in row_stats(r) for p in row.problems]
    if problems:
        lines += ["## Failed runs", ""]
        lines += [f"- {title} / {name}: {p}" for title, name, p in problems]
        lines.append("")

    lines += ["## Setup and notes", ""]
    lines += [f"- {n}" for n in meta["notes"]]
    lines += ["", "Datasets:", ""]
    lines += [f"- {d}" for d in meta["datasets"]]
    lines += ["", "Flags (every peer gets vertexflow's default concurrency for that kind of copy):", ""]
    seen: set[str] = set()
    for r in results:
        for c in r.scenario.contenders:
            key = f"{r.scenario.group}:{c.name}"
            if key not in seen:
                seen.add(key)
                lines.append(f"- {r.scenario.group}, {c.name}: `{c.flags}`")
    lines += ["", "Per scenario (load average = 1/5/15 min, before -> after):", ""]
    for r in results:
        lines.append(f"- {r.scenario.title}: {r.scenario.describe_setup()}; {r.repeat} round{'s' if r.repeat > 1 else ''} in "
                     f"{r.seconds:.0f} s; load {'/'.join(f'{x:.2f}' for x in r.load_before)} -> "
                     f"{'/'.join(f'{x:.2f}' for x in r.load_after)}")
    lines += ["", "Tool versions:", ""]
    lines += [f"- {k}: {v}" for k, v in meta["versions"].items()]
    lines.append("")
    return "\n".join(lines)


def as_json(results: list[ScenarioResult], meta: dict[str, Any]) -> dict[str, Any]:
    def sample(s: Sample) -> dict[str, Any]:
        return asdict(s)

    return {
        "meta": meta,
        "scenarios": [{
            "key": r.scenario.key, "title": r.scenario.title, "group": r.scenario.group,
            "dataset": r.scenario.dataset.spec.name, "repeat": r.repeat, "error": r.error,
            "seconds": r.seconds, "load_before": r.load_before, "load_after": r.load_after,
            "contenders": [{"name": c.name, "tool": c.tool, "ours": c.ours, "flags": c.flags}
                           for c in r.scenario.contenders],
            "targets": [asdict(t) for t in r.scenario.targets],
            "samples": [sample(s) for s in r.samples],
            "rows": [{"contender": row.contender.name, "files": row.files, "bytes": row.bytes,
                      "ok_runs": row.ok_runs, "runs": row.runs, "wall_median_s": row.wall_median,
                      "mb_per_s": row.mb_s, "objects_per_s": row.obj_s, "peak_rss_mb": row.rss_mb,
                      "of_limit": of_limit(r).get(row.contender.name)}
                     for row in row_stats(r)] if r.error is None else [],
            "verdicts": [asdict(v) for v in verdicts(r)] if r.error is None else [],
        } for r in results],
    }


def write(results: list[ScenarioResult], meta: dict[str, Any], out_dir: Path, stem: str,
          latest: str) -> tuple[Path, str]:
    """Write ``<stem>.md``/``.json`` and ``<latest>.md``/``.json``; returns the dated markdown path and text."""
    out_dir.mkdir(parents=True, exist_ok=True)
    text = markdown(results, meta)
    data = json.dumps(as_json(results, meta), indent=2, default=str)
    for name in (stem, latest):
        (out_dir / f"{name}.md").write_text(text)
        (out_dir / f"{name}.json").write_text(data + "\n")
    return out_dir / f"{stem}.md", text


__all__ = ["Target", "as_json", "markdown", "of_limit", "row_stats", "verdicts", "write"]
