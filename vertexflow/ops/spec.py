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
from email.utils import parsedate_to_datetime
from typing import Any, Literal

from ..errors import ConfigError
from ..filters import NO_FILTER, Filter, glob_to_regex
from ..model import MTIME_METADATA, STANDARD_HEADERS, Features, own_metadata, parse_mtime_text, tags_problem

#: attempts per object before it is reported as failed
DEFAULT_RETRIES = 5
#: objects in flight: 8 keep a 2-core machine's disks and both cores busy between local
#: directories; a remote store answers each request later, so more wait at once
LOCAL_TRANSFERS, REMOTE_TRANSFERS = 8, 16

CompareMode = Literal["size_mtime", "checksum", "size_only"]
#: a user metadata or header name S3 can carry (``x-amz-meta-NAME``)
_META_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
#: what describes the bytes as headers rather than user metadata (``--metadata-set``, ``--metadata-exclude``)
DESCRIPTION_HEADERS = ("content-type", *STANDARD_HEADERS)
#: header names ``--metadata-set`` refuses: they are not a description of the bytes but the HTTP
#: exchange's own or what the store computes (the S3 ``x-amz-*`` and ``if-*`` headers too, below);
#: sent as user metadata instead they would only mislead
_NOT_SETTABLE = frozenset({
    "accept-ranges", "age", "authorization", "connection", "content-length", "content-md5", "content-range",
    "cookie", "date", "etag", "expect", "host", "keep-alive", "last-modified", "location", "proxy-authorization",
    "range", "server", "set-cookie", "te", "trailer", "transfer-encoding", "upgrade", "via",
})
#: S3 keeps at most 2 KiB of user metadata per object (names and values)
_USER_METADATA_LIMIT = 2048
#: a media type: ``type/subtype`` and optional parameters (``text/plain; charset=utf-8``)
_MEDIA_TYPE = re.compile(r"^[A-Za-z0-9][\w.+-]*/[A-Za-z0-9][\w.+-]*(\s*;\s*[\w.+-]+=[^;]+)*$")
#: the storage classes AWS documents for objects written (PutObject, CreateMultipartUpload,
#: CopyObject); SeaweedFS takes any name in CreateMultipartUpload and CopyObject and keeps it,
#: so a name is checked here, before anything is written
STORAGE_CLASSES = ("STANDARD", "REDUCED_REDUNDANCY", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING",
                   "GLACIER", "DEEP_ARCHIVE", "OUTPOSTS", "GLACIER_IR", "SNOW", "EXPRESS_ONEZONE")
#: ``--sse``: S3-managed keys (SSE-S3) or KMS keys (SSE-KMS)
SSE_ALGORITHMS = ("AES256", "aws:kms")
#: the canned ACLs S3 documents for objects
CANNED_ACLS = ("private", "public-read", "public-read-write", "authenticated-read", "aws-exec-read",
               "bucket-owner-read", "bucket-owner-full-control")
#: the write settings by name, as :attr:`Features.write_settings` names those a backend takes
WRITE_SETTINGS = ("storage_class", "sse", "sse_kms_key_id", "acl", "tags", "content_types", "metadata_exclude")
#: ``--cutoff-mode``, as rclone's: what a job that reaches ``--max-transfer`` or ``--max-duration`` does
#: with its transfers (hard: aborts those in flight; soft: lets them finish; cautious: starts none
#: that would take it over ``--max-transfer``)
CUTOFF_MODES = ("hard", "soft", "cautious")
#: ``--links`` / ``--copy-links``: what a job does with a symbolic link of a local source
#: (skip: leave it out with a warning; store: an object ``NAME.rclonelink`` holding the link's target,
#: as rclone stores one; follow: copy what it points to)
LINK_MODES = ("skip", "store", "follow")
#: ``--timeout`` / ``--contimeout`` as rclone takes them (``30s``, ``5m``, ``1m30s``)
_DURATION_EXAMPLE = "a duration with a unit, e.g. 30s, 5m or 1m30s"


