"""What stands for folders on S3: the key prefixes directly under one, and the buckets of a store.

S3 has no folders: ``a/b/c.txt`` is one key. A listing with the delimiter
``/`` answers the distinct next segments under a prefix (CommonPrefixes),
one request per 1,000 of them, which is what ``vertexflow lsd`` shows; an
empty "folder" does not exist. ``lsd s3://`` lists the buckets (ListBuckets).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from ...errors import BackendError

if TYPE_CHECKING:
    from .backend import S3Backend

#: delimiter listing pages read at most (1,000 names each): bounds the loop against endless tokens
MAX_PAGES = 100_000


async def list_prefixes(backend: S3Backend, path: str) -> AsyncIterator[str]:
    """The names ``n`` for which keys ``path/n/...`` exist under the root (``""``: the root), each once."""
    base = "/".join(p for p in (backend.prefix, path.strip("/")) if p)
    base = f"{base}/" if base else ""
    fast = await backend.fast_client()
    token: str | None = None
    last: str | None = None
    for _ in range(MAX_PAGES):
        page: dict[str, Any] = await backend.call("ListObjectsV2", path or None,
                                                  partial(fast.list_page, base, token, "/"), retry=True)
        for common in page.get("CommonPrefixes", ()):
            name = (common.get("Prefix") or "")[len(base):].rstrip("/")
            if name and name != last and "/" not in name:
                last = name
                yield name
        token = page.get("NextContinuationToken")
        if not page.get("IsTruncated") or not token:
            return
    raise BackendError(f"more than {MAX_PAGES:,} listing pages of prefixes: stopped listing them",
                       backend=backend.describe())


async def list_buckets(backend: S3Backend) -> list[tuple[str, datetime | None]]:
    """Every bucket the credentials of ``backend`` may see on its store: (name, created), by name.

    ``backend`` only lends its endpoint and credentials (any bucket name will do).
    """
    client = await backend.client()
    answer: dict[str, Any] = await backend.call("ListBuckets", None, client.list_buckets, retry=True)
    return sorted((b["Name"], b.get("CreationDate")) for b in answer.get("Buckets", ()) if b.get("Name"))
