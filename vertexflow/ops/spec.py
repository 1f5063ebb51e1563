"""What a copy or sync run needs, as one typed value: the job spec.

A :class:`TransferSpec` holds everything a run needs (locations, filters,
comparison, stages, bandwidth, concurrency, verification, journal) and
nothing live: it is plain data, JSON both ways (:meth:`TransferSpec.to_dict`,
:meth:`TransferSpec.from_dict`). The command line builds one from its
options, the daemon from its TOML, a Dask shard receives one, the journal
keeps one with every job so that ``jobs resume`` reopens it, and a company
migration takes its :class:`TransferSettings`. Each is turned into a running
job by :mod:`vertexflow.ops.assembly`, the one place that does it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from ..errors import ConfigError
from ..filters import NO_FILTER, Filter

#: attempts per object before it is reported as failed
DEFAULT_RETRIES = 5
#: objects in flight: 8 keep a 2-core machine's disks and both cores busy between local
#: directories; a remote store answers each request later, so more wait at once
LOCAL_TRANSFERS, REMOTE_TRANSFERS = 8, 16

CompareMode = Literal["size_mtime", "checksum", "size_only"]
#: a user metadata or header name S3 can carry (``x-amz-meta-NAME``)
_META_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")


@dataclass(frozen=True, slots=True, kw_only=True)
class StageSpec:
    """The stages asked for (``--hash``, ``--compress``, ``--chunk-size``...), as given.

    The names are those of the command-line options; the first seven change
    what is stored or read, so they are part of a job's identity.
    """

    hash_algorithms: str | None = None
    compress: str | None = None
    compress_force: bool = False
    chunk_size: str | None = None
    stages: str | None = None
    decompress: bool = False
    reassemble: bool = False
    hash_threads: int | None = None
    compress_threads: int | None = None

    IDENTITY = ("hash_algorithms", "compress", "compress_force", "chunk_size", "stages", "decompress", "reassemble")

    def identity(self) -> dict[str, Any]:
        """The options that change what is stored or read, those given only (a job's fingerprint holds them)."""
        return {n: getattr(self, n) for n in self.IDENTITY if getattr(self, n) not in (None, False)}


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferSettings:
    """How a run goes, whatever it moves: concurrency, retries, verification, stages, limits."""

    #: objects in flight; None: LOCAL_TRANSFERS between local directories, else REMOTE_TRANSFERS
    transfers: int | None = None
    retries: int = DEFAULT_RETRIES
    #: hash every byte and check it against what the destination stored
    verify: bool = True
    stages: StageSpec = field(default_factory=StageSpec)
    #: the job's limits (``--bwlimit``: both ways or UP:DOWN or a timetable; ``-up``/``-down``: one way)
    bwlimit: str | None = None
    bwlimit_up: str | None = None
    bwlimit_down: str | None = None
    #: halve the requests in flight to a remote store that says "slow down"
    adaptive: bool = True
    #: carry what describes the bytes: Content-Type, standard headers, user metadata, source mtime
    #: (``--metadata``/``--no-metadata``; ``docs/fidelity.md`` says what each pair of stores keeps)
    metadata: bool = True
    #: ``KEY=VALUE`` set on every object written, over what it carries (``--metadata-set``, repeatable):
    #: ``content-type`` and the standard header names as headers, other names as user metadata
    metadata_set: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "metadata_set", tuple(self.metadata_set))  # a JSON list, read back
        self.metadata_overrides()

    def metadata_overrides(self) -> dict[str, str]:
        """``metadata_set`` as a mapping of lower-case names; raises ConfigError naming a bad entry."""
        out: dict[str, str] = {}
        for entry in self.metadata_set:
            name, eq, value = entry.partition("=")
            name = name.strip().lower()
            if not eq or not _META_NAME.match(name):
                raise ConfigError(f"--metadata-set {entry!r}: expected KEY=VALUE, KEY a name of letters, "
                                  "digits and '-' (e.g. cache-control=max-age=60 or owner=company-7)")
            if not value.isascii() or not value.isprintable():
                raise ConfigError(f"--metadata-set {entry!r}: the value must be printable ASCII "
                                  "(S3 keeps metadata in HTTP headers)")
            out[name] = value
        return out

    def metadata_identity(self) -> dict[str, Any]:
        """The metadata options that change what is stored, those given only (a job's fingerprint holds them)."""
        out: dict[str, Any] = {}
        if not self.metadata:
            out["metadata"] = False
        if self.metadata_set:
            out["metadata_set"] = sorted(f"{k}={v}" for k, v in self.metadata_overrides().items())
        return out

    def transfers_for(self, local_only: bool) -> int:
        return self.transfers or (LOCAL_TRANSFERS if local_only else REMOTE_TRANSFERS)

    def check(self) -> None:
        """Raise ConfigError naming a limit or stage option that cannot be used."""
        from ..throttle import Bandwidth

        Bandwidth.from_options(self.bwlimit, self.bwlimit_up, self.bwlimit_down)
        self.dest_stages()

    def dest_stages(self) -> Any:
        """The writing stages (:class:`~vertexflow.transforms.Stages`)."""
        from ..filters import parse_size
        from ..retry import RetryPolicy
        from ..transforms import Stages

        s = self.stages
        return Stages.from_options(
            hashes=s.hash_algorithms, compress=s.compress, stages=s.stages,
            chunk_size=parse_size(s.chunk_size) if s.chunk_size else None, force_compress=s.compress_force,
            hash_threads=s.hash_threads, compress_threads=s.compress_threads,
            retry=RetryPolicy(attempts=self.retries))

    def source_stages(self) -> Any:
        """The reading stages (``--decompress``, ``--reassemble``)."""
        from ..retry import RetryPolicy
        from ..transforms import Stages

        s = self.stages
        return Stages(decompress=s.decompress, reassemble=s.reassemble, hash_threads=s.hash_threads,
                      compress_threads=s.compress_threads, retry=RetryPolicy(attempts=self.retries))

    def replay(self) -> dict[str, Any]:
        """How the run went, as the journal kept it before specs (older readers of ``jobs show``)."""
        out: dict[str, Any] = {n: v for n, v in (("transfers", self.transfers), ("bwlimit", self.bwlimit),
                                                 ("bwlimit_up", self.bwlimit_up),
                                                 ("bwlimit_down", self.bwlimit_down),
                                                 ("hash_threads", self.stages.hash_threads),
                                                 ("compress_threads", self.stages.compress_threads)) if v}
        if self.retries != DEFAULT_RETRIES:
            out["retries"] = self.retries
        if not self.verify:
            out["no_verify"] = True
        if not self.adaptive:
            out["adaptive"] = False
        out.update(self.metadata_identity())
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferSpec:
    """One copy or sync run: what to move, how to compare, how to run, where to keep the record."""

    mode: Literal["copy", "sync"] = "copy"
    #: locations as a user types them (``./dir``, ``s3://b/p``, ``yadisk:/p``, ``REMOTE:path``)
    source: str
    dest: str
    #: the config file naming the remotes (None: ``VERTEXFLOW_CONFIG`` or the default place)
    config_path: str | None = None
    delete: bool = False
    max_delete: int | None = None
    compare: CompareMode = "size_mtime"
    dry_run: bool = False
    #: None: in key order, streamed while listing; else "size,desc", "size,asc", "mtime,asc", "mtime,desc"
    order_by: str | None = None
    filter: Filter = NO_FILTER
    settings: TransferSettings = field(default_factory=TransferSettings)
    #: the journal database (None: ``VERTEXFLOW_JOURNAL`` or the default place)
    journal: str | None = None
    #: keep no record: a throw-away journal, no resume, no job id
    no_journal: bool = False
    #: ``--report``: a JSON line per object written here as the job runs (:mod:`vertexflow.ops.report`)
    report: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("copy", "sync"):
            raise ConfigError(f"mode: {self.mode!r}: use copy or sync")
        if self.compare not in ("size_mtime", "checksum", "size_only"):
            raise ConfigError(f"compare: {self.compare!r}: use size_mtime, checksum or size_only")
        if self.delete and self.mode != "sync":
            raise ConfigError("delete: only a sync deletes")

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON): what a Dask shard is sent and what the journal keeps."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["filter"] = self.filter.describe()
        out["settings"] = asdict(self.settings)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TransferSpec:
        """The spec :meth:`to_dict` gave; raises ConfigError naming what does not fit."""
        data = dict(data)
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(f"job spec: unknown {', '.join(unknown)}")
        settings = dict(data.pop("settings", None) or {})
        filt = Filter.from_dict(data.pop("filter", None) or {})
        try:
            stages = StageSpec(**(settings.pop("stages", None) or {}))
            return cls(**data, filter=filt, settings=TransferSettings(**settings, stages=stages))
        except TypeError as exc:
            raise ConfigError(f"job spec: {exc}") from None



