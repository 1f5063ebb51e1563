"""What describes the bytes survives a copy: the table of docs/fidelity.md, checked pair by pair.

Every copy runs as a job does (a :class:`~vertexflow.ops.spec.TransferSpec`
through :class:`~vertexflow.ops.assembly.Transfer`) between a local
directory, SeaweedFS (the suite's, and a second one with other credentials
for copies across endpoints) and the Yandex.Disk emulator; what arrived is
read back with boto3, yadisk and ``os.stat``, never through vertexflow.

Bodies are plain text, which SeaweedFS would store as ``text/plain`` were no
Content-Type sent (it sniffs the body): a ``video/mp4`` read back proves that
vertexflow sent it.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yadisk

from vertexflow.backends.base import Backend
from vertexflow.model import mtime_text, parse_mtime_text
from vertexflow.ops.assembly import Transfer, sync_options
from vertexflow.ops.spec import TransferSettings, TransferSpec
from vertexflow.pipeline.runner import StopSignal
from vertexflow.pipeline.stats import JobStats
from vertexflow.testing.seaweedfs import SeaweedFS
from vertexflow.testing.yandex_disk import YandexDiskEmulator, running_emulator

from ..cli.helpers import vf

pytestmark = pytest.mark.s3

DOC = Path(__file__).resolve().parents[2] / "docs" / "fidelity.md"
TOKEN = "fidelity-token"
MiB = 1024 * 1024

# -- the table ---------------------------------------------------------------------------------
#: yes: the destination has the source's; no: it has not (a footnote says why); own: the
#: destination sets its own (Yandex.Disk names the type from the file name); -: nothing at the
#: source to keep, or no place for it at the destination
ASPECTS = ("Content-Type", "headers", "user metadata", "mtime", "tags")
FIDELITY: dict[str, tuple[str, str, str, str, str]] = {
    "Local -> Local": ("-", "-", "-", "yes", "-"),
    "Local -> S3": ("yes", "-", "-", "yes", "-"),
    "Local -> Yandex.Disk": ("own", "-", "-", "yes", "-"),
    "S3 -> Local": ("-", "-", "-", "yes", "-"),
    "S3 -> S3, same endpoint (server-side)": ("yes", "yes", "yes", "yes", "yes"),
    "S3 -> S3, other endpoint (streamed)": ("yes", "yes", "yes", "yes", "yes"),
    "S3 -> Yandex.Disk": ("own", "-", "yes", "yes", "-"),
    "Yandex.Disk -> Local": ("-", "-", "-", "yes", "-"),
    "Yandex.Disk -> S3": ("yes", "-", "yes", "yes", "-"),
    "Yandex.Disk -> Yandex.Disk (server-side)": ("own", "-", "yes", "yes", "-"),
}


def table() -> str:
    """FIDELITY as the Markdown table docs/fidelity.md shows."""
    lines = ["| source -> destination | " + " | ".join(ASPECTS) + " |",
             "| --- |" + " --- |" * len(ASPECTS)]
    lines += [f"| {pair} | " + " | ".join(claims) + " |" for pair, claims in FIDELITY.items()]
    return "\n".join(lines)


def test_the_doc_shows_this_table() -> None:
    assert table() in DOC.read_text(), f"docs/fidelity.md must hold, as it is:\n{table()}"


# -- the source object and what describes it ------------------------------------------------------
KEY = "clip.mp4"
#: text: SeaweedFS would store text/plain, were no Content-Type sent
BODY = b"plain text, not a video at all\n" * 40
#: the source's mtime, where the source keeps one of its own (local disk, S3)
MTIME = datetime(2021, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
EXPIRES = "Wed, 01 Jan 2031 00:00:00 GMT"
HEADERS = {"CacheControl": "max-age=60", "ContentDisposition": 'attachment; filename="clip.mp4"',
           "ContentLanguage": "en", "Expires": datetime(2031, 1, 1, tzinfo=UTC)}
OWNER = {"owner": "company-7"}
#: a space and a '+' in a value: the x-amz-tagging header is URL-encoded
TAGS = {"team": "render", "stage": "final cut+1"}
TAGGING = "team=render&stage=final%20cut%2B1"


@dataclass
class Stores:
    tmp: Path
    seaweed: SeaweedFS
    other: SeaweedFS
    bucket: str
    other_bucket: str
    emulator: YandexDiskEmulator
    disk: yadisk.AsyncClient
    config: Path


@pytest.fixture(scope="module")
def other_seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """A second S3 store with other credentials: copies to it cannot be server-side."""
    with SeaweedFS(tmp_path_factory.mktemp("second"), access_key="second", secret_key="second-secret") as other:
        yield other


@pytest.fixture
async def stores(tmp_path: Path, seaweed: SeaweedFS, s3_bucket: str, other_seaweed: SeaweedFS,
                 monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Stores]:
    other_bucket = f"{s3_bucket}-b"
    other_seaweed.create_bucket(other_bucket)
    async with running_emulator(token=TOKEN) as emu:
        monkeypatch.setattr(yadisk.settings, "BASE_API_URL", emu.origin)
        config = tmp_path / "remotes.toml"
        config.write_text(f"""
