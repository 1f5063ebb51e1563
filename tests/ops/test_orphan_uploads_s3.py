"""A copy aborts the multipart upload an earlier, killed run of the same job left and no run resumes.

Issue 22's scenario against the real SeaweedFS: a copy is killed (SIGKILL)
mid-upload, a copy with ``--no-journal`` sends the object afresh, and the
next normal run, which finds nothing to copy, aborts the first run's upload
(its journal recorded it for this job), says so, and leaves an upload the
journal does not know (another tool's) alone. Checked with boto3.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vertexflow.testing.seaweedfs import SeaweedFS

from ..cli.helpers import vf

pytestmark = [pytest.mark.s3]

MiB = 1024 * 1024


def saved_uploads(journal: Path) -> list[str]:
    """Upload ids in the journal's ``uploads`` table (read-only, while another process writes it)."""
    try:
        db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=1)
        try:
            # an empty id: an upload being created (its id not yet answered)
            return [row[0] for row in db.execute("SELECT upload_id FROM uploads WHERE upload_id != ''")]
        finally:
            db.close()
    except sqlite3.Error:  # not created yet
        return []


def test_a_rerun_aborts_the_upload_its_killed_run_left(tmp_path: Path, s3_env: dict[str, str], s3_bucket: str,
                                                       seaweed: SeaweedFS) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(24 * MiB))  # three 8 MiB parts
    journal = tmp_path / "journal.db"
    args = ["copy", str(src), f"s3://{s3_bucket}/x", "--journal", str(journal), "--json"]
    # 4 MB/s: the upload takes ~6 s, killed once its CreateMultipartUpload is recorded
    proc = subprocess.Popen([sys.executable, "-m", "vertexflow", *args, "--bwlimit", "4M"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not saved_uploads(journal):
            assert proc.poll() is None, f"the copy ended before it could be killed: {proc.communicate()}"
            assert time.monotonic() < deadline, "no upload recorded in the journal"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    raw = seaweed.boto3_client()
    [first] = saved_uploads(journal)
    left = raw.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", [])
    assert [(u["Key"], u["UploadId"]) for u in left] == [("x/big.bin", first)]  # killed: nothing aborted it
    # another tool's upload under the same prefix: the journal does not know it
    foreign = raw.create_multipart_upload(Bucket=s3_bucket, Key="x/other-tool.bin")["UploadId"]

    fresh = vf(*args[:-1], "--no-journal", timeout=300)
    assert fresh.code == 0, fresh.err
    assert raw.head_object(Bucket=s3_bucket, Key="x/big.bin")["ContentLength"] == 24 * MiB

    again = vf(*args, timeout=300)
    assert again.code == 0, again.err
    summary = again.json()
    assert summary["objects"] == 0  # nothing to copy: the upload is no run's to resume
    assert summary["orphan_uploads"]["aborted"] == 1 and summary["orphan_uploads"]["keys"] == ["big.bin"]
    assert "orphan upload aborted" in again.err
    left = raw.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", [])
    assert [(u["Key"], u["UploadId"]) for u in left] == [("x/other-tool.bin", foreign)]
    assert saved_uploads(journal) == []
    raw.abort_multipart_upload(Bucket=s3_bucket, Key="x/other-tool.bin", UploadId=foreign)

    # once done, a run finds nothing to abort and says nothing of it
    last = vf(*args, timeout=300)
    assert last.code == 0, last.err
    assert "orphan_uploads" not in last.json()


@pytest.mark.parametrize("rerun", ["sends the object", "finds nothing to send"])
def test_an_upload_whose_creation_was_never_answered_is_aborted_by_the_next_run(
        tmp_path: Path, s3_env: dict[str, str], s3_bucket: str, seaweed: SeaweedFS, rerun: str) -> None:
    """SIGKILL while CreateMultipartUpload is unanswered: the server made the upload, no one learnt its id.
    The journal noted when it was asked; the next run (resuming the object, or at its end) finds it by
    its key and that time and aborts it."""
    from vertexflow.testing.faults import fault_proxy

    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(12 * MiB))
    journal = tmp_path / "journal.db"
    args = ["copy", str(src), f"s3://{s3_bucket}/c", "--journal", str(journal), "--json"]
    raw = seaweed.boto3_client()
    create = f"POST /{s3_bucket}/c/big.bin?uploads=#0"
    with fault_proxy(int(seaweed.endpoint.rsplit(":", 1)[1]), seed=1, rates={}, delay_seconds=60,
                     force={create: "delay"}) as proxy:  # the same endpoint for both runs: the same destination
        env = {**s3_env, "AWS_ENDPOINT_URL": proxy.endpoint}
        proc = subprocess.Popen([sys.executable, "-m", "vertexflow", *args], env={**os.environ, **env},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 120
            while not raw.list_multipart_uploads(Bucket=s3_bucket).get("Uploads"):
                assert proc.poll() is None, f"the copy ended: {proc.communicate()} {proxy.identities}"
                assert time.monotonic() < deadline, f"no upload created: {proxy.identities}"
                time.sleep(0.05)
            proc.send_signal(signal.SIGKILL)  # its answer held back by the proxy: the id is nowhere but the store
        finally:
            proc.kill()
            proc.wait()
        assert create in proxy.identities
        assert saved_uploads(journal) == []
        [lost] = raw.list_multipart_uploads(Bucket=s3_bucket)["Uploads"]
        if rerun == "finds nothing to send":  # another way put the object there meanwhile
            raw.upload_file(str(src / "big.bin"), s3_bucket, "c/big.bin")
        again = vf(*args, env=env, timeout=300)  # later requests pass straight through
    assert again.code == 0, again.err
    assert again.json()["objects"] == (1 if rerun == "sends the object" else 0)
    assert raw.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == [], lost
    assert raw.head_object(Bucket=s3_bucket, Key="c/big.bin")["ContentLength"] == 12 * MiB
    assert sqlite3.connect(journal).execute("SELECT count(*) FROM uploads").fetchone()[0] == 0


def test_copyto_aborts_the_upload_its_killed_run_left(tmp_path: Path, s3_env: dict[str, str], s3_bucket: str,
                                                      seaweed: SeaweedFS) -> None:
    """The same for ``copyto``, whose destination is the object under its new name: the orphan is found by
    that name, aborted by the run that finds the object already there, and the new name is all that is left."""
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(24 * MiB))
    journal = tmp_path / "journal.db"
    args = ["copyto", str(src), f"s3://{s3_bucket}/renamed/new.bin", "--journal", str(journal), "--json"]
    proc = subprocess.Popen([sys.executable, "-m", "vertexflow", *args, "--bwlimit", "4M"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not saved_uploads(journal):
            assert proc.poll() is None, f"the copy ended before it could be killed: {proc.communicate()}"
            assert time.monotonic() < deadline, "no upload recorded in the journal"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    raw = seaweed.boto3_client()
    [first] = saved_uploads(journal)
    left = raw.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", [])
    assert [(u["Key"], u["UploadId"]) for u in left] == [("renamed/new.bin", first)]

    fresh = vf(*args[:-1], "--no-journal", timeout=300)
    assert fresh.code == 0, fresh.err
    again = vf(*args, timeout=300)
    assert again.code == 0, again.err
    summary = again.json()
    assert summary["objects"] == 0
    assert summary["orphan_uploads"]["aborted"] == 1 and summary["orphan_uploads"]["keys"] == ["big.bin"]
    assert raw.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
    assert saved_uploads(journal) == []
    listed = raw.list_objects_v2(Bucket=s3_bucket, Prefix="renamed/")["Contents"]
    assert [(o["Key"], o["Size"]) for o in listed] == [("renamed/new.bin", 24 * MiB)]


def test_daemon_job_seed255_the_abort_of_a_killed_runs_lost_upload_is_asked_again(
        tmp_path: Path, s3_env: dict[str, str], s3_bucket: str, seaweed: SeaweedFS) -> None:
    """daemon_job seed 255: as above, but the rerun's one AbortMultipartUpload of the lost upload met a 500;
    the rerun sent the object and nothing recorded the upload any more, so it stayed. The abort is now asked
    again like any idempotent request."""
    from vertexflow.testing.faults import fault_proxy

    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(12 * MiB))
    journal = tmp_path / "journal.db"
    args = ["copy", str(src), f"s3://{s3_bucket}/c", "--journal", str(journal), "--json"]
    raw = seaweed.boto3_client()
    create = f"POST /{s3_bucket}/c/big.bin?uploads=#0"
    abort = f"DELETE /{s3_bucket}/c/big.bin?#0"
    with fault_proxy(int(seaweed.endpoint.rsplit(":", 1)[1]), seed=1, rates={}, delay_seconds=60, statuses=(500,),
                     retry_after=0, force={create: "delay", abort: "error"}) as proxy:
        env = {**s3_env, "AWS_ENDPOINT_URL": proxy.endpoint}
        proc = subprocess.Popen([sys.executable, "-m", "vertexflow", *args], env={**os.environ, **env},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 120
            while not raw.list_multipart_uploads(Bucket=s3_bucket).get("Uploads"):
                assert proc.poll() is None, f"the copy ended: {proc.communicate()} {proxy.identities}"
                assert time.monotonic() < deadline, f"no upload created: {proxy.identities}"
                time.sleep(0.05)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
        again = vf(*args, env=env, timeout=300)
        asked = list(proxy.identities)
    assert again.code == 0, again.err
    assert abort in asked and f"{abort[:-1]}1" in asked, asked  # failed once, asked again
    assert raw.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
    assert raw.head_object(Bucket=s3_bucket, Key="c/big.bin")["ContentLength"] == 12 * MiB
