"""The daemon's config file (TOML): the service settings and the jobs it runs.

Example (``configs/daemon.toml`` holds a commented one; ``docs/daemon.md``
is the reference)::

    [daemon]
    listen = "127.0.0.1:8787"
    drain_timeout = "30s"

    [[jobs]]
    name = "photos"
    kind = "sync"
    source = "/srv/photos"
    dest = "s3://media/photos"
    interval = "15m"                   # or cron = "*/5 * * * *"
    windows = ["Mon-Fri 01:00-06:00"]  # optional: only run inside these
    continuous = true                  # local source: also sync on filesystem events
    delete = true
    max_delete = 100
    bwlimit = "08:00,512k 19:00,10M 23:00,off"

    [jobs.filters]
    exclude = ["*.tmp"]

A ``[remotes.NAME]`` table, as in the remotes config file, may sit in the
same file; without one the remotes come from the usual config file.

Every error is a :class:`~vertexflow.errors.ConfigError` naming the file and
the key, with jobs named by their ``name`` (``jobs.photos.interval: ...``).
Relative local paths are taken from the config file's directory, so the
daemon does the same thing whatever directory it is started from.
"""

from __future__ import annotations

import ipaddress
import os
import re
import ssl
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from ..config import BwLimit, Config, parse_config
from ..errors import ConfigError

#: The kinds of job the daemon knows; vertexflow.daemon.runners maps each to its adapter.
JOB_KINDS = ("sync", "backup", "migrate")
DEFAULT_PORT = 8787
#: API tokens shorter than this are refused: a bearer token must not be guessable (32 random characters)
MIN_TOKEN_LENGTH = 32

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(value: str | float) -> float:
    """``"30s"``, ``"5m"``, ``"1h30m"``, ``"2d"`` or a number of seconds -> seconds (> 0)."""
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 30s, 5m, 1h or 2d")  # noqa: TRY004 - pydantic reports ValueErrors
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = value.strip().lower().replace(" ", "")
        parts = _DURATION.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise ValueError(f"{value!r} is not a duration: use e.g. 30s, 5m, 1h or 2d")
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError("must be longer than zero")
    return seconds


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Filters(_Strict):
    """The same filters as the command line's (``--include`` ...)."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    min_size: str | None = None
    max_size: str | None = None
    min_age: str | None = None
    max_age: str | None = None
    prefix: str = ""
    ext: tuple[str, ...] = ()
    #: files of names and globs (``--files-from``, ``--include-from``, ``--exclude-from``), relative to the
    #: config file's directory; read afresh at every run, as the command line reads them at its start
    files_from: tuple[str, ...] = ()
    include_from: tuple[str, ...] = ()
    exclude_from: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _parse(self) -> Filters:
        try:
            self.build(read_files=False)  # every value must parse now, not at the first run (the files: once found)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return self

    def build(self, *, read_files: bool = True) -> Any:
        """A fresh :class:`~vertexflow.filters.Filter` (ages count from now, the files read now); ConfigError."""
        from ..filters import Filter, files_from, parse_age, parse_size, read_list_file

        include, exclude, files = list(self.include), list(self.exclude), None
        if read_files:
            include += [p for f in self.include_from for p in read_list_file(f, "filters.include_from")]
            exclude += [p for f in self.exclude_from for p in read_list_file(f, "filters.exclude_from")]
            files = files_from(self.files_from)
        return Filter(include=tuple(include), exclude=tuple(exclude), files=files,
                      min_size=parse_size(self.min_size) if self.min_size else None,
                      max_size=parse_size(self.max_size) if self.max_size else None,
                      min_age=parse_age(self.min_age) if self.min_age else None,
                      max_age=parse_age(self.max_age) if self.max_age else None,
                      prefix=self.prefix,
                      extensions=tuple(e.strip().lower().lstrip(".") for e in self.ext if e.strip()))


class DaemonSettings(_Strict):
    """``[daemon]``: where the service listens, who may use it and how it stops."""

    #: HOST:PORT of the HTTP API and dashboard; loopback unless a token is set
    listen: str = f"127.0.0.1:{DEFAULT_PORT}"
    token: SecretStr | None = None
    token_env: str | None = Field(None, description="variable holding the API token")
    #: a second token that reads (GET API, /metrics, /events) but cannot control jobs
    read_token: SecretStr | None = None
    read_token_env: str | None = Field(None, description="variable holding the read-only token")
    #: HTTPS: the certificate chain and its private key (PEM); the key may sit in the cert's file
    tls_cert: str | None = None
    tls_key: str | None = None
    #: how long SIGTERM/SIGINT wait for transfers in flight before aborting them
    drain_timeout: float = 30.0
    journal: str | None = Field(None, description="journal database [the default journal]")
    #: first and largest delay before a job that failed is tried again (doubling in between)
    backoff_initial: float = 5.0
    backoff_max: float = 600.0
    #: results kept per job and errors kept in the daemon's ring buffer
    history: int = Field(20, ge=1, le=1000)
    errors_kept: int = Field(200, ge=1, le=10000)

    _durations = field_validator("drain_timeout", "backoff_initial", "backoff_max", mode="before")(
        lambda v: parse_duration(v))

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"{v!r}: use HOST:PORT, e.g. 127.0.0.1:{DEFAULT_PORT}")
        return v

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def resolved_token(self, environ: Mapping[str, str]) -> str | None:
        """The control token (ConfigError if its variable is unset or it is too short)."""
        return _secret(self.token, self.token_env, "token", environ)

    def resolved_read_token(self, environ: Mapping[str, str]) -> str | None:
        """The read-only token, checked as :meth:`resolved_token` and against it."""
        read = _secret(self.read_token, self.read_token_env, "read_token", environ)
        if read is None:
            return None
        token = self.resolved_token(environ)
        if token is None:
            raise ConfigError("daemon.read_token: needs daemon.token (or token_env) as well: "
                              "without a control token the API is open to anyone on loopback")
        if read == token:
            raise ConfigError("daemon.read_token: the same as daemon.token: give the read-only token "
                              "a value of its own")
        return read

    @property
    def tls(self) -> tuple[str, str] | None:
        """(certificate, key) files for HTTPS, or None."""
        if self.tls_cert is None:
            return None
        return self.tls_cert, self.tls_key or self.tls_cert

    def ssl_context(self) -> ssl.SSLContext | None:
        """The server's TLS context from ``tls_cert``/``tls_key`` (ConfigError naming the key and file)."""
        if self.tls_key is not None and self.tls_cert is None:
            raise ConfigError("daemon.tls_key: given without daemon.tls_cert")
        if self.tls is None:
            return None
        return server_ssl_context(*self.tls, cert_name="daemon.tls_cert", key_name="daemon.tls_key")


