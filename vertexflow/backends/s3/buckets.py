"""An S3 backend's bucket made and removed (``vertexflow mkdir s3://B``, ``rmdir s3://B``; ``features.buckets``).

As rclone's ``mkdir``/``rmdir`` of a bucket: making one that exists and is
ours is no error (HeadBucket first, and CreateBucket's
BucketAlreadyOwnedByYou); removing one that holds anything is refused by
here (a one-key listing first: SeaweedFS would remove it with its objects)
and by the store (BucketNotEmpty): nothing is deleted to make it empty.
CreateBucket names the region (LocationConstraint) outside us-east-1, as AWS
requires; a bucket name owned by another account is an error that says so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import botocore.exceptions as bce

from ...errors import Conflict, NotFound
from .errors import error_code

if TYPE_CHECKING:
    from .backend import S3Backend

#: the region whose buckets CreateBucket takes without a LocationConstraint (AWS refuses one naming it)
DEFAULT_REGION = "us-east-1"


async def bucket_exists(backend: S3Backend) -> bool:
    """HeadBucket: True when the bucket exists and the credentials may use it; False when absent.

    AccessDenied when it exists and is another's (or the credentials may not see it).
    """
    client = await backend.client()
    try:
        await backend.call("HeadBucket", None, lambda: client.head_bucket(Bucket=backend.bucket), retry=True)
    except NotFound:
        return False
    return True


async def make_bucket(backend: S3Backend) -> bool:
    """CreateBucket unless it exists: True made, False it was there (ours). Conflict: another account's name."""
    if await bucket_exists(backend):
        return False
    client = await backend.client()
    kwargs: dict[str, Any] = {"Bucket": backend.bucket}
    region = client.meta.region_name  # the backend's, as the client was made with it
    if region and region != DEFAULT_REGION:
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}

    async def create() -> bool:
        try:
            await client.create_bucket(**kwargs)
        except bce.ClientError as exc:
            code = error_code(exc)
            if code == "BucketAlreadyOwnedByYou":
                return False  # made meanwhile, by us
            if code == "BucketAlreadyExists":
                raise Conflict(f"bucket {backend.bucket!r} exists and belongs to another account (bucket names are "
                               "shared by every account of the store): choose another name",
                               backend=backend.describe()) from exc
            raise
        return True

    made: bool = await backend.call("CreateBucket", None, create)
    return made


async def remove_bucket(backend: S3Backend) -> bool:
    """DeleteBucket: True removed, False it holds objects (nothing done). NotFound when there is no such bucket."""
    client = await backend.client()

    async def remove() -> bool:
        try:
            await client.delete_bucket(Bucket=backend.bucket)
        except bce.ClientError as exc:
            if error_code(exc) == "BucketNotEmpty":
                return False
            raise
        return True

    try:
        # asked first: a store may remove a bucket with objects in it (SeaweedFS does)
        page = await backend.call("ListObjectsV2", None, lambda: client.list_objects_v2(
            Bucket=backend.bucket, MaxKeys=1), retry=True)
        if page.get("KeyCount") or page.get("Contents"):
            return False
        removed: bool = await backend.call("DeleteBucket", None, remove)
    except NotFound as exc:
        raise NotFound(f"bucket {backend.bucket!r} does not exist", backend=backend.describe()) from exc
    return removed
