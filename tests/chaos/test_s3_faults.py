"""S3 faults the chaos rounds met that the command line did not take as it should, each on chosen requests.

The command runs as a subprocess against a SeaweedFS of its own behind a
:class:`~vertexflow.testing.faults.FaultProxy` whose ``force`` picks the
requests that meet a fault (``identities`` shows what was asked); what it
wrote is read back with boto3.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from vertexflow.backends.s3 import S3Backend
from vertexflow.errors import SourceChanged
from vertexflow.testing.faults import ThreadedFaultProxy
from vertexflow.testing.killer import MiB, check_exit_status, local_tree, run_cli
from vertexflow.testing.seaweedfs import SeaweedFS

pytestmark = [pytest.mark.s3]

BUCKET = "faults"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    with SeaweedFS(tmp_path_factory.mktemp("seaweedfs")) as s:
        s.create_bucket(BUCKET)
        yield s


def _proxy(server: SeaweedFS, **kwargs: object) -> ThreadedFaultProxy:
    kwargs.setdefault("seed", 0)
    return ThreadedFaultProxy(int(server.endpoint.rsplit(":", 1)[1]), rates={}, **kwargs)


def _env(server: SeaweedFS, endpoint: str, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "VERTEXFLOW_"))}
    env.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID=server.access_key,
               AWS_SECRET_ACCESS_KEY=server.secret_key, AWS_REGION=server.region,
               VERTEXFLOW_JOURNAL=str(tmp_path / "journal.db"), HOME=str(tmp_path))
    return env


def _tree(root: Path, sizes: dict[str, int]) -> dict[str, str]:
    rng = random.Random(str(root))
    out = {}
    for key, size in sizes.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        data = rng.randbytes(size)
        (root / key).write_bytes(data)
        out[key] = hashlib.sha256(data).hexdigest()
    return out


def _s3_tree(server: SeaweedFS, prefix: str) -> dict[str, str]:
    client = server.boto3_client()
    out = {}
    for item in client.list_objects_v2(Bucket=BUCKET, Prefix=prefix + "/").get("Contents", ()):
        body = client.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read()
        out[item["Key"][len(prefix) + 1:]] = hashlib.sha256(body).hexdigest()
    return out


# copy_up seed 2 (and copy_down 2, sync_up 2 and 13, sync_down 2, copy_s3_s3 2 and 10): a 503 or 429 with
# Retry-After, or a reset, on the HeadBucket that starts a run ended it with exit 2 ("HeadBucket failed"),
# where the same answer to any other request is retried
@pytest.mark.parametrize(("status", "first_faults"), [
    pytest.param(503, ["error", "error"], id="copy_up-seed2-503-on-HeadBucket"),
    pytest.param(429, ["error"], id="copy_up-seed10-429-on-HeadBucket"),
    pytest.param(500, ["reset_response", "error"], id="copy_up-seed2-reset-then-500-on-HeadBucket"),
])
def test_head_bucket_at_start_is_retried(server: SeaweedFS, tmp_path: Path, status: int,
                                         first_faults: list[str]) -> None:
    src = tmp_path / "src"
    tree = _tree(src, {"a.txt": 10, "b/c.bin": 5000})
    prefix = f"head-{status}"
    force = {f"HEAD /{BUCKET}?#{i}": kind for i, kind in enumerate(first_faults)}
    with _proxy(server, statuses=(status,), force=force) as tp:
        run = run_cli(["copy", str(src), f"s3://{BUCKET}/{prefix}", "--json", "--no-progress"],
                      _env(server, tp.proxy.endpoint, tmp_path), timeout=120)
        injected = dict(tp.proxy.counts)
        asked = list(tp.proxy.identities)
    assert sum(injected.values()) == len(first_faults), (injected, asked)
    assert check_exit_status(run, {0}) == [], asked
    assert _s3_tree(server, prefix) == tree


def test_head_bucket_failing_for_good_ends_the_run_bounded(server: SeaweedFS, tmp_path: Path) -> None:
    """A HeadBucket answered 503 every time: retried a bounded number of times, then exit 2 naming it."""
    src = tmp_path / "src"
    _tree(src, {"a.txt": 10})
    force = {f"HEAD /{BUCKET}?#{i}": "error" for i in range(50)}
    with _proxy(server, statuses=(503,), retry_after=0, force=force) as tp:
        run = run_cli(["copy", str(src), f"s3://{BUCKET}/never", "--json", "--no-progress"],
                      _env(server, tp.proxy.endpoint, tmp_path), timeout=120)
        heads = sum(1 for i in tp.proxy.identities if i.startswith(f"HEAD /{BUCKET}?#"))
    assert check_exit_status(run, {2}) == []
    assert "HeadBucket failed" in run.err
    assert 2 <= heads <= 10, heads
    assert run.seconds < 60
    assert _s3_tree(server, "never") == {}


# copy_down seed 15: the GET of an empty object (a range from byte 0, as for every small object: the object
# may have grown) is answered 416 InvalidRange, which means "empty"; a fault that cut or held back that
# answer's XML body left the bare status, and the object failed with "GetObject failed: 416" (exit 1)
@pytest.mark.parametrize("kind", ["reset_response", "stall"])  # the 416 answer's XML body cut, or held back
def test_empty_object_read_again_after_a_fault(server: SeaweedFS, tmp_path: Path, kind: str) -> None:
    prefix = f"empty-{kind}"
    # each on a connection of its own: boto3 waits out its read timeout on a PutObject that follows an empty
    # one on the same connection to SeaweedFS (see vertexflow.testing.killer.put_tree)
    server.boto3_client(read_timeout=59).put_object(Bucket=BUCKET, Key=f"{prefix}/one.txt", Body=b"1" * 2000)
    server.boto3_client(read_timeout=59).put_object(Bucket=BUCKET, Key=f"{prefix}/empty.txt", Body=b"")
    force = {f"GET /{BUCKET}/{prefix}/empty.txt?#{i}": kind for i in range(2)}
    dst = tmp_path / "dst"
    with _proxy(server, statuses=(503,), force=force, stall_seconds=1.0) as tp:
        run = run_cli(["copy", f"s3://{BUCKET}/{prefix}", str(dst), "--json", "--no-progress"],
                      _env(server, tp.proxy.endpoint, tmp_path), timeout=120)
        asked = list(tp.proxy.identities)
        faults = list(tp.proxy.faults)
    assert check_exit_status(run, {0}) == [], (asked, faults)
    assert (dst / "empty.txt").read_bytes() == b""
    assert (dst / "one.txt").read_bytes() == b"1" * 2000


# issue 25, item 5: an S3 download broken mid-body continues from the last byte that arrived (a ranged GET
# pinned to the ETag, the running digest carried on); it started the object again, and a connection that
# broke every few MiB never brought a large object through (ClientPayloadError after the whole-object retries)
def test_download_broken_mid_body_resumes_from_the_last_byte(server: SeaweedFS, tmp_path: Path) -> None:
    prefix = "resume"
    src = tmp_path / "src"
    tree = _tree(src, {"a.bin": 12 * MiB + 12345, "b.bin": 12 * MiB + 999})
    client = server.boto3_client()
    for key in tree:
        client.put_object(Bucket=BUCKET, Key=f"{prefix}/{key}", Body=(src / key).read_bytes())
    dst = tmp_path / "dst"
    # a reset about every 4 MiB of an answer's body (one 64 KiB piece in 64)
    with _proxy(server, seed=3, chunk_reset_rate=1 / 64) as tp:
        run = run_cli(["copy", f"s3://{BUCKET}/{prefix}", str(dst), "--json", "--no-progress", "--retries", "2"],
                      _env(server, tp.proxy.endpoint, tmp_path), timeout=120)
        resets = tp.proxy.counts["reset_response"]
        sent = tp.proxy.answer_bytes
        faults = list(tp.proxy.faults)
    assert check_exit_status(run, {0}) == [], faults
    assert local_tree(dst) == tree
    assert resets >= 3, faults
    total = sum((src / k).stat().st_size for k in tree)
    # what was sent again is at most what the broken answers had carried past the last byte received
    assert sent < total + resets * 4 * MiB, (sent, total, resets)


async def test_download_resumed_after_the_object_changed_starts_again(server: SeaweedFS, tmp_path: Path) -> None:
    """The resumed GET carries If-Match with the first answer's ETag: an object replaced in between fails
    it (SourceChanged: the engine starts the object again), and no byte of the new object joins the old."""
    key = "changed/x.bin"
    old = random.Random(1).randbytes(6 * MiB)
    client = server.boto3_client()
    client.put_object(Bucket=BUCKET, Key=key, Body=old)
    with _proxy(server, force={f"GET /{BUCKET}/{key}?#0": "reset_response@0.75"}) as tp:
        backend = S3Backend(BUCKET, "", endpoint_url=tp.proxy.endpoint, region=server.region,
                            access_key_id=server.access_key, secret_access_key=server.secret_key,
                            part_size=8 * MiB, multipart_threshold=8 * MiB)
        got = bytearray()
        async with backend:
            with pytest.raises(SourceChanged):
                async with backend.open(key) as stream:
                    async for piece in stream:
                        if not got:  # the first answer is open: replace the object under it
                            await anyio.to_thread.run_sync(
                                lambda: client.put_object(Bucket=BUCKET, Key=key, Body=b"new" * MiB))
                        got += piece
        asked = list(tp.proxy.identities)
    assert asked.count(f"GET /{BUCKET}/{key}?#1") == 1, asked  # the one resumed GET, refused
    assert 0 < len(got) < len(old) and bytes(got) == old[:len(got)]


async def test_download_resumed_unchanged_is_whole(server: SeaweedFS, tmp_path: Path) -> None:
    """Through the backend: one answer reset three quarters in, the rest from a ranged GET; the bytes are
    the object's, checked against its ETag across both answers."""
    key = "unchanged/x.bin"
    data = random.Random(2).randbytes(6 * MiB + 17)
    server.boto3_client().put_object(Bucket=BUCKET, Key=key, Body=data)
    with _proxy(server, force={f"GET /{BUCKET}/{key}?#0": "reset_response@0.75"}) as tp:
        backend = S3Backend(BUCKET, "", endpoint_url=tp.proxy.endpoint, region=server.region,
                            access_key_id=server.access_key, secret_access_key=server.secret_key,
                            part_size=8 * MiB, multipart_threshold=8 * MiB)
        async with backend:
            async with backend.open(key) as stream:
                got = b"".join([piece async for piece in stream])
        asked = list(tp.proxy.identities)
        sent = tp.proxy.answer_bytes
    assert got == data
    assert asked.count(f"GET /{BUCKET}/{key}?#1") == 1 and f"GET /{BUCKET}/{key}?#2" not in asked, asked
    assert sent < len(data) + 4 * MiB  # not the whole object again


