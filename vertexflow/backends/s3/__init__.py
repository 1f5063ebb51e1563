"""S3 and S3-compatible stores (AWS, SeaweedFS, MinIO, Ceph RGW).

A backend is a bucket and an optional prefix, treated as a folder: keys are
relative to ``prefix/``. Credentials, region and endpoint left as None come
from botocore's usual chain (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_REGION``/``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL``, ``AWS_PROFILE``,
config files), or without botocore when they leave nothing to resolve
(:mod:`.direct`).

Uploads up to ``multipart_threshold`` are one PutObject signed with the
body's SHA-256 and carrying its Content-MD5 (which the server checks), the
SHA-256 also kept as user metadata (``x-amz-meta-sha256``) so that later
listings/stats know it, and the answer's ETag compared with the body's MD5. Larger uploads are multipart
with a bounded number of parts in flight, each signed with its SHA-256 and
carrying a CRC32 checksum (and Content-MD5 until the server shows it checks
checksums); they resume from a checkpoint after a killed run, and any other
failure or cancellation aborts them. Downloads larger than the threshold
fetch the rest after the first answer in one more streamed GET (up to
``stream_limit``, 256 MiB) or in ranges fetched in parallel, pinned to one ETag.

Modules:

* :mod:`.backend`: :class:`S3Backend`, the contract's methods;
* :mod:`.fastpath` and :mod:`.sigv4`: the requests of a copy (PutObject,
  GetObject, HeadObject, ListObjectsV2, HeadBucket, multipart create, parts,
  complete, abort) on aiohttp with our own signer; the rest goes through aioboto3;
* :mod:`.direct`: the fast path's address and keys when botocore is not needed to find them;
* :mod:`.upload`: multipart uploads and their checkpoints;
* :mod:`.download`: streaming a download's answers, or its ranges in parallel;
* :mod:`.listing`: listings in key order;
* :mod:`.errors`: the one table that maps S3 errors to ours;
* :mod:`.common`: limits and small helpers.
"""

from .backend import S3Backend
from .errors import ERROR_TABLE, translate_error

__all__ = ["ERROR_TABLE", "S3Backend", "translate_error"]
