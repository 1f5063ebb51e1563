"""Fixtures shared by the whole suite.

The S3 server is a real SeaweedFS started once per session on 127.0.0.1
(``vertexflow.testing.seaweedfs``); each test that needs a bucket gets a
fresh one.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest

from vertexflow.testing.seaweedfs import SeaweedFS

_bucket_ids = itertools.count()


@pytest.fixture(scope="session", autouse=True)
def session_journal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A journal for what starts before a test's own (module-scoped daemons): never the user's journal."""
    path = str(tmp_path_factory.mktemp("session-journal") / "journal.db")
    saved = os.environ.get("VERTEXFLOW_JOURNAL")
    os.environ["VERTEXFLOW_JOURNAL"] = path
    yield path
    if saved is None:
        os.environ.pop("VERTEXFLOW_JOURNAL", None)
    else:
        os.environ["VERTEXFLOW_JOURNAL"] = saved


@pytest.fixture(autouse=True)
def private_journal(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test gets its own journal (and CLI subprocesses inherit it)."""
    path = str(tmp_path_factory.mktemp("journal") / "journal.db")
    monkeypatch.setenv("VERTEXFLOW_JOURNAL", path)
    return path


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    with SeaweedFS(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture
def s3_bucket(seaweed: SeaweedFS) -> Iterator[str]:
    with seaweed.temporary_bucket(f"vf-test-{os.getpid()}-{next(_bucket_ids)}") as name:
        yield name


@pytest.fixture
def s3_env(seaweed: SeaweedFS, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The standard AWS variables pointing at the test server (for CLI tests)."""
    env = {
        "AWS_ACCESS_KEY_ID": seaweed.access_key,
        "AWS_SECRET_ACCESS_KEY": seaweed.secret_key,
        "AWS_REGION": seaweed.region,
        "AWS_ENDPOINT_URL": seaweed.endpoint,
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env