[remotes.a]
type = "s3"
endpoint = "{seaweed.endpoint}"
region = "{seaweed.region}"
access_key_id = "{seaweed.access_key}"
secret_access_key = "{seaweed.secret_key}"
addressing_style = "path"

[remotes.b]
type = "s3"
endpoint = "{other_seaweed.endpoint}"
region = "{other_seaweed.region}"
access_key_id = "{other_seaweed.access_key}"
secret_access_key = "{other_seaweed.secret_key}"
addressing_style = "path"

[remotes.yd]
type = "yandex_disk"
token = "{TOKEN}"
base_url = "{emu.base_url}"
root = "/"
""")
        async with yadisk.AsyncClient(token=TOKEN, session="aiohttp") as disk:
            yield Stores(tmp_path, seaweed, other_seaweed, s3_bucket, other_bucket, emu, disk, config)
    other_seaweed.delete_bucket_recursive(other_bucket)


@dataclass
class Source:
    location: str
    content_type: str | None
    headers: dict[str, str]
    metadata: dict[str, str]
    mtime: datetime
    tags: dict[str, str]


async def make_source(s: Stores, kind: str, key: str = KEY, body: bytes = BODY) -> Source:
    """One object at the source, described as fully as the store allows."""
    if kind == "Local":
        path = s.tmp / "src" / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
        ns = int(MTIME.timestamp()) * 10**9 + MTIME.microsecond * 1000
        os.utime(path, ns=(ns, ns))
        return Source(str(s.tmp / "src"), "video/mp4", {}, {}, MTIME, {})
    if kind == "S3":
        text = mtime_text(MTIME)
        assert text is not None
        s.seaweed.boto3_client().put_object(Bucket=s.bucket, Key=f"src/{key}", Body=body, ContentType="video/mp4",
                                            Metadata={**OWNER, "mtime": text}, Tagging=TAGGING,
                                            **HEADERS)  # type: ignore[arg-type]
        return Source(f"a:{s.bucket}/src", "video/mp4",
                      {"cache-control": "max-age=60", "content-disposition": 'attachment; filename="clip.mp4"',
                       "content-language": "en", "expires": EXPIRES}, dict(OWNER), MTIME, dict(TAGS))
    assert kind == "Yandex.Disk"
    await s.disk.makedirs("/src")
    await s.disk.upload(io.BytesIO(body), f"/src/{key}")
    await s.disk.patch(f"/src/{key}", dict(OWNER))
    meta = await s.disk.get_meta(f"/src/{key}")
    # the emulator names the type from the file name, as the service does; no mtime of its own: modified
    return Source("yd:src", meta.mime_type, {}, dict(OWNER), meta.modified, {})


def destination(s: Stores, kind: str, variant: str) -> str:
    if kind == "Local":
        return str(s.tmp / "dst")
    if kind == "S3":
        return f"b:{s.other_bucket}/dst" if "other endpoint" in variant else f"a:{s.bucket}/dst"
    return "yd:dst"


@dataclass
class Arrived:
    content_type: str | None
    headers: dict[str, str]
    metadata: dict[str, str]
    mtime: datetime | None
    tags: dict[str, str]


def tags_of(server: SeaweedFS, bucket: str, key: str) -> dict[str, str]:
    """The object's tags, read with boto3."""
    answer = server.boto3_client().get_object_tagging(Bucket=bucket, Key=key)
    return {t["Key"]: t["Value"] for t in answer["TagSet"]}