def _secret(value: SecretStr | None, env: str | None, key: str, environ: Mapping[str, str]) -> str | None:
    if value is not None and env is not None:
        raise ConfigError(f"daemon.{key}: give {key} or {key}_env, not both")
    if value is not None:
        secret, where = value.get_secret_value(), f"daemon.{key}"
    elif env is not None:
        if not environ.get(env):
            raise ConfigError(f"daemon.{key}_env: environment variable {env} is not set")
        secret, where = environ[env], f"daemon.{key}_env: the token in {env}"
    else:
        return None
    if len(secret) < MIN_TOKEN_LENGTH:
        raise ConfigError(f"{where} has {len(secret)} characters, fewer than the {MIN_TOKEN_LENGTH} required: "
                          "use a long random one, e.g. the output of `openssl rand -hex 32`")
    return secret


def server_ssl_context(cert: str, key: str, *, cert_name: str, key_name: str) -> ssl.SSLContext:
    """A TLS server context (TLS 1.2 or later) for ``cert`` and ``key``.

    Raises ConfigError naming the setting (``cert_name``/``key_name``: a
    config key or a command-line option) and the file: missing, unreadable,
    not PEM, an encrypted key (the daemon cannot ask for a passphrase), a key
    that is not the certificate's.
    """
    for name, path in ((cert_name, cert), (key_name, key)):
        try:
            with open(path, "rb"):
                pass
        except FileNotFoundError:
            raise ConfigError(f"{name}: {path} does not exist") from None
        except OSError as exc:
            raise ConfigError(f"{name}: cannot read {path}: {exc.strerror}") from None
    try:  # the certificate on its own first, so an error names the right file
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=cert)
    except ssl.SSLError:
        raise ConfigError(f"{cert_name}: {cert} holds no PEM certificate") from None

    def no_passphrase() -> str:
        raise ConfigError(f"{key_name}: {key} is encrypted: give the daemon an unencrypted key "
                          "(readable by its user only)")

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key, password=no_passphrase)
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise ConfigError(f"{key_name}: {key} is not the private key of the certificate in {cert}") from None
        raise ConfigError(f"{key_name}: {key} holds no PEM private key") from None
    return context