# migrate_rollback seed 6 (at full rates, on a loaded machine): one byte flipped in the answer to a GET of a
# file the migration's verification read ended the whole run ("downloaded bytes have sha256 …, the server
# says …", exit 2), where the copy's engine asks again for a whole object on the same error
@pytest.mark.parametrize(("fault", "side"), [
    pytest.param("flip", "a", id="migrate_rollback-seed6-flip-checked"),
    pytest.param("reset_response", "a", id="reset"),
    pytest.param("error", "a", id="error"),
    pytest.param("flip", "b", id="migrate_rollback-seed6-flip-unchecked"),
])
def test_verify_reads_again_a_read_that_failed_in_transit(server: SeaweedFS, tmp_path: Path, fault: str,
                                                          side: str) -> None:
    """Side a's read is checked by its plain-MD5 ETag (a flip fails it); side b's, two parts without a
    checksum, by nothing: a flip there makes a difference, read once more before it is reported."""
    from boto3.s3.transfer import TransferConfig

    fault_side = fault
    fault = f"{fault}-{side}"
    data = random.Random(fault).randbytes(6 * MiB + 123)
    raw = server.boto3_client()
    raw.put_object(Bucket=BUCKET, Key=f"v-{fault}/a/same.bin", Body=data)  # one part: a plain-MD5 ETag
    # the same bytes in two parts: no digest both sides share, so the comparison reads both
    raw.upload_fileobj(__import__("io").BytesIO(data), BUCKET, f"v-{fault}/b/same.bin",
                       Config=TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB))
    assert raw.head_object(Bucket=BUCKET, Key=f"v-{fault}/b/same.bin")["ETag"].endswith('-2"')
    get = f"GET /{BUCKET}/v-{fault}/{side}/same.bin?#0"
    with _proxy(server, force={get: fault_side}) as tp:
        run = run_cli(["verify", f"s3://{BUCKET}/v-{fault}/a", f"s3://{BUCKET}/v-{fault}/b", "--json"],
                      _env(server, tp.proxy.endpoint, tmp_path))
        asked = list(tp.proxy.identities)
    assert get in asked and f"{get[:-1]}1" in asked, "\n".join(asked) + run.out + run.err  # asked again
    assert run.code == 0, run.out + run.err
    report = __import__("json").loads(run.out)
    assert report["matched"] == 1 and report["different"] == 0, report