def _pairs(option: str, entries: tuple[str, ...], example: str) -> list[tuple[str, str]]:
    """``NAME=VALUE`` entries split at their first ``=``; ConfigError naming one without it."""
    out = []
    for entry in entries:
        name, eq, value = entry.partition("=")
        if not eq or not name.strip():
            raise ConfigError(f"{option} {entry!r}: expected {example}")
        out.append((name.strip(), value))
    return out


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
    #: names of headers or user metadata not carried (``--metadata-exclude``, repeatable; ``*`` globs)
    metadata_exclude: tuple[str, ...] = ()
    #: ``PATTERN=TYPE``: the Content-Type of the objects whose key matches the glob, the first
    #: that matches (``--content-type``, repeatable), over the type named from the file name
    content_types: tuple[str, ...] = ()
    #: what a destination that has them sets on every object written (S3): they depend on the
    #: destination's account, so none is copied from the source. None: the store's default.
    #: ``--storage-class`` (one of STORAGE_CLASSES), ``--sse`` (SSE_ALGORITHMS) and its KMS key
    #: (``--sse-kms-key-id``; None: the account's default key), ``--acl`` (a canned ACL)
    storage_class: str | None = None
    sse: str | None = None
    sse_kms_key_id: str | None = None
    acl: str | None = None
    #: ``KEY=VALUE`` tags set on every object written, over those it carries (``--tag``, repeatable)
    tags: tuple[str, ...] = ()
    #: stop the run once this many bytes have moved (``--max-transfer``, a size such as ``10G``) or
    #: this long after it started (``--max-duration``, such as ``1h30m``); None: no limit. A run
    #: stopped so is unfinished: the same command again continues it.
    max_transfer: str | None = None
    max_duration: str | None = None
    #: what reaching one of those limits does to the transfers (one of CUTOFF_MODES); hard is rclone's default
    cutoff_mode: str = "hard"
    #: a network store's request that sends no byte for this long fails (``--timeout``, rclone's IO idle
    #: timeout) and one that cannot connect within ``contimeout`` (``--contimeout``), as durations such as
    #: ``30s``; None: each backend's own (S3: 60 s idle, 5 s to connect; Yandex.Disk: its request_timeout)
    timeout: str | None = None
    contimeout: str | None = None

    def __post_init__(self) -> None:
        for name in ("metadata_set", "metadata_exclude", "content_types", "tags"):
            object.__setattr__(self, name, tuple(getattr(self, name)))  # a JSON list, read back
        self.limits()
        self.timeouts()
        self.metadata_overrides()
        self.excluded_metadata()
        self.content_type_rules()
        self.tag_overrides()
        if self.storage_class is not None and self.storage_class not in STORAGE_CLASSES:
            raise ConfigError(f"--storage-class {self.storage_class!r}: not a storage class S3 documents "
                              f"({', '.join(STORAGE_CLASSES)})")
        if self.sse is not None and self.sse not in SSE_ALGORITHMS:
            raise ConfigError(f"--sse {self.sse!r}: use AES256 (keys the store manages) or aws:kms")
        if self.sse_kms_key_id is not None and (self.sse != "aws:kms" or not self.sse_kms_key_id.strip()):
            raise ConfigError("--sse-kms-key-id: a KMS key is for --sse aws:kms, and is not empty")
        if self.acl is not None and self.acl not in CANNED_ACLS:
            raise ConfigError(f"--acl {self.acl!r}: not a canned ACL S3 documents ({', '.join(CANNED_ACLS)})")

    def limits(self) -> tuple[int | None, float | None]:
        """(``max_transfer`` in bytes, ``max_duration`` in seconds); raises ConfigError naming a bad one."""
        from ..filters import parse_age, parse_size

        size = seconds = None
        if self.max_transfer is not None:
            try:
                size = parse_size(str(self.max_transfer))
            except ConfigError as exc:
                raise ConfigError(f"--max-transfer: {exc}") from None
            if size <= 0:
                raise ConfigError(f"--max-transfer {self.max_transfer!r}: give a size above 0 (e.g. 10G)")
        if self.max_duration is not None:
            try:
                seconds = parse_age(str(self.max_duration)).total_seconds()
            except ConfigError as exc:
                raise ConfigError(f"--max-duration: {exc}") from None
            if seconds <= 0:
                raise ConfigError(f"--max-duration {self.max_duration!r}: give a time above 0 (e.g. 1h30m)")
        if self.cutoff_mode not in CUTOFF_MODES:
            raise ConfigError(f"--cutoff-mode {self.cutoff_mode!r}: use {', '.join(CUTOFF_MODES)}")
        return size, seconds

    def timeouts(self) -> tuple[float | None, float | None]:
        """(``timeout``, ``contimeout``) in seconds, None where not given; raises ConfigError naming a bad one."""
        from ..filters import parse_age

        out: list[float | None] = []
        for option, value in (("--timeout", self.timeout), ("--contimeout", self.contimeout)):
            if value is None:
                out.append(None)
                continue
            try:
                seconds = parse_age(str(value)).total_seconds()
            except ConfigError:
                raise ConfigError(f"{option} {value!r}: not {_DURATION_EXAMPLE}") from None
            if seconds <= 0:
                raise ConfigError(f"{option} {value!r}: give a time above 0 ({_DURATION_EXAMPLE})")
            out.append(seconds)
        return out[0], out[1]

    def network_options(self, features: Features) -> dict[str, float]:
        """The keyword arguments that carry ``--timeout`` / ``--contimeout`` to a backend with ``features``:
        those of ``request_timeout`` (the idle timeout) and ``connect_timeout`` it declares it takes
        (``features.timeouts``: a store reached over the network)."""
        idle, connect = self.timeouts()
        given = {"request_timeout": idle, "connect_timeout": connect}
        return {name: value for name, value in given.items() if value is not None and name in features.timeouts}

    def metadata_overrides(self) -> dict[str, str]:
        """``metadata_set`` as a mapping of lower-case names; raises ConfigError naming a bad entry."""
        out: dict[str, str] = {}
        for entry in self.metadata_set:
            name, eq, value = entry.partition("=")
            name = name.strip().lower()
            if not eq or not _META_NAME.match(name):
                raise ConfigError(f"--metadata-set {entry!r}: expected KEY=VALUE, KEY a name of letters, "
                                  "digits and '-' (e.g. cache-control=max-age=60 or owner=company-7)")
            _check_settable(entry, name, value)
            out[name] = value
        if sum(len(k) + len(v) for k, v in out.items() if k not in DESCRIPTION_HEADERS) > _USER_METADATA_LIMIT:
            raise ConfigError(f"--metadata-set: more than the {_USER_METADATA_LIMIT} bytes of user metadata "
                              "S3 keeps per object")
        return out

    def excluded_metadata(self) -> tuple[str, ...]:
        """``metadata_exclude``, lower case; raises ConfigError naming an entry that cannot be one."""
        out = []
        for entry in self.metadata_exclude:
            name = entry.strip().lower()
            if "=" in name:
                raise ConfigError(f"--metadata-exclude {entry!r}: give a name (or a glob such as 'x-*') of "
                                  "metadata not to carry; rclone's option of this name skips objects whose "
                                  "metadata matches KEY=VALUE, which this one does not do")
            if not re.fullmatch(r"[a-z0-9*?\[\]-]+", name):
                raise ConfigError(f"--metadata-exclude {entry!r}: a name is letters, digits and '-' "
                                  "(globs: * ? [...])")
            if name not in DESCRIPTION_HEADERS and own_metadata(name):
                raise ConfigError(f"--metadata-exclude {entry!r}: {name} is vertexflow's own metadata "
                                  "(digests, codec), which every copy keeps")
            out.append(name)
        return tuple(out)

    def content_type_rules(self) -> tuple[tuple[str, str], ...]:
        """``content_types`` as (glob, media type) pairs; raises ConfigError naming a bad entry."""
        rules = _pairs("--content-type", self.content_types, "PATTERN=TYPE, e.g. '*.fset3=application/octet-stream'")
        for pattern, media in rules:
            glob_to_regex(pattern)  # ConfigError for an unclosed [ or {
            if not _MEDIA_TYPE.match(media.strip()):
                raise ConfigError(f"--content-type {pattern}={media!r}: {media!r} is not a media type "
                                  "(type/subtype, e.g. model/gltf-binary)")
        return tuple((pattern, media.strip()) for pattern, media in rules)

    def tag_overrides(self) -> dict[str, str]:
        """``tags`` as a mapping; raises ConfigError naming what S3 would refuse (over 10 tags, long ones)."""
        out = dict(_pairs("--tag", self.tags, "KEY=VALUE, e.g. team=render"))
        problem = tags_problem(out)
        if problem is not None:
            raise ConfigError(f"--tag: {problem}")
        return out

    def write_values(self) -> dict[str, Any]:
        """The write settings given (WRITE_SETTINGS), parsed, by name: what a backend that takes them is given."""
        values: dict[str, Any] = {
            "storage_class": self.storage_class, "sse": self.sse, "sse_kms_key_id": self.sse_kms_key_id,
            "acl": self.acl, "tags": self.tag_overrides(), "content_types": self.content_type_rules(),
            "metadata_exclude": self.excluded_metadata()}
        return {name: value for name, value in values.items() if value}

    def backend_options(self, features: Features) -> dict[str, Any]:
        """The keyword arguments for a backend with ``features``: the metadata options and the write
        settings it takes, those given only ({}: none, the backend's defaults)."""
        out: dict[str, Any] = {}
        if features.object_metadata and (not self.metadata or self.metadata_set):
            out.update(metadata=self.metadata, metadata_set=self.metadata_overrides())
        out.update({n: v for n, v in self.write_values().items() if n in features.write_settings})
        return out

    def metadata_identity(self) -> dict[str, Any]:
        """The metadata and write options that change what is stored, those given only (a job's fingerprint
        holds them: a run with others is another job)."""
        out: dict[str, Any] = {}
        if not self.metadata:
            out["metadata"] = False
        if self.metadata_set:
            out["metadata_set"] = sorted(f"{k}={v}" for k, v in self.metadata_overrides().items())
        values = self.write_values()
        for name in ("storage_class", "sse", "sse_kms_key_id", "acl"):
            if name in values:
                out[name] = values[name]
        if "tags" in values:
            out["tags"] = sorted(f"{k}={v}" for k, v in values["tags"].items())
        if "content_types" in values:  # in order: the first pattern that matches a key decides
            out["content_types"] = [f"{p}={t}" for p, t in values["content_types"]]
        if "metadata_exclude" in values:
            out["metadata_exclude"] = sorted(set(values["metadata_exclude"]))
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
        out.update({n: v for n, v in (("max_transfer", self.max_transfer), ("max_duration", self.max_duration))
                    if v is not None})
        if self.cutoff_mode != "hard":
            out["cutoff_mode"] = self.cutoff_mode
        out.update({n: v for n, v in (("timeout", self.timeout), ("contimeout", self.contimeout)) if v is not None})
        out.update(self.metadata_identity())
        return out