def spec_of_job(kind: str, src: str, dst: str, options: Mapping[str, Any]) -> TransferSpec:
    """The spec of a copy or sync job the journal recorded (``jobs resume``).

    Jobs keep their spec (``options["replay"]["spec"]``); a job recorded
    before specs existed is read from the options it kept instead, which give
    the same run.
    """
    replay = dict(options.get("replay") or {})
    if "spec" in replay:
        return TransferSpec.from_dict(replay["spec"])
    stages = {n: v for n, v in (options.get("stages") or {}).items() if n in StageSpec.IDENTITY}
    stages.update({n: replay[n] for n in ("hash_threads", "compress_threads") if replay.get(n)})
    settings = TransferSettings(transfers=replay.get("transfers"), retries=replay.get("retries", DEFAULT_RETRIES),
                                verify=not replay.get("no_verify", False), stages=StageSpec(**stages),
                                bwlimit=replay.get("bwlimit"), bwlimit_up=replay.get("bwlimit_up"),
                                bwlimit_down=replay.get("bwlimit_down"), adaptive=replay.get("adaptive", True))
    return TransferSpec(mode=kind, source=src, dest=dst, delete=bool(options.get("delete")),  # type: ignore[arg-type]
                        compare=options.get("compare", "size_mtime"), order_by=options.get("order_by"),
                        filter=Filter.from_dict(options.get("filter") or {}), settings=settings)
