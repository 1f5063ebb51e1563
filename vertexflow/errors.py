"""The exception tree of vertexflow: every exception class it defines is here.

Every error vertexflow raises on purpose derives from :class:`VertexflowError`.
Backends translate SDK and HTTP errors into these classes through a table
(never by matching message text) and raise ``from`` the original, so callers
decide what to do from the class alone::

    VertexflowError
    ├── ConfigError            bad config file, bad URL, unknown remote (exit 2)
    ├── BackendError           anything a storage backend reports
    │   ├── NotFound           the object, bucket or path does not exist
    │   ├── AuthError          credentials rejected (fatal)
    │   ├── AccessDenied       this one object or path may not be read or written
    │   │   └── WriteDenied    a write refused: before any object is written, the job stops (read-only keys)
    │   ├── InvalidKey         a key that this backend cannot store safely
    │   ├── Conflict           the backend refuses because of the current state
    │   ├── ObjectTooLarge     over the backend's per-object limit
    │   ├── InsufficientStorage  disk full or quota exceeded
    │   ├── ReadOnly           the destination refuses writes
    │   ├── IntegrityError     the bytes stored differ from the bytes sent
    │   │   └── CorruptData    a stored object fails its own check (a chunk part, a compressed frame)
    │   ├── SourceChanged      the source object changed while it was read
    │   ├── CantCopy           this route cannot copy this object: send it streamed instead
    │   ├── InvalidTags        an object's tags are over S3's limits (10 tags, 128/256 characters)
    │   ├── SettingRefused     the destination refuses a setting every object is written with (fatal)
    │   └── TransientError     worth retrying: 429/503/5xx, timeouts, resets
    │       ├── Throttled      the server asked us to slow down
    │       ├── ConnectionFailed  the endpoint could not be reached
    │       └── WriteFenced    a live migration's write fence held a company's write too long
    ├── JobAborted             a fatal error stopped the whole job
    ├── JobBusy                the journal is locked, or the same job runs in another process (exit 2)
    ├── ClusterError           --cluster: no scheduler, no Dask, or a shard failed on every try
    ├── BackupError            a backup that cannot be read, checked or restored
    │   ├── BadMetadata        metadata.json / SHA256SUMS malformed or disagreeing (names the field)
    │   ├── UnsafeArchive      an archive member that would escape the restore target
    │   ├── CorruptArchive     the decompressed stream is not a well-formed tar archive
    │   └── PartNotReplayable  a destination asked for a streamed part's bytes a second time
    └── MigrationFailed        a company migration stopped (and was rolled back)

Signals between modules, not errors of vertexflow: the module that calls the
code raising one catches it, and acts on it (copies the batch in threads) or
translates it into the tree above (a corrupt stream into :class:`CorruptData`
or :class:`CorruptArchive`, an unreadable manifest into :class:`CorruptData`),
so no caller of vertexflow sees one::

    Exception
    ├── CorruptInput           compressed bytes that do not decode (bad header, checksum, truncation)
    ├── ProcessesUnavailable   the worker processes cannot take a batch: copy it in threads
    ├── SourceDiffers          a resumed upload's recorded part hashes differently now: start the upload afresh
    └── ValueError
        └── ManifestError      a chunk manifest that cannot be read

Two attributes steer the engine:

* ``retryable``: the per-object retry loop tries again (with backoff) only
  when this is true.
* ``fatal``: the job stops instead of moving on to the next object, because
  every other object would fail the same way (bad credentials, a missing
  bucket, a full disk).

``reason`` is a short stable word used to count failures in summaries.
Messages never contain secrets: backends build them from the key, the
backend's description and the server's error code.
"""

from __future__ import annotations


class VertexflowError(Exception):
    """Base of every error vertexflow raises on purpose."""

    reason = "error"
    retryable = False
    fatal = False


class ConfigError(VertexflowError):
    """A malformed config file, URL or option; the message names what and where."""

    reason = "config"
    fatal = True


