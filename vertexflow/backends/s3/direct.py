"""Where and as whom, without botocore, when the settings leave nothing to resolve.

Why: importing aioboto3 and building its client (endpoint rules, the S3
service model) is a large part of a short job's start-up, which rclone and
s5cmd do not pay (measurements: ``benchmarks/NOTES.md``). The fast path
(:mod:`.fastpath`) needs only a URL, a signing region and keys, and for the
usual S3-compatible set-up those are written out in full: an
endpoint URL, static keys and a region. :func:`plain_settings` answers the
fast path's :class:`~.fastpath.Target` and keys in that case, exactly as
botocore would resolve them (path-style addressing on a custom endpoint,
us-east-1 when no region is set anywhere), and None whenever botocore might
decide otherwise (a profile, a config file that may set the region, virtual
hosts, AWS's own endpoints, refreshable credentials); then the backend asks
botocore as before. The boto client is still built, lazily, for the
requests the fast path does not send (multipart, copy, delete, presigning).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from ...errors import ConfigError
from .fastpath import Target
from .sigv4 import quote_path

#: botocore's region when none is configured, for a custom endpoint
DEFAULT_REGION = "us-east-1"
#: what botocore accepts as a region name (``botocore.utils.validate_region_name``): a host label
_REGION_NAME = re.compile(r"^(?![0-9]+$)(?!-)[a-zA-Z0-9-]{,63}(?<!-)$")


def check_region(region: str, where: str) -> None:
    """Raise :class:`ConfigError` naming ``region`` (from ``where``) unless botocore would take it."""
    if not _REGION_NAME.match(region):
        raise ConfigError(f"invalid AWS region {region!r} (from {where}): a region is letters, digits and "
                          f"hyphens, at most 63, such as us-east-1")


@dataclass(frozen=True, slots=True)
class StaticCredentials:
    """Keys that never change, shaped as botocore's credentials (see :class:`.sigv4.Credentials`)."""

    access_key: str
    secret_key: str
    token: str | None = None

    async def get_frozen_credentials(self) -> StaticCredentials:
        return self

    def __repr__(self) -> str:  # never the secret, in a log or a traceback
        return f"StaticCredentials(access_key={self.access_key!r})"


def plain_settings(bucket: str, *, endpoint_url: str | None, region: str | None, access_key_id: str | None,
                   secret_access_key: str | None, session_token: str | None, profile: str | None,
                   addressing_style: str,
                   environ: Mapping[str, str] = os.environ) -> tuple[Target, StaticCredentials] | None:
    """The fast path's target and keys when botocore would leave them as given, else None."""
    if addressing_style == "virtual" or profile or environ.get("AWS_PROFILE"):
        return None
    endpoint = endpoint_url
    if endpoint is None and environ.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() != "true":
        endpoint = environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL")
    credentials = _static_credentials(access_key_id, secret_access_key, session_token, environ)
    given = region
    region = given or environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or _default_region(environ)
    if region is not None:  # signed as given, a bad name would only show as a refused signature
        check_region(region, "the remote's settings" if given else
                     "AWS_REGION" if environ.get("AWS_REGION") else "AWS_DEFAULT_REGION")
    if not endpoint or credentials is None or region is None:
        return None
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/") or parts.query:
        return None
    # botocore addresses a custom endpoint path-style unless told "virtual" (checked in the tests)
    target = Target(origin=f"{parts.scheme}://{parts.netloc}", host=parts.netloc,
                    base_path=f"/{quote_path(bucket)}", region=region)
    return target, credentials


def _static_credentials(access_key_id: str | None, secret_access_key: str | None, session_token: str | None,
                        environ: Mapping[str, str]) -> StaticCredentials | None:
    if access_key_id or secret_access_key:
        if access_key_id and secret_access_key:
            return StaticCredentials(access_key_id, secret_access_key, session_token)
        return None  # half a pair: botocore names the error
    key, secret = environ.get("AWS_ACCESS_KEY_ID"), environ.get("AWS_SECRET_ACCESS_KEY")
    if not key or not secret or environ.get("AWS_CREDENTIAL_EXPIRATION"):
        return None  # none, half a pair, or keys botocore refreshes from the environment
    # botocore's environment provider takes the first of these that is set
    token = environ.get("AWS_SECURITY_TOKEN") or environ.get("AWS_SESSION_TOKEN")
    return StaticCredentials(key, secret, token or None)


def _default_region(environ: Mapping[str, str]) -> str | None:
    """us-east-1 when there is no AWS config file; None when there is one (its profile may set a region)."""
    config = environ.get("AWS_CONFIG_FILE") or os.path.join(os.path.expanduser("~"), ".aws", "config")
    return None if os.path.exists(os.path.expanduser(config)) else DEFAULT_REGION
