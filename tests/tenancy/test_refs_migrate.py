"""A migration checks the platform's file references on its target before it switches.

A reference that would dangle on the new route fails the migration as a failed verification does:
the company stays where it was, the record is ``rolled_back`` and its message names the first
dangling reference. Files on the target are checked with boto3.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vertexflow.errors import MigrationFailed
from vertexflow.ops.migrate import migrate_company
from vertexflow.ops.refs import check_references
from vertexflow.testing.seaweedfs import SeaweedFS

from .conftest import make_manager, minio_conn
from .test_refs import _db, content, local_put, raw_config


@pytest.mark.s3
async def test_a_migration_that_would_leave_a_reference_dangling_is_refused(
        tmp_path: Path, seaweed2: SeaweedFS, bucket2: str) -> None:
    raw = raw_config(tmp_path, connections={"minio-b": minio_conn(seaweed2, bucket2)})
    async with make_manager(tmp_path, raw) as m:
        acme = m.registry.add_company("acme")
        db = _db(tmp_path / "platform.db")
        put = local_put(tmp_path / "files")
        for i in range(4):
            await put(f"portraits/acme/cats/Image/p{i}.jpg", b"p" * i)
            db.execute("INSERT INTO portraits (company_id, image_path) VALUES (?, ?)", (acme.id, f"cats/Image/p{i}.jpg"))
        gone = db.execute("INSERT INTO portraits (company_id, image_path) VALUES (?, 'cats/Image/gone.jpg')",
                          (acme.id,)).lastrowid
        with pytest.raises(MigrationFailed) as failed:
            await migrate_company(m, "acme", "minio-b")
        message = str(failed.value)
        assert message.startswith("reference check of company acme on minio-b:portraits/acme failed: 1 references "
                                  f"would dangle there (first: portraits.image_path row {gone}: cats/Image/gone.jpg: "
                                  "missing)")
        assert m.registry.company("acme").storage_type == "default"  # the company stays
        record = m.registry.migrations(acme.id)[-1]
        assert record.state == "rolled_back" and record.message == message
        assert (await m.get_company_adapter(acme.id, "portraits")).describe() == "local:portraits/acme"

        db.execute("DELETE FROM portraits WHERE id = ?", (gone,))
        result = await migrate_company(m, "acme", "minio-b")
        assert result.state == "switched"
        after = await check_references(m, "acme")
    assert after.ok and content(after, "acme", "portraits").where == "minio-b:portraits/acme"
    assert content(after, "acme", "portraits").referenced == 4
    keys = {o["Key"] for o in seaweed2.boto3_client().list_objects_v2(Bucket=bucket2)["Contents"]}
    assert {f"portraits/acme/cats/Image/p{i}.jpg" for i in range(4)} <= keys