# migrate_rollback seed 6 (at full rates, on a loaded machine): a listing page that failed four times in a row
# (500s, a body cut short) ended the run; a listing page is now asked six times, as often as any idempotent
# request, within the same minute
def test_migrate_rollback_seed6_a_listing_page_is_asked_six_times(server: SeaweedFS, tmp_path: Path) -> None:
    raw = server.boto3_client()
    raw.put_object(Bucket=BUCKET, Key="lst/one.txt", Body=b"one")
    with _proxy(server) as tp:  # no faults: what the copy asks to list its source
        first = run_cli(["copy", f"s3://{BUCKET}/lst", str(tmp_path / "first"), "--json"],
                        _env(server, tp.proxy.endpoint, tmp_path))
        page = next(i for i in tp.proxy.identities if "list-type=2" in i and "prefix=lst" in i)
    assert first.code == 0, first.err
    base = page.rsplit("#", 1)[0]
    force = {f"{base}#{n}": kind for n, kind in enumerate(["error", "truncate", "error", "reset_response", "error"])}
    with _proxy(server, statuses=(500,), retry_after=0, force=force) as tp:
        run = run_cli(["copy", f"s3://{BUCKET}/lst", str(tmp_path / "dst"), "--json"],
                      _env(server, tp.proxy.endpoint, tmp_path / "second"))
        asked = [i for i in tp.proxy.identities if i.startswith(base)]
    assert run.code == 0, run.err
    assert asked[:6] == [f"{base}#{n}" for n in range(6)], asked  # five faults, then the answer
    assert (tmp_path / "dst" / "one.txt").read_bytes() == b"one"

