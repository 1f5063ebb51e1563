"""Many objects deleted in few requests: DeleteObjects, a thousand keys a request (``features.batch_deletes``).

Quiet mode: the answer names only the keys not deleted, each with its error
code, which :data:`.errors.ERROR_TABLE` maps to an exception of the key's own
(AccessDenied, a 503 of one key...); a key already absent (NoSuchKey) is what
was wanted. botocore gives the request the integrity header AWS requires
of DeleteObjects (Content-MD5, or an x-amz-checksum-* header in newer
versions), which SeaweedFS takes too. A store that does not implement DeleteObjects
(501 NotImplemented) raises NotImplementedError: the caller deletes one by one
(:mod:`vertexflow.ops.deletes`). Each request is retried as a whole on a
transient failure (deleting again what is gone is harmless).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import botocore.exceptions as bce

from ...errors import BackendError
from ..base import check_key
from .errors import ERROR_TABLE, error_code

if TYPE_CHECKING:
    from .backend import S3Backend

#: keys one DeleteObjects takes at most (S3's limit)
MAX_KEYS = 1000
#: per-key answers that mean the key is gone, as asked
GONE = ("NoSuchKey", "NoSuchVersion")
#: answers to the whole request that mean the store has no DeleteObjects
UNSUPPORTED = ("NotImplemented", "501", "MethodNotAllowed", "405")


def key_error(backend: S3Backend, key: str, code: str, message: str) -> BackendError:
    """The exception of one key DeleteObjects did not delete (its code as the error table reads it)."""
    cls = ERROR_TABLE.get(code, BackendError)
    return cls(f"DeleteObjects: {code}: {message}".rstrip(": "), backend=backend.describe(), key=key)


async def delete_many(backend: S3Backend, keys: Sequence[str]) -> dict[str, BackendError]:
    """Delete ``keys`` (relative to the root), :data:`MAX_KEYS` a request; the keys not deleted, with why."""
    failed: dict[str, BackendError] = {}
    for start in range(0, len(keys), MAX_KEYS):
        batch = list(keys[start:start + MAX_KEYS])
        failed.update(await _delete_batch(backend, batch))
    return failed


async def _delete_batch(backend: S3Backend, keys: list[str]) -> dict[str, BackendError]:
    root = f"{backend.prefix}/" if backend.prefix else ""
    full = {root + check_key(k, backend=backend.describe()): k for k in keys}
    client = await backend.client()

    async def send() -> list[dict[str, Any]]:
        # botocore gives the request its Content-MD5 or x-amz-checksum-* header, as the operation requires
        answer = await client.delete_objects(Bucket=backend.bucket, Delete={
            "Objects": [{"Key": name} for name in full], "Quiet": True})
        return list(answer.get("Errors") or ())

    try:
        errors: list[dict[str, Any]] = await backend.call("DeleteObjects", None, send, retry=True)
    except BackendError as exc:
        cause = exc.__cause__
        if isinstance(cause, bce.ClientError) and error_code(cause) in UNSUPPORTED:
            raise NotImplementedError(f"{backend.describe()} takes no DeleteObjects: {exc}") from exc
        raise
    failed: dict[str, BackendError] = {}
    for item in errors:
        name = item.get("Key") or ""
        code = item.get("Code") or "InternalError"
        if code in GONE or name not in full:
            continue
        key = full[name]
        failed[key] = key_error(backend, key, code, item.get("Message") or "")
    return failed