class BackendError(VertexflowError):
    """An error reported by (or about) a storage backend.

    ``backend`` describes the backend (never with credentials); ``key`` is the
    object key the error concerns, when there is one.
    """

    def __init__(self, message: str, *, backend: str | None = None, key: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.backend = backend
        self.key = key

    def __str__(self) -> str:
        where = []
        if self.backend:
            where.append(self.backend)
        if self.key:
            where.append(f"key {self.key!r}")
        return f"{self.message} ({', '.join(where)})" if where else self.message


class NotFound(BackendError):
    reason = "not_found"


class AuthError(BackendError):
    reason = "auth"
    fatal = True


class AccessDenied(BackendError):
    reason = "access_denied"


class WriteDenied(AccessDenied):
    """The store refused to write an object (S3 AccessDenied to a PutObject, an upload part, a copy).

    One object among many written is a per-object failure; refused before any
    object of the job was written, it stops the job: the credentials (or the
    bucket policy) allow no writes, and every other object would fail the same way.
    """

    reason = "write_denied"


class InvalidKey(BackendError):
    reason = "invalid_key"


class Conflict(BackendError):
    reason = "conflict"


class ObjectTooLarge(BackendError):
    reason = "too_large"


class InsufficientStorage(BackendError):
    reason = "no_space"
    fatal = True


class ReadOnly(BackendError):
    reason = "read_only"
    fatal = True


class IntegrityError(BackendError):
    """What the destination holds (or reports) differs from what was sent.

    Retryable: a corrupted transfer usually succeeds on the next attempt.
    """

    reason = "integrity"
    retryable = True


class CorruptData(IntegrityError):
    """What is stored fails its own check (a chunk part's SHA-256, a compressed frame's checksum).

    Not retryable: reading the same stored bytes again gives the same answer.
    """

    reason = "corrupt"
    retryable = False


class SourceChanged(BackendError):
    """The source changed while being read; the torn copy was discarded."""

    reason = "source_changed"
    retryable = True


class TransientError(BackendError):
    """A failure that may pass: 5xx answers, timeouts, connection resets.

    ``retry_after`` carries the server's Retry-After hint in seconds, if any.
    """

    reason = "transient"
    retryable = True

    def __init__(self, message: str, *, backend: str | None = None, key: str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message, backend=backend, key=key)
        self.retry_after = retry_after


class Throttled(TransientError):
    reason = "throttled"


class ConnectionFailed(TransientError):
    reason = "connection"


class WriteFenced(TransientError):
    """A write waited longer than allowed for a live migration's write fence to lift."""


class JobAborted(VertexflowError):
    """A fatal error stopped the job; ``cause`` is the error that did it."""

    reason = "aborted"
    fatal = True


class JobBusy(VertexflowError):
    """Another process holds what this run needs: the journal's lock, or the same job running (exit 2)."""

    reason = "busy"
    fatal = True


class ClusterError(VertexflowError):
    """The Dask cluster of ``--cluster`` could not be used, or a shard failed on every try (exit 2)."""

    reason = "cluster"
    fatal = True


class BackupError(VertexflowError):
    """A backup is damaged, incomplete or unusable; the message names the backup and the part."""

    reason = "backup"
    fatal = True


class BadMetadata(BackupError):
    """A backup's metadata.json or SHA256SUMS is malformed, or the two disagree (possibly tampered)."""

    reason = "bad_metadata"


class UnsafeArchive(BackupError):
    """An archive member would land outside the restore target (absolute path, "..",
    a link, a device file or fifo); nothing was written."""

    reason = "unsafe_archive"


class CorruptArchive(BackupError):
    """The decompressed stream is not a well-formed tar archive (bad header, truncated)."""

    reason = "corrupt_archive"


class PartNotReplayable(BackupError):
    """A destination asked for a part's bytes a second time; they were streamed once and not kept."""


class MigrationFailed(VertexflowError):
    """A company migration stopped; the company stays on (or went back to) its previous backend.

    ``migration_id`` is the record in the platform database; the message says why.
    """

    reason = "migration"
    fatal = True

    def __init__(self, message: str, *, migration_id: int | None = None) -> None:
        super().__init__(message)
        self.migration_id = migration_id


# -- signals between modules (not VertexflowError: none reaches a caller) ------------------


class CorruptInput(Exception):
    """The compressed bytes do not decode (bad header, checksum, truncation)."""


class SourceDiffers(Exception):
    """A part an interrupted upload recorded hashes differently now: that upload was aborted; start afresh.

    Raised and caught inside the S3 backend (the put starts again from byte 0 with a new upload).
    """


class ProcessesUnavailable(Exception):
    """The worker processes could not take this batch; copy it in threads.

    ``pids``: the workers this pool has had; a killed one may have left
    temporary files (named with its pid) where the batch was going.
    """

    def __init__(self, message: str, pids: frozenset[int] = frozenset()) -> None:
        super().__init__(message)
        self.pids = pids


class ManifestError(ValueError):
    """A chunk manifest that cannot be read (not JSON, wrong format or version, missing fields)."""


def retryable_reasons() -> frozenset[str]:
    """The ``reason`` of every error class another attempt may get past (``retryable``): what a failure
    recorded by its reason alone (a job's per-object failures) says about trying again."""
    found: set[str] = set()
    pending: list[type[VertexflowError]] = [VertexflowError]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.retryable:
            found.add(cls.reason)
    return frozenset(found)


def first_error(exc: BaseException) -> BaseException:
    """The error to report out of a (possibly nested) exception group.

    Task groups wrap errors in groups; the report wants the first
    :class:`VertexflowError` inside, else the first error of any kind.
    """
    flat: list[BaseException] = []

    def walk(e: BaseException) -> None:
        if isinstance(e, BaseExceptionGroup):
            for inner in e.exceptions:
                walk(inner)
        else:
            flat.append(e)

    walk(exc)
    return next((e for e in flat if isinstance(e, VertexflowError)), flat[0])


class CantCopy(BackendError):
    """A copy route (a server-side copy) cannot serve this object; the engine streams it instead.

    Raised by a backend's ``server_copy`` for an object the server declines to
    copy itself (it does not implement the copy, or not for this object);
    never seen by a caller of the engine, which falls back to the streamed route.
    """

    reason = "cant_copy"


class InvalidTags(BackendError):
    """An object's tags that S3 would not keep: more than 10, a key over 128 characters or a value
    over 256, characters S3 refuses (:func:`vertexflow.model.tags_problem`). Checked before the
    object is written, so nothing of it is; another store may have let its source keep them."""

    reason = "invalid_tags"


class SettingRefused(BackendError):
    """The destination refuses a setting the job gives every object it writes: a storage class
    (S3 InvalidStorageClass), encryption (a KMS key it cannot use), a canned ACL (a bucket that
    takes no ACLs). Every other object would be refused the same way: the job stops (exit 2)."""

    reason = "setting_refused"
    fatal = True
