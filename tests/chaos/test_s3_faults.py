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

import pytest

from vertexflow.testing.faults import ThreadedFaultProxy
from vertexflow.testing.killer import check_exit_status, run_cli
from vertexflow.testing.seaweedfs import SeaweedFS

pytestmark = [pytest.mark.s3]

BUCKET = "faults"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    with SeaweedFS(tmp_path_factory.mktemp("seaweedfs")) as s:
        s.create_bucket(BUCKET)
        yield s


def _proxy(server: SeaweedFS, **kwargs: object) -> ThreadedFaultProxy:
    return ThreadedFaultProxy(int(server.endpoint.rsplit(":", 1)[1]), seed=0, rates={}, **kwargs)


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
