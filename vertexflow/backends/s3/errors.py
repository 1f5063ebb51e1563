"""What an S3 error means: one table for botocore's errors and the fast path's HTTP answers."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET

import aiohttp
import botocore.exceptions as bce

from ...errors import (
    AccessDenied,
    AuthError,
    BackendError,
    CantCopy,
    ConnectionFailed,
    InsufficientStorage,
    IntegrityError,
    InvalidKey,
    NotFound,
    ObjectTooLarge,
    SourceChanged,
    Throttled,
    TransientError,
    WriteDenied,
)

#: S3 error codes (and bare HTTP statuses, which HEAD answers carry instead of
#: a code) to our exceptions. The only place that decides what an S3 error means.
ERROR_TABLE: dict[str, type[BackendError]] = {
    "NoSuchKey": NotFound,
    "NoSuchBucket": NotFound,
    "NotFound": NotFound,
    "404": NotFound,
    "InvalidAccessKeyId": AuthError,
    "SignatureDoesNotMatch": AuthError,
    "ExpiredToken": AuthError,
    "InvalidToken": AuthError,
    "TokenRefreshRequired": AuthError,
    "AuthorizationHeaderMalformed": AuthError,
    "RequestTimeTooSkewed": AuthError,
    "AccessDenied": AccessDenied,
    "AllAccessDisabled": AccessDenied,
    "403": AccessDenied,
    "SlowDown": Throttled,
    "Throttling": Throttled,
    "ThrottlingException": Throttled,
    "RequestLimitExceeded": Throttled,
    "TooManyRequests": Throttled,
    "ServiceUnavailable": Throttled,
    "429": Throttled,
    "503": Throttled,
    "InternalError": TransientError,
    "RequestTimeout": TransientError,
    "OperationAborted": TransientError,
    "NoSuchUpload": TransientError,  # the upload vanished under us: start the object again
    "EntityTooLarge": ObjectTooLarge,
    "KeyTooLongError": InvalidKey,
    "PreconditionFailed": SourceChanged,
    "412": SourceChanged,
    "BadDigest": IntegrityError,
    "InvalidDigest": IntegrityError,
    "XAmzContentSHA256Mismatch": IntegrityError,
    "QuotaExceeded": InsufficientStorage,
}

#: Answers to a server-side copy (CopyObject, UploadPartCopy) that mean the server will not copy
#: this object itself, though it stores it: the engine streams it instead.
COPY_TABLE: dict[str, type[BackendError]] = {
    "NotImplemented": CantCopy,
    "501": CantCopy,
}
#: the operations :data:`COPY_TABLE` applies to
COPY_OPS = ("CopyObject", "UploadPartCopy")
#: the operations that write: an AccessDenied to one of them is a :class:`WriteDenied`
WRITE_OPS = ("PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload", "CopyObject",
             "UploadPartCopy")

#: statuses S3 answers with one error code only: an answer without a readable body is named by it
#: (a 416 whose body was cut lost its InvalidRange, and an empty object's read failed)
STATUS_CODES: dict[int, str] = {
    416: "InvalidRange",
}

# Transport failures: could not connect at all, or the connection broke.
_CONNECT_ERRORS = (bce.EndpointConnectionError, bce.ConnectTimeoutError,
                   aiohttp.ClientConnectorError)
_TRANSPORT_ERRORS = (bce.ReadTimeoutError, bce.ConnectionClosedError, bce.ResponseStreamingError,
                     bce.IncompleteReadError, bce.HTTPClientError, aiohttp.ClientError, TimeoutError,
                     asyncio.IncompleteReadError)


class S3HTTPError(Exception):
    """An error answer to a request of the fast path (:mod:`.fastpath`), before translation.

    ``code`` is the ``<Code>`` of the XML error body, or the bare status for
    answers without one (HEAD).
    """

    def __init__(self, status: int, code: str, message: str = "", retry_after: float | None = None) -> None:
        super().__init__(f"{status} {code}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after

    @classmethod
    def from_answer(cls, status: int, body: bytes, retry_after: str | None) -> S3HTTPError:
        """``code`` from the XML body; without one (a HEAD, a body cut short or stalled, a proxy's page)
        the one code S3 answers with the status, if it has one, else the bare status."""
        code, message = STATUS_CODES.get(status, str(status)), ""
        if body:
            try:
                root = ET.fromstring(body)
            except ET.ParseError:
                pass  # a proxy's HTML page: the status says enough
            else:
                code = root.findtext("Code") or code
                message = root.findtext("Message") or ""
        try:
            after = float(retry_after) if retry_after is not None else None
        except ValueError:
            after = None
        return cls(status, code, message, after)


def error_code(exc: bce.ClientError) -> str | None:
    return exc.response.get("Error", {}).get("Code")


def _status(exc: bce.ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def _retry_after(exc: bce.ClientError) -> float | None:
    headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    try:
        return float(headers["retry-after"])
    except (KeyError, ValueError):
        return None


def _class_for(code: str, status: int) -> type[BackendError]:
    if code in ERROR_TABLE:
        return ERROR_TABLE[code]
    if str(status) in ERROR_TABLE:
        return ERROR_TABLE[str(status)]
    if status >= 500:
        return TransientError
    return BackendError


def _mapped(code: str, status: int, message: str, retry_after: float | None, *, backend: str,
            key: str | None, op: str) -> BackendError:
    copy_cls = COPY_TABLE.get(code) or COPY_TABLE.get(str(status)) if op in COPY_OPS else None
    cls = copy_cls or _class_for(code, status)
    if cls is AccessDenied and op in WRITE_OPS:
        cls = WriteDenied
    detail = f"{code}: {message}" if message else code
    # the server's words alone do not say it: a signature mismatch is a wrong secret key
    text = f"{op} failed: the credentials were refused ({detail})" if cls is AuthError else f"{op} failed: {detail}"
    if issubclass(cls, TransientError):
        return cls(text, backend=backend, key=key, retry_after=retry_after)
    return cls(text, backend=backend, key=key)


def translate_error(exc: BaseException, *, backend: str, endpoint: str,
                    key: str | None = None, op: str = "request") -> BackendError | None:
    """Our exception for an SDK, fast-path or transport error, or None if ``exc`` is none of those."""
    if isinstance(exc, S3HTTPError):
        return _mapped(exc.code, exc.status, exc.message, exc.retry_after, backend=backend, key=key, op=op)
    if isinstance(exc, bce.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code") or _status(exc) or "unknown")
        return _mapped(code, _status(exc), error.get("Message") or "", _retry_after(exc),
                       backend=backend, key=key, op=op)
    if isinstance(exc, bce.NoCredentialsError):
        return AuthError("no credentials found (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                         "a profile, or the remote's keys)", backend=backend, key=key)
    if isinstance(exc, _CONNECT_ERRORS):
        return ConnectionFailed(f"{op} failed: cannot connect to {endpoint}", backend=backend, key=key)
    if isinstance(exc, _TRANSPORT_ERRORS):
        return TransientError(f"{op} failed: {type(exc).__name__} talking to {endpoint}",
                              backend=backend, key=key)
    if isinstance(exc, bce.BotoCoreError):
        return BackendError(f"{op} failed: {type(exc).__name__}", backend=backend, key=key)
    return None
