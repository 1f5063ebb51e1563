"""AWS Signature Version 4 in the header form, for the fast path's S3 requests.

The caller gives the exact encoded path and query it sends (S3 signs the
path as sent: no double encoding, no normalisation) and the hex SHA-256 of
the body, which it computes anyway to store as metadata, so signing hashes
only the short canonical request. Signed headers are ``host`` and every
``x-amz-*`` header; others (Range, If-Match, Content-Length) may travel
unsigned, as SigV4 allows.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from typing import Protocol
from urllib.parse import quote

#: x-amz-content-sha256 of an empty body (GET, HEAD)
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


class Credentials(Protocol):
    """What signing needs; botocore's frozen credentials have this shape."""

    @property
    def access_key(self) -> str: ...

    @property
    def secret_key(self) -> str: ...

    @property
    def token(self) -> str | None: ...


def quote_path(path: str) -> str:
    """Percent-encode a key or path as S3 (and botocore) sends it: unreserved characters and "/" stay."""
    return quote(path, safe="/~")


def quote_param(value: str) -> str:
    """Percent-encode a query name or value as SigV4's canonical query wants it."""
    return quote(value, safe="-_.~")


def canonical_query(params: Mapping[str, str]) -> str:
    """The query string, sorted and encoded, both to send and to sign."""
    return "&".join(f"{quote_param(k)}={quote_param(v)}" for k, v in sorted(params.items()))


class Signer:
    """Signs requests for one region with the ``s3`` service name."""

    def __init__(self, region: str) -> None:
        self.region = region
        # the key derivation (four HMACs) changes once a day per secret
        self._keys: dict[tuple[str, str], bytes] = {}

    def _key(self, secret: str, day: str) -> bytes:
        key = self._keys.get((secret, day))
        if key is None:
            key = hmac.digest(f"AWS4{secret}".encode(), day.encode(), "sha256")
            for part in (self.region, "s3", "aws4_request"):
                key = hmac.digest(key, part.encode(), "sha256")
            self._keys = {(secret, day): key}  # yesterday's key is of no more use
        return key

    def sign(self, method: str, host: str, path: str, query: str, headers: dict[str, str],
             payload_sha256: str, credentials: Credentials, now: float | None = None) -> None:
        """Add ``x-amz-date``, ``x-amz-content-sha256``, the session token and ``Authorization`` to ``headers``.

        ``path`` and ``query`` are already encoded (:func:`quote_path`,
        :func:`canonical_query`); header names in ``headers`` are lower case.
        """
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        day = stamp[:8]
        headers["x-amz-date"] = stamp
        headers["x-amz-content-sha256"] = payload_sha256
        if credentials.token:
            headers["x-amz-security-token"] = credentials.token
        signed = {"host": host}
        for name, value in headers.items():
            if name.startswith("x-amz-"):
                signed[name] = " ".join(value.split())
        names = sorted(signed)
        signed_names = ";".join(names)
        canonical = "\n".join((method, path, query, "".join(f"{n}:{signed[n]}\n" for n in names),
                               signed_names, payload_sha256))
        scope = f"{day}/{self.region}/s3/aws4_request"
        to_sign = f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        signature = hmac.new(self._key(credentials.secret_key, day), to_sign.encode(), "sha256").hexdigest()
        headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={credentials.access_key}/{scope}, "
                                    f"SignedHeaders={signed_names}, Signature={signature}")