class JobSpec(_Strict):
    """``[[jobs]]``: one job, its schedule and its options."""

    name: str
    kind: Literal["sync", "backup", "migrate", "smoke"]
    source: str
    dest: str
    #: every INTERVAL (first run at start, or an interval after the last run the journal remembers),
    #: or on a cron expression; neither: only on demand/events
    interval: float | None = None
    cron: str | None = None
    #: "[DAYS ]HH:MM-HH:MM", e.g. "Mon-Fri 01:00-06:00", "Sat,Sun 00:00-24:00", "22:00-02:00"
    windows: tuple[str, ...] = ()
    #: a local source is also synced within seconds of a change (filesystem events)
    continuous: bool = False
    #: continuous jobs: a full run at least this often, for whatever events missed
    reconcile_interval: float = 600.0
    #: continuous jobs: wait this long after an event for more before running
    debounce: float = 1.0
    delete: bool = False
    max_delete: int | None = Field(None, ge=0)
    bwlimit: BwLimit = None
    transfers: int | None = Field(None, ge=1, le=1024)
    retries: int = Field(5, ge=1, le=100)
    compare: Literal["size_mtime", "checksum", "size_only"] = "size_mtime"
    verify: bool = True
    filters: Filters = Field(default_factory=Filters)
    # the routine options of copy and sync, under their command-line names with "_" for "-" (sync jobs;
    # docs/options.md): each becomes the field of the job spec of that name
    ignore_existing: bool = False
    update: bool = False
    immutable: bool = False
    max_transfer: str | None = None
    max_duration: str | None = None
    cutoff_mode: Literal["hard", "soft", "cautious"] = "hard"
    backup_dir: str | None = None
    create_empty_src_dirs: bool = False
    links: bool = False
    copy_links: bool = False
    timeout: str | None = None
    contimeout: str | None = None
    #: alert (error log, red on the dashboard) when no run has succeeded for this long;
    #: default: three times the interval (or the cron period, or the reconcile interval)
    expected_interval: float | None = None
    #: kind-specific settings (backup retention, migrate options), checked by that kind's runner
    options: dict[str, Any] = Field(default_factory=dict)

    _durations = field_validator("interval", "reconcile_interval", "debounce", "expected_interval",
                                 mode="before")(lambda v: None if v is None else parse_duration(v))

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v or not all(c.isalnum() or c in "-_." for c in v):
            raise ValueError(f"{v!r}: use letters, digits, '-', '_' or '.'")
        return v

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        if v is not None:
            from .schedule import check_cron

            check_cron(v)
        return v

    @field_validator("windows")
    @classmethod
    def _windows(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        from .schedule import Windows

        Windows.parse(v)
        return v

    @field_validator("max_transfer", "max_duration", "timeout", "contimeout", mode="before")
    @classmethod
    def _text(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v  # max_transfer = 1000

    @model_validator(mode="after")
    def _schedule(self) -> JobSpec:
        if self.interval is not None and self.cron is not None:
            raise ValueError("give interval or cron, not both")
        if self.kind != "sync":
            given = [name for name in TRANSFER_KEYS if getattr(self, name) != JobSpec.model_fields[name].default]
            if given:
                raise ValueError(f"{', '.join(given)}: only sync jobs take {'it' if len(given) == 1 else 'them'}")
        else:
            try:
                self.transfer_spec(read_files=False)  # a bad value stops the daemon at load, not at a run
            except ConfigError as exc:
                raise ValueError(_as_keys(str(exc))) from None
        return self

    def transfer_spec(self, *, read_files: bool = True) -> Any:
        """The job spec (:class:`~vertexflow.ops.spec.TransferSpec`) of a job of kind sync: what the
        command line's ``sync`` builds from the same options. ConfigError naming a bad value."""
        from ..ops.spec import TransferSettings, TransferSpec

        if self.links and self.copy_links:
            raise ConfigError("links and copy_links: store links as links, or follow them; choose one")
        settings = TransferSettings(transfers=self.transfers, retries=self.retries, verify=self.verify,
                                    bwlimit=self.bwlimit, max_transfer=self.max_transfer,
                                    max_duration=self.max_duration, cutoff_mode=self.cutoff_mode,
                                    timeout=self.timeout, contimeout=self.contimeout)
        return TransferSpec(mode="sync", source=self.source, dest=self.dest, delete=self.delete,
                            max_delete=self.max_delete, compare=self.compare,
                            filter=self.filters.build(read_files=read_files), settings=settings,
                            ignore_existing=self.ignore_existing, update=self.update, immutable=self.immutable,
                            backup_dir=self.backup_dir, create_empty_src_dirs=self.create_empty_src_dirs,
                            links="store" if self.links else "follow" if self.copy_links else "skip")

    def expected(self) -> float | None:
        """Seconds without a success after which the job is overdue (None: never)."""
        if self.expected_interval is not None:
            return self.expected_interval
        if self.windows:
            return None  # a window may legitimately hold runs back for days: ask for it explicitly
        if self.interval is not None:
            return 3 * self.interval
        if self.cron is not None:
            from .schedule import cron_period

            return 3 * cron_period(self.cron)
        if self.continuous:
            return 3 * self.reconcile_interval
        return None


#: the keys of a ``[[jobs]]`` table that only a sync job takes (the job spec's routine options)
TRANSFER_KEYS = ("ignore_existing", "update", "immutable", "max_transfer", "max_duration", "cutoff_mode",
                 "backup_dir", "create_empty_src_dirs", "links", "copy_links", "timeout", "contimeout")


class DaemonConfig(_Strict):
    daemon: DaemonSettings = Field(default_factory=DaemonSettings)
    jobs: tuple[JobSpec, ...] = ()
    remotes: dict[str, Any] = Field(default_factory=dict)
    source: str | None = Field(None, exclude=True)

    @field_validator("jobs")
    @classmethod
    def _unique(cls, jobs: tuple[JobSpec, ...]) -> tuple[JobSpec, ...]:
        seen: set[str] = set()
        for job in jobs:
            if job.name in seen:
                raise ValueError(f"two jobs are named {job.name!r}")
            seen.add(job.name)
        return jobs

    def job(self, name: str) -> JobSpec | None:
        return next((j for j in self.jobs if j.name == name), None)


def load_daemon_config(path: str | os.PathLike[str], environ: Mapping[str, str] = os.environ,
                       fallback_remotes: Callable[[], Config] | None = None) -> tuple[DaemonConfig, Config]:
    """Read and check the daemon config; returns it and the remotes it uses.

    ``fallback_remotes`` gives the remotes when the file has no ``[remotes]``
    (the usual remotes config file). Raises :class:`ConfigError` naming the
    file and the key. Checks that need
    more than the file (the token variable, each job's kind being available,
    locations parsing) are done here too, so a bad file never starts a daemon.
    """
    file = Path(path)
    try:
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"daemon config {file} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"daemon config {file}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"daemon config {file} is not valid TOML: {exc}") from exc
    try:
        config = DaemonConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"daemon config {file}: " + "; ".join(_describe(e, raw) for e in exc.errors())) from None
    base = file.resolve().parent
    jobs = tuple(_resolve_paths(j, base, file) for j in config.jobs)
    settings = config.daemon
    paths = {k: str(base / os.path.expanduser(v)) for k in ("journal", "tls_cert", "tls_key")
             if (v := getattr(settings, k)) is not None}
    settings = settings.model_copy(update=paths)
    config = config.model_copy(update={"jobs": jobs, "daemon": settings, "source": str(file)})
    remotes = (parse_config({"remotes": config.remotes}, source=str(file)) if config.remotes
               else fallback_remotes() if fallback_remotes is not None else Config())
    _check(config, remotes, environ)
    return config, remotes


