"""Google Cloud Storage connections (docs/gcs.md), against what runs here: the suite's SeaweedFS with
path-style addressing behind a recording proxy. What the proxy sees is what GCS's XML API would be
sent: no multi-object delete, no tagging request or header, no x-amz-checksum-* header, SigV4 with
the HMAC key. Whether GCS itself accepts all of it cannot be tested here (docs/gcs.md says what)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.cli.helpers import vf
from vertexflow.config import GCS_ENDPOINT, parse_config
from vertexflow.errors import ConfigError
from vertexflow.tenancy.storage_config import parse_storage_config

#: hop-by-hop or recomputed headers the proxy does not pass on
_DROP = {"transfer-encoding", "content-length", "connection", "keep-alive", "content-encoding"}


class RecordingProxy:
    """An HTTP proxy on 127.0.0.1 that forwards every request unchanged (Host included, so a SigV4
    signature still verifies) to ``upstream`` and records (method, path?query, headers) of each."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        self.endpoint = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROP}
        self.seen.append((request.method, request.path_qs, {k.lower(): v for k, v in request.headers.items()}))
        async with self._session.request(request.method, self.upstream + request.path_qs, headers=headers,
                                         data=body, allow_redirects=False) as answer:
            payload = await answer.read()
            out = {k: v for k, v in answer.headers.items() if k.lower() not in _DROP}
            response = web.Response(status=answer.status, body=payload if request.method != "HEAD" else None,
                                    headers=out)
            if request.method == "HEAD" and "Content-Length" in answer.headers:
                response.headers["Content-Length"] = answer.headers["Content-Length"]
            return response

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession(auto_decompress=False,
                                              timeout=aiohttp.ClientTimeout(total=60))
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.endpoint = f"http://127.0.0.1:{port}"

    async def _stop(self) -> None:
        await self._runner.cleanup()
        await self._session.close()

    def __enter__(self) -> RecordingProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@pytest.fixture
def proxy(seaweed) -> Iterator[RecordingProxy]:  # noqa: ANN001
    with RecordingProxy(seaweed.endpoint) as p:
        yield p


def _config(tmp_path: Path, seaweed, endpoint: str, bucket: str) -> Path:  # noqa: ANN001
    storage = tmp_path / "storage_config.json"
    storage.write_text(json.dumps({"connections": {"gcs-a": {
        "type": "gcs", "endpoint": endpoint, "bucket": bucket, "addressing_style": "path",
        "access_key_id": seaweed.access_key, "secret_access_key_env": "TEST_GCS_SECRET",
        "part_size": 5 * 1024 * 1024}}}))
    config = tmp_path / "config.toml"
    config.write_text(f'storage_config = "{storage}"\n')
    return config


def test_gcs_requests_shapes_through_copy_sync_verify(tmp_path: Path, seaweed, s3_bucket: str,  # noqa: ANN001
                                                      proxy: RecordingProxy) -> None:
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    files = {"a.txt": b"alpha\n", "d/b.bin": os.urandom(70_000), "big.bin": os.urandom(11 * 1024 * 1024 + 5),
             "gone.txt": b"to be deleted\n"}
    for name, data in files.items():
        (src / name).write_bytes(data)
    env = {**os.environ, "VERTEXFLOW_CONFIG": str(_config(tmp_path, seaweed, proxy.endpoint, s3_bucket)),
           "TEST_GCS_SECRET": seaweed.secret_key}
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_PROFILE"):
        env.pop(var, None)
    r = vf("copy", str(src), "gcs-a:data/", env=env)
    assert r.code == 0, r.stderr
    (src / "gone.txt").unlink()
    (src / "a.txt").write_bytes(b"alpha, changed\n")
    r = vf("sync", "--delete", str(src), "gcs-a:data/", env=env)
    assert r.code == 0, r.stderr
    r = vf("verify", str(src), "gcs-a:data/", env=env)
    assert r.code == 0, r.stderr + r.stdout
    # a server-side copy inside the store, given its description anew (S3 would also replace the tags)
    r = vf("copy", "--no-metadata", "gcs-a:data/", "gcs-a:copied/", env=env)
    assert r.code == 0, r.stderr
    assert any(h.get("x-amz-copy-source") for m, _, h in proxy.seen if m == "PUT")

    # what arrived, read with an independent client
    s3 = seaweed.boto3_client()
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket).get("Contents", []))
    assert keys == ["copied/a.txt", "copied/big.bin", "copied/d/b.bin",
                    "data/a.txt", "data/big.bin", "data/d/b.bin"]
    files["a.txt"] = b"alpha, changed\n"
    for name in ("a.txt", "d/b.bin", "big.bin"):
        body = s3.get_object(Bucket=s3_bucket, Key=f"data/{name}")["Body"].read()
        assert hashlib.sha256(body).digest() == hashlib.sha256(files[name]).digest(), name

    # what was sent
    seen = proxy.seen
    assert seen
    methods = {(m, p.split("?")[0].count("/")) for m, p, _ in seen}
    assert any(m == "DELETE" for m, _ in methods)  # the delete of gone.txt, one DeleteObject
    assert any(m == "PUT" and "partNumber=" in p for m, p, _ in seen)  # big.bin went in parts
    for method, path, headers in seen:
        query = path.partition("?")[2]
        assert not (method == "POST" and "delete" in query.split("&")), path
        assert "tagging" not in query, (method, path)
        assert not [h for h in headers if h.startswith("x-amz-tagging")], (method, path, headers)
        assert not [h for h in headers if h.startswith("x-amz-checksum") or h == "x-amz-sdk-checksum-algorithm"], \
            (method, path, headers)
        auth = headers.get("authorization", "")
        assert auth.startswith(f"AWS4-HMAC-SHA256 Credential={seaweed.access_key}/"), (method, path, auth)
        assert "/auto/s3/aws4_request" in auth, auth  # the region GCS documents for HMAC keys
        if method == "PUT" and "partNumber=" in path:
            assert "content-md5" in headers  # the part's only checksum GCS is sent


