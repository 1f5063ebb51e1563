"""Incomplete multipart uploads under an S3 backend's root: listed and aborted (``vertexflow cleanup``).

An upload that is neither completed nor aborted (a run killed outright, a
client that gave up) keeps its parts on the server, billed, until someone
aborts it: S3 removes none by itself unless the bucket has a lifecycle rule
for it. Listing is ListMultipartUploads (1,000 uploads a page, followed by
its markers), aborting one AbortMultipartUpload per upload; an upload that is
already gone (NoSuchUpload) counts as aborted.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from typing import TYPE_CHECKING, Any

from ...errors import BackendError
from ...model import IncompleteUpload
from .errors import S3HTTPError

if TYPE_CHECKING:
    from .backend import S3Backend

#: pages of uploads read at most (1,000 each): bounds the loop against a server whose markers never end
MAX_PAGES = 10_000


def _root(backend: S3Backend) -> str:
    return f"{backend.prefix}/" if backend.prefix else ""


async def list_incomplete_uploads(backend: S3Backend, prefix: str = "") -> AsyncIterator[IncompleteUpload]:
    """Every incomplete upload of a key under the root that starts with ``prefix``, in the server's order."""
    root = _root(backend)
    client = await backend.client()
    markers: dict[str, str] = {}
    for _ in range(MAX_PAGES):
        ask = partial(client.list_multipart_uploads, Bucket=backend.bucket, Prefix=root + prefix, **markers)
        page: dict[str, Any] = await backend.call("ListMultipartUploads", None, ask, retry=True)
        for upload in page.get("Uploads", ()):
            full = upload.get("Key") or ""
            if full.startswith(root) and full != root and upload.get("UploadId"):
                yield IncompleteUpload(key=full[len(root):], upload_id=upload["UploadId"],
                                       initiated=upload.get("Initiated"))
        if not page.get("IsTruncated"):
            return
        following = {name: page[answer] for name, answer in (("KeyMarker", "NextKeyMarker"),
                                                              ("UploadIdMarker", "NextUploadIdMarker"))
                     if page.get(answer)}
        if not following or following == markers:
            return  # truncated with no way on: what was listed is all there is to list
        markers = following
    raise BackendError(f"more than {MAX_PAGES:,} pages of incomplete uploads: stopped listing them",
                       backend=backend.describe())


async def abort_incomplete_upload(backend: S3Backend, upload: IncompleteUpload) -> None:
    """AbortMultipartUpload; an upload already gone is what was wanted."""
    full = _root(backend) + upload.key
    fast = await backend.fast_client()

    async def abort() -> None:
        try:
            await fast.abort_multipart_upload(full, upload.upload_id)
        except S3HTTPError as exc:
            if exc.code != "NoSuchUpload":
                raise

    await backend.call("AbortMultipartUpload", upload.key, abort, retry=True)