def _check(config: DaemonConfig, remotes: Config, environ: Mapping[str, str]) -> None:
    from ..locations import parse_location
    from .runners import runner_class

    where = f"daemon config {config.source}"
    try:
        token = config.daemon.resolved_token(environ)
        config.daemon.resolved_read_token(environ)
        config.daemon.ssl_context()
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if not config.daemon.loopback and not token:
        raise ConfigError(f"{where}: daemon.listen: {config.daemon.listen} is not a loopback address: "
                          "set daemon.token or daemon.token_env so the API is not open to the network")
    for job in config.jobs:
        try:
            runner = runner_class(job.kind)
            runner.check(job)
            if not runner.locations:
                continue
            for key in ("source", "dest"):
                parse_location(getattr(job, key), remotes, environ)
            if job.kind == "sync":
                _check_transfer(job, remotes)
        except ConfigError as exc:
            raise ConfigError(f"{where}: jobs.{job.name}: {exc}") from None
        src = parse_location(job.source, remotes, environ)
        if job.continuous and src.kind != "local":
            raise ConfigError(f"{where}: jobs.{job.name}.continuous: only a local source can be watched")
        dst = parse_location(job.dest, remotes, environ)
        if job.continuous and dst.kind == "local" and \
                (str(dst.args[0]) + "/").startswith(str(src.args[0]).rstrip("/") + "/"):
            raise ConfigError(f"{where}: jobs.{job.name}.dest: inside the watched source: every copy "
                              "would trigger another run")