async def read_back(s: Stores, kind: str, variant: str, key: str = KEY) -> Arrived:
    """What the destination holds, read with boto3 / yadisk / os.stat."""
    if kind == "Local":
        st = os.stat(s.tmp / "dst" / key)
        return Arrived(None, {}, {}, datetime.fromtimestamp(st.st_mtime_ns // 1000 / 1e6, UTC), {})
    if kind == "S3":
        server, bucket = (s.other, s.other_bucket) if "other endpoint" in variant else (s.seaweed, s.bucket)
        head = server.boto3_client().head_object(Bucket=bucket, Key=f"dst/{key}")
        headers = {name: head[field] for field, name in (("CacheControl", "cache-control"),
                                                         ("ContentDisposition", "content-disposition"),
                                                         ("ContentLanguage", "content-language")) if field in head}
        if "expires" in head["ResponseMetadata"]["HTTPHeaders"]:
            headers["expires"] = head["ResponseMetadata"]["HTTPHeaders"]["expires"]
        return Arrived(head.get("ContentType"), headers, head["Metadata"],
                       parse_mtime_text(head["Metadata"].get("mtime")), tags_of(server, bucket, f"dst/{key}"))
    meta = await s.disk.get_meta(f"/dst/{key}")
    props = dict(meta.custom_properties or {})
    return Arrived(meta.mime_type, {}, props, parse_mtime_text(props.get("mtime")) or meta.modified, {})


async def copy(s: Stores, src: str, dst: str, **settings: Any) -> tuple[JobStats, dict[str, int]]:
    """Run ``copy SRC DST`` as a job; returns its stats and the requests each bare backend sent."""
    spec = TransferSpec(source=src, dest=dst, config_path=str(s.config), settings=TransferSettings(**settings))
    stats = JobStats()
    ends: list[Backend] = []
    await Transfer.prepare(spec).run(stats, StopSignal(), on_open=lambda a, b: ends.extend((a, b)))
    assert not stats.failed_objects, stats.summary()
    return stats, {"src": ends[0].requests, "dst": ends[1].requests}


def _same_time(a: datetime | None, b: datetime) -> bool:
    return a is not None and abs((a - b).total_seconds()) < 1e-3


@pytest.mark.parametrize("pair", list(FIDELITY))
async def test_each_pair_keeps_what_the_table_says(stores: Stores, pair: str) -> None:
    s = stores
    src_kind, _, rest = pair.partition(" -> ")
    dst_kind = re.split(r"[ ,]+(?:same|other|\()", rest)[0]
    source = await make_source(s, src_kind)
    await copy(s, source.location, destination(s, dst_kind, pair))
    got = await read_back(s, dst_kind, pair)
    claims = dict(zip(ASPECTS, FIDELITY[pair], strict=True))

    def check(aspect: str, kept: bool) -> None:
        claim = claims[aspect]
        if claim == "yes":
            assert kept, f"{pair}: {aspect} should be kept: {got}"
        elif claim.startswith("no"):
            assert not kept, f"{pair}: {aspect} is kept now: update the table"

    check("Content-Type", got.content_type == source.content_type)
    check("headers", bool(source.headers) and got.headers == source.headers)
    check("user metadata", all(got.metadata.get(k) == v for k, v in source.metadata.items()) and bool(source.metadata))
    check("mtime", _same_time(got.mtime, source.mtime))
    check("tags", bool(source.tags) and got.tags == source.tags)


# -- multipart, options, cost -------------------------------------------------------------------------
async def test_s3_to_s3_streamed_multipart_keeps_everything(stores: Stores) -> None:
    s = stores
    big = b"plain text in a multipart object\n" * (9 * MiB // 33)  # over the 8 MiB multipart threshold
    source = await make_source(s, "S3", key="big.mp4", body=big)
    client = s.seaweed.boto3_client()
    # the source itself multipart: CopyObject of itself in parts is not needed, a fresh multipart upload is
    client.delete_object(Bucket=s.bucket, Key="src/big.mp4")
    upload = client.create_multipart_upload(Bucket=s.bucket, Key="src/big.mp4", ContentType="video/mp4",
                                            Metadata={**OWNER, "mtime": mtime_text(MTIME) or ""}, Tagging=TAGGING,
                                            **HEADERS)
    part = client.upload_part(Bucket=s.bucket, Key="src/big.mp4", UploadId=upload["UploadId"], PartNumber=1,
                              Body=big)
    client.complete_multipart_upload(Bucket=s.bucket, Key="src/big.mp4", UploadId=upload["UploadId"],
                                     MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    await copy(s, source.location, f"b:{s.other_bucket}/dst")
    got = await read_back(s, "S3", "other endpoint", key="big.mp4")
    assert got.content_type == "video/mp4"
    assert got.headers == source.headers
    assert got.metadata["owner"] == "company-7"
    assert _same_time(got.mtime, MTIME)
    assert got.tags == TAGS


async def test_local_to_s3_multipart_sends_content_type_and_mtime(stores: Stores) -> None:
    s = stores
    source = await make_source(s, "Local", key="big.webm", body=b"plain text in a big file\n" * (9 * MiB // 25))
    await copy(s, source.location, f"a:{s.bucket}/dst")
    head = s.seaweed.boto3_client().head_object(Bucket=s.bucket, Key="dst/big.webm")
    assert head["ContentType"] == "video/webm"
    assert _same_time(parse_mtime_text(head["Metadata"].get("mtime")), MTIME)


@pytest.mark.parametrize("variant", ["same endpoint", "other endpoint"])
async def test_metadata_set_goes_over_what_is_carried(stores: Stores, variant: str) -> None:
    s = stores
    source = await make_source(s, "S3")
    stats, _ = await copy(s, source.location, destination(s, "S3", variant),
                          metadata_set=("cache-control=no-cache", "team=render", "Content-Type=video/x-test"))
    assert stats.server_side_copies == (1 if variant == "same endpoint" else 0)
    got = await read_back(s, "S3", variant)
    assert got.content_type == "video/x-test"
    assert got.headers["cache-control"] == "no-cache"
    assert got.headers["content-language"] == "en"  # the rest still carried
    assert got.metadata["team"] == "render" and got.metadata["owner"] == "company-7"
    assert _same_time(got.mtime, MTIME)
    assert got.tags == TAGS  # server-side: the metadata replaced, the tags copied (TaggingDirective COPY)


@pytest.mark.parametrize("variant", ["same endpoint", "other endpoint"])
async def test_no_metadata_carries_none(stores: Stores, variant: str) -> None:
    s = stores
    source = await make_source(s, "S3")
    await copy(s, source.location, destination(s, "S3", variant), metadata=False)
    got = await read_back(s, "S3", variant)
    assert got.content_type != "video/mp4" and got.headers == {}
    assert "owner" not in got.metadata and "mtime" not in got.metadata
    assert got.tags == {}


async def test_no_metadata_from_local_sends_no_type(stores: Stores) -> None:
    s = stores
    source = await make_source(s, "Local")
    await copy(s, source.location, f"a:{s.bucket}/dst", metadata=False)
    head = s.seaweed.boto3_client().head_object(Bucket=s.bucket, Key=f"dst/{KEY}")
    assert head["ContentType"] != "video/mp4"  # the server's own guess from the text
    assert "mtime" not in head["Metadata"]


async def test_requests_per_object(stores: Stores) -> None:
    """local -> S3: one PutObject each, as before; S3 -> S3 across endpoints: GET, PUT (the GetObject answer
    describes the object: no HeadObject for a small one)."""
    s = stores
    n = 20
    for i in range(n):
        path = s.tmp / "many" / f"f{i:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"text %d\n" % i)
    _, up = await copy(s, str(s.tmp / "many"), f"a:{s.bucket}/many")
    _, up_plain = await copy(s, str(s.tmp / "many"), f"a:{s.bucket}/many-plain", metadata=False)
    assert up["dst"] == up_plain["dst"] <= n + 3  # the PUTs, a listing page, HeadBucket
    _, across = await copy(s, f"a:{s.bucket}/many", f"b:{s.other_bucket}/many")
    _, across_plain = await copy(s, f"a:{s.bucket}/many", f"b:{s.other_bucket}/many-plain", metadata=False)
    assert across["src"] == across_plain["src"] <= n + 3  # the GETs, a listing page, HeadBucket: no HeadObject
    assert across["dst"] == across_plain["dst"]
    head = s.other.boto3_client().head_object(Bucket=s.other_bucket, Key="many/f03.png")
    assert head["ContentType"] == "image/png"


def test_metadata_options_make_another_job() -> None:
    base = TransferSpec(source="/a", dest="/b")
    plain = TransferSpec(source="/a", dest="/b", settings=TransferSettings(metadata=False))
    stamped = TransferSpec(source="/a", dest="/b", settings=TransferSettings(metadata_set=("owner=x",)))
    prints = [sync_options(spec, local_only=True).fingerprint() for spec in (base, plain, stamped)]
    assert prints[0] != prints[1] != prints[2] != prints[0]
    assert "stages" not in prints[0]  # unchanged for jobs that ask for nothing: older jobs still match
    assert TransferSpec.from_dict(stamped.to_dict()).settings == stamped.settings


def test_bad_metadata_set_exits_2(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    r = vf("copy", str(tmp_path / "src"), str(tmp_path / "dst"), "--metadata-set", "owner")
    assert r.code == 2
    assert "--metadata-set 'owner'" in r.err and "KEY=VALUE" in r.err


async def test_server_side_multipart_copy_gives_the_description_again(stores: Stores) -> None:
    """Above one CopyObject's limit the copy is a multipart upload, which copies no metadata by itself."""
    from vertexflow.backends.s3 import S3Backend

    s = stores
    big = b"plain text, copied in parts on the server\n" * (11 * MiB // 42)
    await make_source(s, "S3", key="big.mp4", body=big)
    creds = {"endpoint_url": s.seaweed.endpoint, "region": s.seaweed.region,
             "access_key_id": s.seaweed.access_key, "secret_access_key": s.seaweed.secret_key}
    async with S3Backend(s.bucket, "src", **creds) as src, S3Backend(s.bucket, "dst", **creds) as dst:
        dst.single_copy_limit = dst.copy_part_size = 5 * MiB
        info = await src.stat("big.mp4")
        await dst.server_copy(src, info, "big.mp4")
    got = await read_back(s, "S3", "same endpoint", key="big.mp4")
    assert got.content_type == "video/mp4"
    assert got.headers["cache-control"] == "max-age=60" and got.headers["content-language"] == "en"
    assert got.metadata["owner"] == "company-7"
    assert _same_time(got.mtime, MTIME)
    assert got.tags == TAGS  # CreateMultipartUpload is given them: UploadPartCopy copies bytes only


async def test_an_mtime_rclone_wrote_is_restored_on_download(stores: Stores) -> None:
    s = stores
    # rclone keeps nanoseconds: nine digits after the point
    s.seaweed.boto3_client().put_object(Bucket=s.bucket, Key="src/r.bin", Body=b"by rclone",
                                        Metadata={"mtime": "1620284889.123456789"})
    await copy(s, f"a:{s.bucket}/src", str(s.tmp / "dst"))
    assert os.stat(s.tmp / "dst" / "r.bin").st_mtime_ns // 1000 == 1620284889_123456


async def test_local_to_yandex_and_back_keeps_the_file_mtime(stores: Stores) -> None:
    s = stores
    source = await make_source(s, "Local")
    await copy(s, source.location, "yd:kept")
    assert (await s.disk.get_meta(f"/kept/{KEY}")).custom_properties["mtime"] == mtime_text(MTIME)
    await copy(s, "yd:kept", str(s.tmp / "back"))
    assert os.stat(s.tmp / "back" / KEY).st_mtime_ns // 1000 == int(MTIME.timestamp()) * 10**6 + MTIME.microsecond


async def test_no_metadata_single_object_from_s3_carries_no_user_metadata(stores: Stores) -> None:
    """A single object is found by a stat, which knows its metadata: --no-metadata still carries none."""
    s = stores
    await make_source(s, "S3")
    await copy(s, f"a:{s.bucket}/src/{KEY}", f"b:{s.other_bucket}/dst", metadata=False)
    got = await read_back(s, "S3", "other endpoint")
    assert "owner" not in got.metadata and "mtime" not in got.metadata and got.headers == {}


# -- tags -------------------------------------------------------------------------------------------
async def test_tags_over_s3_limits_fail_the_object_and_write_nothing(stores: Stores) -> None:
    """SeaweedFS keeps 11 tags given in x-amz-tagging (it refuses them only in PutObjectTagging):
    copied to another endpoint they are checked before anything is sent."""
    s = stores
    s.seaweed.boto3_client().put_object(Bucket=s.bucket, Key="src/eleven.bin", Body=b"eleven tags",
                                        Tagging="&".join(f"k{i}=v" for i in range(11)))
    s.seaweed.boto3_client().put_object(Bucket=s.bucket, Key="src/fine.bin", Body=b"two tags", Tagging=TAGGING)
    spec = TransferSpec(source=f"a:{s.bucket}/src", dest=f"b:{s.other_bucket}/dst", config_path=str(s.config))
    stats = JobStats()
    await Transfer.prepare(spec).run(stats, StopSignal())
    assert [(f.key, f.reason) for f in stats.failures] == [("eleven.bin", "invalid_tags")]
    assert "11 tags, S3 keeps at most 10" in stats.failures[0].message
    listed = s.other.boto3_client().list_objects_v2(Bucket=s.other_bucket, Prefix="dst/")
    assert [o["Key"] for o in listed.get("Contents", [])] == ["dst/fine.bin"]
    assert tags_of(s.other, s.other_bucket, "dst/fine.bin") == TAGS


async def test_tags_cost_one_request_per_tagged_object_across_endpoints(stores: Stores) -> None:
    """The source's answer counts an object's tags: an untagged object costs nothing more, a tagged
    one GET + GetObjectTagging + PUT, and only where the destination keeps tags (not to local disk)."""
    s = stores
    client = s.seaweed.boto3_client()
    n = 12
    for i in range(n):
        client.put_object(Bucket=s.bucket, Key=f"plain/p{i:02d}.bin", Body=b"plain %d" % i)
        client.put_object(Bucket=s.bucket, Key=f"tagged/t{i:02d}.bin", Body=b"tagged %d" % i, Tagging=TAGGING)
    _, plain = await copy(s, f"a:{s.bucket}/plain", f"b:{s.other_bucket}/plain")
    _, tagged = await copy(s, f"a:{s.bucket}/tagged", f"b:{s.other_bucket}/tagged")
    _, down = await copy(s, f"a:{s.bucket}/tagged", str(s.tmp / "down"))
    assert tagged["src"] - plain["src"] == n  # one GetObjectTagging per tagged object, nothing else
    assert tagged["dst"] == plain["dst"]  # the tags ride on the PutObject
    assert down["src"] == plain["src"]  # local disk keeps no tags: none is read
    assert tags_of(s.other, s.other_bucket, "tagged/t05.bin") == TAGS
    assert tags_of(s.other, s.other_bucket, "plain/p05.bin") == {}
