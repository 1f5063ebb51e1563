"""Every stage and every order of stages, to local disk and back, byte for byte."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import blake3
import pytest
import xxhash

from vertexflow.backends.local import LocalBackend
from vertexflow.middleware.stages import TransformedBackend
from vertexflow.model import body_from_bytes
from vertexflow.transforms import Stages
from vertexflow.transforms.chunking import Manifest

from .helpers import CHUNK, ORDERS, copy_all, info, make_stage_tree, round_trip, stages_for, stored_keys


@pytest.mark.parametrize("order", ORDERS)
async def test_every_order_round_trips(tmp_path: Path, order: str) -> None:
    view, up = await round_trip(LocalBackend(tmp_path / "stored"), stages_for(order), tmp_path)
    keys = await stored_keys(LocalBackend(tmp_path / "stored"))
    names = order.split(",")
    if "compress" in names:
        assert not any(k.startswith("media/photo.jpg.zst") for k in keys)  # already compressed: not again
        assert "archive.gz.zst" in keys  # a codec suffix is never stored as is
        assert view.counters.skipped == {"jpeg": 1, "mp4": 1}
        assert up.reporters == {}  # only wrap() registers counters with a job
    if names == ["compress", "chunk"] or names[-2:] == ["compress", "chunk"]:
        assert "text/notes.txt.zst.vfchunk/manifest.json" in keys
    if "chunk" in names and "compress" in names and names.index("chunk") < names.index("compress"):
        assert "text/notes.txt.vfchunk/manifest.json" in keys
        assert any(k.startswith("text/notes.txt.vfchunk/") and k.endswith(".zst") for k in keys)
    if names == ["chunk"]:
        assert "tiny.txt" in keys  # within one part: stored as it is
        # exactly two parts' worth: two parts, no empty third
        assert len([k for k in keys if k.startswith("exact.bin.vfchunk/")]) == 3


@pytest.mark.parametrize("order", ["compress", "compress,chunk", "chunk,compress"])
async def test_gzip_round_trips(tmp_path: Path, order: str) -> None:
    await round_trip(LocalBackend(tmp_path / "stored"), stages_for(order, codec="gzip:6"), tmp_path)
    assert any(k.endswith(".gz") for k in await stored_keys(LocalBackend(tmp_path / "stored")))


async def test_put_returns_every_digest_of_the_content(tmp_path: Path) -> None:
    data = b"x" * 300_000 + bytes(range(256)) * 100
    for order in ("hash", "hash,compress,chunk", "chunk,compress,hash", "compress,hash"):
        view = TransformedBackend(LocalBackend(tmp_path / order), stages_for(order))
        result = await view.put(info("obj", len(data)), body_from_bytes(data))
        assert result.size == len(data)
        assert result.hashes["sha256"] == hashlib.sha256(data).hexdigest()
        if order.startswith("hash"):
            assert result.hashes["md5"] == hashlib.md5(data).hexdigest()
            assert result.hashes["blake3"] == blake3.blake3(data).hexdigest()
            assert result.hashes["xxh128"] == xxhash.xxh128(data).hexdigest()


async def test_manifest_records_sizes_and_hashes(tmp_path: Path) -> None:
    files = make_stage_tree(tmp_path / "src")
    stored = tmp_path / "stored"
    await copy_all(LocalBackend(tmp_path / "src"), TransformedBackend(LocalBackend(stored), stages_for("hash,chunk")))
    manifest = Manifest.from_json((stored / "rand.bin.vfchunk" / "manifest.json").read_bytes())
    data = files["rand.bin"]
    assert manifest.key == "rand.bin" and manifest.size == len(data) and manifest.encoding == ()
    assert manifest.hashes["sha256"] == hashlib.sha256(data).hexdigest()
    assert manifest.hashes["md5"] == hashlib.md5(data).hexdigest()
    assert [p.size for p in manifest.parts] == [CHUNK, CHUNK, CHUNK, len(data) - 3 * CHUNK]
    for i, part in enumerate(manifest.parts):
        part_bytes = (stored / "rand.bin.vfchunk" / part.key).read_bytes()
        assert part_bytes == data[i * CHUNK:(i + 1) * CHUNK]
        assert part.sha256 == hashlib.sha256(part_bytes).hexdigest()
    doc = json.loads((stored / "rand.bin.vfchunk" / "manifest.json").read_bytes())
    assert doc["format"] == "vertexflow.chunked" and doc["version"] == 1


async def test_compress_then_chunk_records_the_codec(tmp_path: Path) -> None:
    files = make_stage_tree(tmp_path / "src")
    stored = tmp_path / "stored"
    await copy_all(LocalBackend(tmp_path / "src"),
                   TransformedBackend(LocalBackend(stored), stages_for("compress,hash,chunk")))
    manifest = Manifest.from_json((stored / "text/notes.txt.zst.vfchunk/manifest.json").read_bytes())
    assert manifest.encoding == ("zstd",) and manifest.size == len(files["text/notes.txt"])
    assert manifest.stream_size < manifest.size  # the parts hold compressed bytes
    assert all(p.size <= CHUNK for p in manifest.parts)
    # hash after compress digests the compressed stream: the parts joined
    joined = b"".join((stored / "text/notes.txt.zst.vfchunk" / p.key).read_bytes() for p in manifest.parts)
    assert set(manifest.stream_hashes) == {"sha256", "md5", "blake3", "xxh128"}
    assert manifest.stream_hashes["sha256"] == hashlib.sha256(joined).hexdigest()


async def test_hash_after_chunk_records_each_part(tmp_path: Path) -> None:
    files = make_stage_tree(tmp_path / "src")
    stored = tmp_path / "stored"
    await copy_all(LocalBackend(tmp_path / "src"), TransformedBackend(LocalBackend(stored), stages_for("chunk,hash")))
    manifest = Manifest.from_json((stored / "rand.bin.vfchunk/manifest.json").read_bytes())
    data = files["rand.bin"]
    for i, part in enumerate(manifest.parts):
        assert part.hashes["md5"] == hashlib.md5(data[i * CHUNK:(i + 1) * CHUNK]).hexdigest()


async def test_compress_force_compresses_media(tmp_path: Path) -> None:
    make_stage_tree(tmp_path / "src")
    stored = LocalBackend(tmp_path / "stored")
    stages = Stages.from_options(compress="zstd:1", force_compress=True)
    view = TransformedBackend(stored, stages)
    await copy_all(LocalBackend(tmp_path / "src"), view)
    assert "media/photo.jpg.zst" in await stored_keys(stored)
    assert not view.counters.skipped


async def test_reupload_replaces_parts_and_removes_stale_ones(tmp_path: Path) -> None:
    stored = LocalBackend(tmp_path / "stored")
    view = TransformedBackend(stored, stages_for("chunk"))
    await view.put(info("big", 5 * CHUNK), body_from_bytes(b"a" * 5 * CHUNK))
    await view.put(info("big", 2 * CHUNK + 1), body_from_bytes(b"b" * (2 * CHUNK + 1)))
    keys = await stored_keys(stored)
    assert len(keys) == 4 and "big.vfchunk/manifest.json" in keys  # 3 parts of the new upload only
    async with view.open("big") as chunks:
        assert b"".join([c async for c in chunks]) == b"b" * (2 * CHUNK + 1)


async def test_listing_stat_and_ranges_speak_of_objects(tmp_path: Path) -> None:
    files = make_stage_tree(tmp_path / "src")
    stored = LocalBackend(tmp_path / "stored")
    view = TransformedBackend(stored, stages_for("compress,chunk"))
    await copy_all(LocalBackend(tmp_path / "src"), view)
    st = await view.stat("text/notes.txt")
    assert st.key == "text/notes.txt" and st.size is None
    assert (await view.stat("media/photo.jpg")).version.startswith(".vfchunk/manifest.json|")  # chunked, not compressed
    compressed_only = TransformedBackend(LocalBackend(tmp_path / "stored2"), stages_for("compress"))
    await copy_all(LocalBackend(tmp_path / "src"), compressed_only)
    assert (await compressed_only.stat("media/photo.jpg")).size == len(files["media/photo.jpg"])  # stored as is
    data = files["text/notes.txt"]
    async with view.open("text/notes.txt", offset=100_000, length=70_000) as chunks:
        assert b"".join([c async for c in chunks]) == data[100_000:170_000]
    listed = {i.key: i async for i in view.list("text/")}
    assert sorted(listed) == ["text/notes.txt", "text/repetitive.log"]
    async with view.open("text/notes.txt", if_version=listed["text/notes.txt"].version) as chunks:
        assert b"".join([c async for c in chunks]) == data


async def test_delete_removes_every_stored_piece(tmp_path: Path) -> None:
    make_stage_tree(tmp_path / "src")
    stored = LocalBackend(tmp_path / "stored")
    view = TransformedBackend(stored, stages_for("compress,chunk"))
    await copy_all(LocalBackend(tmp_path / "src"), view)
    for key in ("text/notes.txt", "media/photo.jpg", "tiny.txt"):
        await view.delete(key)
    keys = await stored_keys(stored)
    assert not any(k.startswith(("text/notes", "media/photo", "tiny")) for k in keys)
    assert "rand.bin.zst.vfchunk/manifest.json" in keys


async def test_reserved_keys_are_refused(tmp_path: Path) -> None:
    (tmp_path / "src" / "x.vfchunk").mkdir(parents=True)
    (tmp_path / "src" / "x.vfchunk" / "y").write_bytes(b"data")
    view = TransformedBackend(LocalBackend(tmp_path / "stored"), stages_for("chunk"))
    from vertexflow.ops.copy import CopyJob, CopyOptions

    stats = await CopyJob(LocalBackend(tmp_path / "src"), view, CopyOptions()).run()
    assert stats.failures_by_reason == {"invalid_key": 1}


async def test_chunk_size_over_the_destinations_limit_is_refused(tmp_path: Path) -> None:
    from dataclasses import replace

    from vertexflow.errors import ConfigError

    class Limited(LocalBackend):
        features = replace(LocalBackend.features, max_object_size=1024 * 1024)

    with pytest.raises(ConfigError, match="over .* limit of 1048576 bytes per object"):
        TransformedBackend(Limited(tmp_path), Stages.from_options(chunk_size=2 * 1024 * 1024))
    view = TransformedBackend(Limited(tmp_path), Stages.from_options(chunk_size=1024 * 1024))
    assert view.features.max_object_size is None  # parts fit: any size goes