def test_gcs_connection_defaults_and_errors() -> None:
    conf = parse_storage_config({"connections": {"g": {"type": "gcs", "bucket": "b",
                                                       "access_key_id_env": "ID", "secret_access_key_env": "S"}}})
    conn = conf.connections["g"]
    assert conn.endpoint == GCS_ENDPOINT
    kwargs = conn.backend_kwargs({"ID": "GOOG1EXAMPLE", "S": "secret"}, "g")
    assert kwargs["provider"] == "gcs" and kwargs["endpoint_url"] == "https://storage.googleapis.com"
    assert kwargs["access_key_id"] == "GOOG1EXAMPLE" and kwargs["region"] == "auto"
    remote = parse_config({"remotes": {"g": {"type": "gcs", "addressing_style": "virtual"}}}).remotes["g"]
    assert remote.backend_kwargs({}, "g")["addressing_style"] == "virtual"
    with pytest.raises(ConfigError, match=r"connections\.g\.endpoint: .*http"):
        parse_storage_config({"connections": {"g": {"type": "gcs", "endpoint": "storage.googleapis.com"}}})
    with pytest.raises(ConfigError, match=r"remotes\.g\.colour: unknown key"):
        parse_config({"remotes": {"g": {"type": "gcs", "colour": "x"}}})


def test_gcs_backend_refuses_tags() -> None:
    from vertexflow.backends.s3 import S3Backend

    with pytest.raises(ConfigError, match="keeps no object tags"):
        S3Backend("b", provider="gcs", tags={"team": "a"})
    backend = S3Backend("b", provider="gcs")
    assert not backend.features.object_tags and backend.features.native_hashes == ()


def test_goog_hash_without_md5_is_not_an_md5_etag() -> None:
    from vertexflow.backends.s3.common import etag_is_content_md5, goog_without_md5

    md5_like = "0123456789abcdef0123456789abcdef"
    composite = {"x-goog-hash": "crc32c=n03x6A==", "ETag": f'"{md5_like}"'}
    single = {"x-goog-hash": "crc32c=n03x6A==,md5=Ojk9c3dhfxgoKVVHYwFbHQ==", "ETag": f'"{md5_like}"'}
    assert goog_without_md5(composite) and not goog_without_md5(single) and not goog_without_md5({})
    assert not etag_is_content_md5(md5_like, composite)
    assert etag_is_content_md5(md5_like, single) and etag_is_content_md5(md5_like, {})


async def test_gcs_listing_takes_no_md5_from_etags(seaweed, s3_bucket: str) -> None:  # noqa: ANN001
    from vertexflow.backends.s3 import S3Backend

    seaweed.boto3_client().put_object(Bucket=s3_bucket, Key="p/x.txt", Body=b"hello")
    common = {"endpoint_url": seaweed.endpoint, "region": seaweed.region, "access_key_id": seaweed.access_key,
              "secret_access_key": seaweed.secret_key, "addressing_style": "path"}
    for provider, expect_md5 in (("s3", True), ("gcs", False)):
        backend = S3Backend(s3_bucket, "p", provider=provider, **common)
        try:
            listed = [info async for info in backend.list()]
        finally:
            await backend.aclose()
        assert [i.key for i in listed] == ["x.txt"]
        assert ("md5" in listed[0].hashes) is expect_md5, (provider, listed[0].hashes)