def _check_settable(entry: str, name: str, value: str) -> None:
    """Raise ConfigError when ``--metadata-set NAME=VALUE`` cannot be set as asked."""
    where = f"--metadata-set {entry!r}"
    if name.startswith("x-amz-meta-"):
        raise ConfigError(f"{where}: name user metadata without its x-amz-meta- prefix "
                          f"({name[len('x-amz-meta-'):]}={value})")
    if name.startswith(("x-amz-", "if-")) or name in _NOT_SETTABLE:
        raise ConfigError(f"{where}: {name} is not a header that describes the bytes, and S3 computes or "
                          "refuses it; --storage-class, --sse, --acl and --tag set what S3 keeps besides")
    if name not in DESCRIPTION_HEADERS and own_metadata(name):
        raise ConfigError(f"{where}: {name} is vertexflow's own metadata (digests, codec)")
    if not value.isascii() or not value.isprintable():
        raise ConfigError(f"{where}: the value must be printable ASCII (S3 keeps metadata in HTTP headers)")
    if name == "content-type" and not _MEDIA_TYPE.match(value.strip()):
        raise ConfigError(f"{where}: {value!r} is not a media type (type/subtype, e.g. video/mp4)")
    if name == "expires":
        try:
            parsedate_to_datetime(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: Expires is an HTTP date (Wed, 01 Jan 2031 00:00:00 GMT)") from None
    if name == MTIME_METADATA and parse_mtime_text(value) is None:
        raise ConfigError(f"{where}: mtime is Unix seconds with an optional fraction (1620284889.123456789)")


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
    #: which existing destination objects are left as they are (rclone's options of these names):
    #: ``ignore_existing`` every one; ``update`` those newer than their source; ``immutable`` none
    #: may change: one whose source differs is a failure, never overwritten
    ignore_existing: bool = False
    update: bool = False
    immutable: bool = False
    #: sync: a location (``--backup-dir``) that every destination object the sync would overwrite or
    #: delete is copied to first, under its key; it must overlap neither the source nor the destination
    backup_dir: str | None = None
    #: make the source's empty folders at the destination (``--create-empty-src-dirs``): a source and
    #: destination with real folders (local disk, Yandex.Disk)
    create_empty_src_dirs: bool = False
    #: symbolic links of a local source (one of LINK_MODES; ``--links``: store, ``--copy-links``: follow)
    links: str = "skip"

    #: the options above that change what a run stores (a job's fingerprint holds those given)
    IDENTITY = ("ignore_existing", "update", "immutable", "backup_dir", "create_empty_src_dirs", "links")

    def __post_init__(self) -> None:
        if self.mode not in ("copy", "sync"):
            raise ConfigError(f"mode: {self.mode!r}: use copy or sync")
        if self.compare not in ("size_mtime", "checksum", "size_only"):
            raise ConfigError(f"compare: {self.compare!r}: use size_mtime, checksum or size_only")
        if self.delete and self.mode != "sync":
            raise ConfigError("delete: only a sync deletes")
        if self.links not in LINK_MODES:
            raise ConfigError(f"links: {self.links!r}: use {', '.join(LINK_MODES)}")
        if self.backup_dir is not None and self.mode != "sync":
            raise ConfigError("--backup-dir: only a sync overwrites and deletes what it keeps there; copy "
                              "with --immutable or --ignore-existing never overwrites")
        if self.backup_dir is not None and not self.backup_dir.strip():
            raise ConfigError("--backup-dir: empty location")
        if self.ignore_existing and self.immutable:
            raise ConfigError("--ignore-existing and --immutable: the first never looks at an existing object, "
                              "so the second has nothing to check; choose one")

    def identity(self) -> dict[str, Any]:
        """The options of :data:`IDENTITY` given (not at their default), for a job's fingerprint."""
        defaults = {f.name: f.default for f in fields(self) if f.name in self.IDENTITY}
        return {n: getattr(self, n) for n in self.IDENTITY if getattr(self, n) != defaults[n]}

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