def _check_transfer(job: JobSpec, remotes: Config) -> None:
    """What a sync job's spec needs beyond its values: its filter files read, its ``backup_dir`` apart."""
    try:
        spec = job.transfer_spec()
        if spec.backup_dir is not None:
            from ..ops.keep import backup_location

            backup_location(spec, remotes)
    except ConfigError as exc:
        raise ConfigError(_as_keys(str(exc))) from None


def _as_keys(message: str) -> str:
    """A message of the job spec's, naming keys of a ``[[jobs]]`` table where it names options."""
    return re.sub(r"--([a-z][a-z-]*)", lambda m: m.group(1).replace("-", "_"), message)


def _resolve_paths(job: JobSpec, base: Path, file: Path) -> JobSpec:
    """The job with its relative local paths made absolute against the config file's directory, as its kind runs it."""
    from .runners import runner_class

    runner = runner_class(job.kind)
    if not runner.locations:  # source and dest name a company and a connection
        options = {k: _absolute(v, base) if k in PATH_OPTIONS and isinstance(v, str) else v
                   for k, v in job.options.items()}
        job = job.model_copy(update={"options": options})
    else:
        update: dict[str, Any] = {"source": _absolute(job.source, base), "dest": _absolute(job.dest, base)}
        if job.backup_dir is not None:
            update["backup_dir"] = _absolute(job.backup_dir, base)
        lists = {name: tuple(str(base / os.path.expanduser(f)) for f in getattr(job.filters, name))
                 for name in ("files_from", "include_from", "exclude_from") if getattr(job.filters, name)}
        if lists:
            update["filters"] = job.filters.model_copy(update=lists)
        job = job.model_copy(update=update)
    try:
        return runner.settle(job, base)
    except ConfigError as exc:
        raise ConfigError(f"daemon config {file}: jobs.{job.name}: {exc}") from None


#: options that hold local paths (migrate jobs: the platform's files)
PATH_OPTIONS = ("db", "storage_config")


def _absolute(spec: str, base: Path) -> str:
    """A relative local path made absolute against ``base``; other locations unchanged."""
    if "://" in spec or os.path.isabs(spec) or spec.startswith("~"):
        return os.path.expanduser(spec)
    head = spec.split("/", 1)[0]
    if ":" in head:  # NAME:path or yadisk:path
        return spec
    return str(base / spec)


def _describe(error: Mapping[str, Any], raw: Mapping[str, Any]) -> str:
    loc = [str(p) for p in error["loc"]]
    if len(loc) >= 2 and loc[0] == "jobs" and loc[1].isdigit():
        jobs = raw.get("jobs")
        i = int(loc[1])
        if isinstance(jobs, list) and i < len(jobs) and isinstance(jobs[i], dict) and jobs[i].get("name"):
            loc[1] = str(jobs[i]["name"])
        else:
            loc[1] = f"[{i}]"
    msg = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        msg = "unknown key"
    return f"{'.'.join(loc)}: {msg}"
