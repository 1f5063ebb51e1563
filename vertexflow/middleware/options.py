"""The command-line options for stages, bandwidth and adaptive concurrency, and what they build.

``copy`` and ``sync`` take them (``transfer_options`` in :mod:`vertexflow.cli`);
:class:`JobMiddleware` turns them, with the remotes' config, into the
decorators :func:`~.wrap.wrap` puts around the job's two backends. The
destination gets the writing stages and the source the reading ones
(``--decompress``, ``--reassemble``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from ..backends.base import Backend
    from ..config import Config
    from ..locations import Location
    from ..pipeline.stats import JobStats
    from ..retry import RetryPolicy
    from ..throttle import Bandwidth
    from ..transforms import Stages

middleware_options = [
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
#: the parameter names of this module's options (what :meth:`JobMiddleware.from_cli` takes)
OPTION_NAMES = ("hash_algorithms", "compress", "compress_force", "chunk_size", "stages", "decompress", "reassemble",
                "hash_threads", "compress_threads", "bwlimit", "bwlimit_up", "bwlimit_down", "adaptive")
#: the options that change what is stored or read: a job's identity
STAGE_NAMES = OPTION_NAMES[:7]
_FLAG_OF = {"hash_algorithms": "--hash"}


def given_options(kw: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """This module's options that differ from their defaults, as ``(stage options, the others)``.

    What a job records so that ``jobs resume`` can give them again (:func:`as_arguments`).
    """
    given = {n: kw[n] for n in OPTION_NAMES if kw.get(n) not in (None, False) and not (n == "adaptive" and kw[n])}
    if kw.get("adaptive") is False:
        given["adaptive"] = False
    stages = {n: v for n, v in given.items() if n in STAGE_NAMES}
    return stages, {n: v for n, v in given.items() if n not in STAGE_NAMES}


def as_arguments(given: Mapping[str, Any]) -> list[str]:
    """Command-line arguments that give ``given`` (from :func:`given_options`) again."""
    args: list[str] = []
    for name, value in given.items():
        if name not in OPTION_NAMES:
            continue
        flag = _FLAG_OF.get(name, "--" + name.replace("_", "-"))
        if value is True:
            args.append(flag)
        elif value is False:
            args.append("--no-" + flag[2:])
        else:
            args += [flag, str(value)]
    return args


@dataclass(frozen=True, slots=True)
class JobMiddleware:
    """What to put around a job's source and destination."""

    source_stages: Stages
    dest_stages: Stages
    bandwidth: Bandwidth | None
    source_bandwidth: Bandwidth | None  # the source remote's own limit (config)
    dest_bandwidth: Bandwidth | None
    adaptive: int | None  # most requests in flight to a remote store; None: off

    @classmethod
    def from_cli(cls, kw: dict[str, Any], *, config: Config, src: Location, dst: Location, transfers: int,
                 retry: RetryPolicy) -> JobMiddleware:
        """Take this module's options out of ``kw``; raises ConfigError naming a bad one."""
        from ..filters import parse_size
        from ..throttle import Bandwidth
        from ..transforms import Stages

        o = {name: kw.pop(name) for name in OPTION_NAMES}
        threads = {"hash_threads": o["hash_threads"], "compress_threads": o["compress_threads"], "retry": retry}
        dest_stages = Stages.from_options(
            hashes=o["hash_algorithms"], compress=o["compress"], stages=o["stages"],
            chunk_size=parse_size(o["chunk_size"]) if o["chunk_size"] else None,
            force_compress=o["compress_force"], **threads)
        source_stages = Stages(decompress=o["decompress"], reassemble=o["reassemble"], **threads)  # type: ignore[arg-type]
        remote_limits: dict[str, Bandwidth | None] = {}
        for loc in (src, dst):
            name = loc.kwargs.get("name")
            remote = config.remotes.get(name) if name else None
            if name and name not in remote_limits:
                remote_limits[name] = Bandwidth.from_options(remote.bwlimit) if remote and remote.bwlimit else None
        return cls(source_stages=source_stages, dest_stages=dest_stages,
                   bandwidth=Bandwidth.from_options(o["bwlimit"], o["bwlimit_up"], o["bwlimit_down"]),
                   source_bandwidth=remote_limits.get(src.kwargs.get("name", "")),
                   dest_bandwidth=remote_limits.get(dst.kwargs.get("name", "")),
                   adaptive=transfers if o["adaptive"] else None)

    def source(self, backend: Backend, stats: JobStats) -> Backend:
        return self._wrap(backend, self.source_stages, self.source_bandwidth, stats)

    def destination(self, backend: Backend, stats: JobStats) -> Backend:
        return self._wrap(backend, self.dest_stages, self.dest_bandwidth, stats)

    def _wrap(self, backend: Backend, stages: Stages, remote: Bandwidth | None, stats: JobStats) -> Backend:
        from .wrap import wrap

        # local disk never answers "slow down"; leaving it bare keeps the engine's fast paths
        adaptive = None if backend.features.local_path else self.adaptive
        return wrap(backend, stages=stages, bandwidth=self.bandwidth, remote_bandwidth=remote,
                    adaptive=adaptive, stats=stats)
