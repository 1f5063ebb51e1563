"""The fast path: the requests of a copy straight on aiohttp (PutObject, GetObject, HeadObject,
ListObjectsV2, HeadBucket, GetObjectTagging, and a multipart upload's create, parts, complete and abort).

Why: botocore spends several times s5cmd's CPU per small PutObject
(endpoint-ruleset resolution, signing, event hooks, its HTTP layer;
measurements: ``benchmarks/NOTES.md``), and the SHA-256 checksum header it
adds makes the server hash every body once more. These four requests are most of a small-object job, so they are
sent here on one shared aiohttp session, signed by our own SigV4
(:mod:`.sigv4`) with the body's SHA-256 as ``x-amz-content-sha256`` (the
hash we store as metadata anyway, so signing costs no extra hashing).
PutObject also carries Content-MD5: SeaweedFS 4.48 does not check
``x-amz-content-sha256`` against the body (a test found it), but it does
check Content-MD5 and refuses a damaged body before storing it, at no
server CPU we could measure.

*Where* and *as whom* are resolved once: from the settings alone when they
are written out in full (:mod:`.direct`), else from botocore
(:meth:`Target.resolve`): the URL of the bucket (path or virtual-host
addressing, exactly as the boto client would address it), the signing
region, and the credentials object of the aioboto3 session (refreshable ones
refresh themselves). Error answers become :class:`~.errors.S3HTTPError`,
which the backend maps through the same table as botocore's errors. The
other requests (ListParts on resume, copies, deletes, presigned links) stay
on aioboto3, whose client is made when one of them is first needed.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import ssl
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import unquote_plus, urlsplit
from xml.sax.saxutils import escape

import aiohttp
from aiohttp.payload import BytesPayload
from multidict import CIMultiDictProxy
from yarl import URL

from .common import CONNECT_TIMEOUT, READ_TIMEOUT, b64
from .errors import S3HTTPError
from .sigv4 import EMPTY_SHA256, Signer, canonical_query, quote_path

#: key of the request botocore prepares (never sends) to show how it addresses the bucket
_PROBE_KEY = "vertexflow-probe"
_CREDENTIAL = re.compile(r"Credential=[^/]+/\d{8}/([^/]+)/s3/aws4_request")
#: the fields of a <Part> in CompleteMultipartUpload, in the schema's order
_PART_FIELDS = ("ETag", "ChecksumCRC32", "ChecksumCRC32C", "ChecksumCRC64NVME", "ChecksumSHA1", "ChecksumSHA256",
                "PartNumber")
#: asks HeadObject and GetObject for the object's stored checksums (``x-amz-checksum-*``, :mod:`.checksums`)
CHECKSUM_MODE = {"x-amz-checksum-mode": "ENABLED"}
#: error bodies are short XML documents; more than this is not one
_MAX_ERROR_BODY = 64 * 1024
#: request bodies go to the socket in slices of this size (see :class:`SlicedBody`)
BODY_SLICE = 256 * 1024


class SlicedBody(BytesPayload):
    """A request body handed to the socket a slice at a time, waiting for it to drain between slices.

    aiohttp writes a bytes body in one call, which on Python before 3.12.9
    first joins it with the headers (a copy of the whole body) and then
    leaves the asyncio transport to copy whatever the socket did not take
    at once into its buffer (most of an 8 MiB part): two copies per part, and
    up to a part's worth of buffer per connection. Slices keep both to one
    slice: less CPU and a lower peak RSS (measurements: ``benchmarks/NOTES.md``).
    """

    async def write(self, writer: Any) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(self, writer: Any, content_length: int | None) -> None:
        view = memoryview(self._value)
        end = len(view) if content_length is None else min(len(view), content_length)
        for start in range(0, end, BODY_SLICE):
            await writer.write(view[start:min(end, start + BODY_SLICE)])


@dataclass(frozen=True, slots=True)
class Target:
    """Where a bucket's objects live, as botocore addresses them.

    ``origin`` is ``scheme://host[:port]``, ``host`` the Host header,
    ``base_path`` the encoded path before the key ("/bucket" with path-style
    addressing, "" with virtual hosts).
    """

    origin: str
    host: str
    base_path: str
    region: str

    @classmethod
    async def resolve(cls, client: Any, bucket: str) -> Target:
        """Ask the boto client how it addresses and signs a request on ``bucket``, without sending it.

        A HeadObject is prepared by botocore as for real (endpoint rules,
        addressing style, signing region) and stopped at ``before-send``,
        where its URL and Authorization header are read.
        """
        seen: dict[str, Any] = {}

        def capture(request: Any, **_: Any) -> None:
            seen["url"], seen["auth"] = request.url, request.headers.get("Authorization", b"")
            raise _Probed

        event = "before-send.s3.HeadObject"
        # first: the request counter registered on before-send must not count what is never sent
        client.meta.events.register_first(event, capture, unique_id="vertexflow-probe")
        try:
            await client.head_object(Bucket=bucket, Key=_PROBE_KEY)
        except _Probed:
            pass
        finally:
            client.meta.events.unregister(event, unique_id="vertexflow-probe")
        parts = urlsplit(seen["url"])
        suffix = f"/{_PROBE_KEY}"
        auth = seen["auth"].decode() if isinstance(seen["auth"], bytes) else seen["auth"]
        match = _CREDENTIAL.search(auth)
        if not parts.path.endswith(suffix) or match is None:
            raise ValueError(f"cannot read the address and region of a SigV4 request from {seen['url']!r}")
        return cls(origin=f"{parts.scheme}://{parts.netloc}", host=parts.netloc,
                   base_path=parts.path[:-len(suffix)], region=match.group(1))


class _Probed(Exception):
    """Stops the probe request of :meth:`Target.resolve` before it is sent."""


class FastS3:
    """Signed single requests on one aiohttp session, sized to the backend's concurrency.

    ``credentials`` is botocore's credentials object (``get_frozen_credentials``
    is asked before each request, so refreshable ones stay fresh);
    ``on_request`` is called for every HTTP request sent.
    """

    def __init__(self, target: Target, credentials: Any, *, connections: int,
                 ssl_context: ssl.SSLContext | bool, on_request: Callable[[], None],
                 checksum_mode: bool = True, connect_timeout: float = CONNECT_TIMEOUT,
                 read_timeout: float = READ_TIMEOUT) -> None:
        self.target = target
        #: reads ask for stored checksums (``x-amz-checksum-mode``); False where the store knows no such header
        self._checksum_mode = dict(CHECKSUM_MODE) if checksum_mode else {}
        self._credentials = credentials
        self._signer = Signer(target.region)
        self._on_request = on_request
        #: the Server header of the first answer (it tells how the server lists)
        self.server: str | None = None
        connector = aiohttp.TCPConnector(limit=connections, ssl=ssl_context, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout, sock_read=read_timeout),
            # bodies are stored bytes: never let a server compress them in transit
            auto_decompress=False,
            skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"),
            cookie_jar=aiohttp.DummyCookieJar(),
            # trust_env would look up netrc and the proxy variables in a worker
            # thread for every request (two thread hops each time): the
            # proxy is looked up once instead, below
            trust_env=False,
        )
        self._proxy = _env_proxy(target.origin)

    async def aclose(self) -> None:
        await self._session.close()

    # -- requests -----------------------------------------------------------------

    async def _send(self, method: str, path: str, *, query: Mapping[str, str] | None = None,
                    headers: dict[str, str] | None = None, data: bytes | None = None,
                    payload_sha256: str = EMPTY_SHA256) -> aiohttp.ClientResponse:
        """Send one signed request; an error answer raises S3HTTPError (its body read and released)."""
        headers = headers if headers is not None else {}
        q = canonical_query(query) if query else ""
        credentials = await self._credentials.get_frozen_credentials()
        self._signer.sign(method, self.target.host, path, q, headers, payload_sha256, credentials)
        headers["host"] = self.target.host
        url = URL(f"{self.target.origin}{path}?{q}" if q else f"{self.target.origin}{path}", encoded=True)
        self._on_request()
        body = SlicedBody(data) if data is not None and len(data) > BODY_SLICE else data
        response = await self._session.request(method, url, headers=headers, data=body, proxy=self._proxy)
        if self.server is None:
            self.server = response.headers.get("Server", "")
        if response.status >= 300:
            try:
                body = b"" if method == "HEAD" else await response.content.read(_MAX_ERROR_BODY)
            finally:
                response.release()
            raise S3HTTPError.from_answer(response.status, body, response.headers.get("Retry-After"))
        return response

    def _object_path(self, full_key: str) -> str:
        return f"{self.target.base_path}/{quote_path(full_key)}"

    async def put_object(self, full_key: str, data: bytes, sha256_hex: str, md5_b64: str,
                         metadata: Mapping[str, str],
                         described: Mapping[str, str] | None = None,
                         checksum: Mapping[str, str] | None = None) -> CIMultiDictProxy[str]:
        """PutObject; returns the answer's headers (ETag...). ``described``: Content-Type and the
        other standard headers to store with the object (lower-case names); ``checksum``: the
        full-object checksum header to store it with (``x-amz-checksum-crc64nvme``)."""
        headers = dict(described or {})
        headers.update({f"x-amz-meta-{k}": v for k, v in metadata.items()})
        headers.update(checksum or {})
        headers["content-md5"] = md5_b64
        response = await self._send("PUT", self._object_path(full_key), headers=headers, data=data,
                                    payload_sha256=sha256_hex)
        response.release()
        return response.headers

    async def upload_part(self, full_key: str, upload_id: str, number: int, data: bytes, sha256: bytes,
                          checksum: tuple[str, str] | None, md5: bytes | None) -> CIMultiDictProxy[str]:
        """UploadPart, signed with the part's SHA-256 we already took (botocore would hash it again)
        and sent with its checksums (``checksum``: header and base64 value, the algorithm the
        upload was created with, None for none; Content-MD5 when ``md5`` is given); returns the answer's
        headers (ETag, the checksum header)."""
        headers = {checksum[0]: checksum[1]} if checksum else {}
        if md5 is not None:
            headers["content-md5"] = b64(md5)
        response = await self._send("PUT", self._object_path(full_key), headers=headers, data=data,
                                    query={"partNumber": str(number), "uploadId": upload_id},
                                    payload_sha256=sha256.hex())
        response.release()
        return response.headers

    async def head_object(self, full_key: str, *, checksums: bool = False) -> CIMultiDictProxy[str]:
        """HeadObject; with ``checksums`` the answer also carries the object's stored checksums."""
        headers = dict(self._checksum_mode) if checksums else None
        response = await self._send("HEAD", self._object_path(full_key), headers=headers)
        response.release()
        return response.headers

    @asynccontextmanager
    async def get_object(self, full_key: str, *, first: int, last: int,
                         if_match: str | None = None) -> AsyncIterator[aiohttp.ClientResponse]:
        """GetObject of bytes ``first``-``last``; the answer's body is read inside the context.

        Asked with checksum mode: an answer holding the whole object carries its stored
        full-object checksum, if any (:mod:`.checksums`); a ranged one carries none."""
        headers = {"range": f"bytes={first}-{last}", **self._checksum_mode}
        if if_match:
            headers["if-match"] = if_match
        response = await self._send("GET", self._object_path(full_key), headers=headers)
        try:
            yield response
        finally:
            # closes the connection instead of reusing it if the body was not read to the end
            response.release()

    async def get_range(self, full_key: str, first: int, last: int, if_match: str | None) -> list[bytes]:
        """Bytes ``first``-``last`` exactly, as the pieces they arrived in (joining them would copy
        every byte once more); a body cut short raises asyncio.IncompleteReadError."""
        want = last - first + 1
        async with self.get_object(full_key, first=first, last=last, if_match=if_match) as response:
            check_range(response, first, last)
            pieces: list[bytes] = []
            got = 0
            while got < want:
                piece = await read_piece(response.content, want - got)
                if not piece:
                    raise asyncio.IncompleteReadError(b"", want)
                pieces.append(piece)
                got += len(piece)
            return pieces

    async def create_multipart_upload(self, full_key: str, metadata: Mapping[str, str],
                                      checksum_algorithm: str | None,
                                      described: Mapping[str, str] | None = None,
                                      checksum_type: str | None = None) -> str:
        """CreateMultipartUpload; returns the upload id. ``described`` as for :meth:`put_object`;
        ``checksum_type`` FULL_OBJECT asks the store to keep a checksum of the whole object."""
        headers = dict(described or {})
        headers.update({f"x-amz-meta-{k}": v for k, v in metadata.items()})
        if checksum_algorithm:
            headers["x-amz-checksum-algorithm"] = checksum_algorithm
        if checksum_type:
            headers["x-amz-checksum-type"] = checksum_type
        fields = await self._xml_answer("POST", self._object_path(full_key), query={"uploads": ""},
                                        headers=headers)
        if not fields.get("UploadId"):
            raise S3HTTPError(500, "InvalidAnswer", "CreateMultipartUpload answered no UploadId")
        return fields["UploadId"]

    async def complete_multipart_upload(self, full_key: str, upload_id: str, parts: list[Mapping[str, Any]],
                                        checksum: Mapping[str, str] | None = None) -> dict[str, Any]:
        """CompleteMultipartUpload of ``parts`` (dicts of PartNumber, ETag and checksums, in order);
        returns the result's fields (ETag, ChecksumCRC32...) and its encryption headers.
        ``checksum``: the whole object's checksum headers (``x-amz-checksum-crc64nvme``,
        ``x-amz-checksum-type``), which the server checks against what it assembled."""
        xml = ['<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/">']
        for part in parts:
            xml.append("<Part>" + "".join(f"<{name}>{escape(str(part[name]))}</{name}>"
                                          for name in _PART_FIELDS if part.get(name) is not None) + "</Part>")
        xml.append("</CompleteMultipartUpload>")
        body = "".join(xml).encode()
        return await self._xml_answer("POST", self._object_path(full_key), query={"uploadId": upload_id},
                                      headers=dict(checksum or {}), data=body,
                                      payload_sha256=hashlib.sha256(body).hexdigest())

    async def abort_multipart_upload(self, full_key: str, upload_id: str) -> None:
        response = await self._send("DELETE", self._object_path(full_key), query={"uploadId": upload_id})
        response.release()

    async def _xml_answer(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        """The text of the top-level elements of an XML answer, plus its encryption headers.

        S3 may answer 200 and then an <Error> body (CompleteMultipartUpload,
        when assembling fails after the answer began): that raises, as a 500.
        """
        response = await self._send(method, path, **kw)
        try:
            # lstrip: S3 may send spaces ahead of a slow answer to keep the connection alive
            body = (await response.read()).lstrip()
        finally:
            response.release()
        try:
            root = ET.fromstring(body)
        except ET.ParseError:
            raise S3HTTPError(500, "InvalidAnswer", f"{method} answered a body that is not XML") from None
        if _local(root.tag) == "Error":
            raise S3HTTPError.from_answer(500, body, None)
        fields: dict[str, Any] = {_local(child.tag): child.text for child in root}
        for name in ("x-amz-server-side-encryption", "x-amz-server-side-encryption-customer-algorithm"):
            if name in response.headers:
                fields[name] = response.headers[name]
        return fields

    async def get_tagging(self, full_key: str) -> dict[str, str]:
        """GetObjectTagging: the object's tags (key -> value)."""
        response = await self._send("GET", self._object_path(full_key), query={"tagging": ""})
        try:
            body = await response.read()
        finally:
            response.release()
        try:
            root = ET.fromstring(body.lstrip())
        except ET.ParseError:
            raise S3HTTPError(500, "InvalidAnswer", "GetObjectTagging answered a body that is not XML") from None
        return {tag.findtext("{*}Key") or "": tag.findtext("{*}Value") or ""
                for tag in root.iter() if _local(tag.tag) == "Tag"}

    async def head_bucket(self) -> CIMultiDictProxy[str]:
        """HeadBucket; returns the answer's headers."""
        response = await self._send("HEAD", self.target.base_path or "/")
        response.release()
        return response.headers

    async def list_page(self, prefix: str, token: str | None, delimiter: str | None, *,
                        max_keys: int | None = None) -> dict[str, Any]:
        """One ListObjectsV2 page, shaped as botocore parses it (Contents, CommonPrefixes, tokens)."""
        query = {"list-type": "2", "prefix": prefix, "encoding-type": "url"}
        if max_keys is not None:
            query["max-keys"] = str(max_keys)
        if token:
            query["continuation-token"] = token
        if delimiter:
            query["delimiter"] = delimiter
        response = await self._send("GET", f"{self.target.base_path}/", query=query)
        try:
            body = await response.read()
        finally:
            response.release()
        return parse_listing(body)


def check_range(response: aiohttp.ClientResponse, first: int, last: int) -> None:
    """Refuse an answer that is not exactly bytes ``first``-``last``: a server that ignores Range
    sends the object from byte 0, which must never be taken for a later part of it."""
    answered = response.headers.get("Content-Range", "")
    if response.status != 206 or not answered.startswith(f"bytes {first}-{last}/"):
        raise S3HTTPError(response.status, "RangeNotHonoured",
                          f"asked for bytes {first}-{last}, answered Content-Range {answered!r}")


async def read_piece(content: aiohttp.StreamReader, at_most: int) -> bytes:
    """The next piece of a body as it arrived, cut to ``at_most`` bytes, not joined with others
    (``read(n)`` joins what is buffered); b"" only at the end. With chunked transfer encoding
    ``readchunk`` also answers an empty piece at a chunk's end, which is not the end of the body."""
    while True:
        piece, at_chunk_end = await content.readchunk()
        if piece or not at_chunk_end:
            return piece[:at_most] if len(piece) > at_most else piece


def _env_proxy(origin: str) -> str | None:
    """The proxy HTTP(S)_PROXY names for ``origin`` unless NO_PROXY exempts it, as botocore decides."""
    parts = urlsplit(origin)
    if parts.hostname is None or urllib.request.proxy_bypass(parts.hostname):
        return None
    return urllib.request.getproxies().get(parts.scheme)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse_listing(body: bytes) -> dict[str, Any]:
    """A ListBucketResult as botocore would parse it, keys URL-decoded when the server encoded them."""
    root = ET.fromstring(body)
    fields = {_local(child.tag): child for child in root}
    encoded = (fields["EncodingType"].text if "EncodingType" in fields else None) == "url"

    def key(text: str | None) -> str:
        return unquote_plus(text or "") if encoded else text or ""

    contents: list[dict[str, Any]] = []
    commons: list[dict[str, str]] = []
    for child in root:
        tag = _local(child.tag)
        if tag == "Contents":
            item = {_local(c.tag): c.text for c in child}
            contents.append({"Key": key(item.get("Key")), "Size": int(item.get("Size") or 0),
                             "ETag": item.get("ETag"),
                             "LastModified": _timestamp(item.get("LastModified"))})
        elif tag == "CommonPrefixes":
            commons.append({"Prefix": key(child.findtext("{*}Prefix"))})
    page: dict[str, Any] = {"Contents": contents, "CommonPrefixes": commons,
                            "IsTruncated": (fields["IsTruncated"].text if "IsTruncated" in fields else "")
                            == "true"}
    if "NextContinuationToken" in fields:
        page["NextContinuationToken"] = fields["NextContinuationToken"].text
    return page


def _timestamp(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None
