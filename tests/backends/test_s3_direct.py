"""The fast path without botocore (:mod:`vertexflow.backends.s3.direct`): when it is taken, that it
addresses and signs exactly as botocore would, and that the botocore way still works beside it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from vertexflow.backends.s3 import S3Backend
from vertexflow.backends.s3.direct import StaticCredentials, plain_settings
from vertexflow.errors import AuthError, ConfigError, NotFound
from vertexflow.testing.seaweedfs import SeaweedFS

from .conformance import get_bytes, keys, put_bytes

pytestmark = pytest.mark.s3

AWS_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
                 "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE",
                 "AWS_CREDENTIAL_EXPIRATION", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")


@pytest.fixture
def no_aws_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No AWS variables and no AWS config file; answers where such a file would be."""
    for name in AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    config = tmp_path / "aws-config"
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    return config


def settings(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"endpoint_url": "http://127.0.0.1:9000", "region": None, "access_key_id": "AK",
                            "secret_access_key": "SK", "session_token": None, "profile": None,
                            "addressing_style": "auto"}
    return base | kw


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:9000", "http://example.com:9000/", "https://s3.example.org",
                                      "http://localhost:8333"])
@pytest.mark.parametrize("bucket", ["media", "my.bucket", "Bad_Bucket"])
@pytest.mark.parametrize("style", ["auto", "path"])
@pytest.mark.parametrize("region", [None, "eu-west-1"])
async def test_plain_settings_are_what_botocore_resolves(no_aws_settings: Path, endpoint: str, bucket: str,
                                                         style: str, region: str | None) -> None:
    kw = {"endpoint_url": endpoint, "region": region, "access_key_id": "AK", "secret_access_key": "SK",
          "addressing_style": style}
    plain = S3Backend(bucket, **kw)._plain_settings()
    assert plain is not None
    async with S3Backend(bucket, **kw) as b:  # the botocore way, on the same settings
        target, credentials = await b._resolve(await b.client())
    assert plain[0] == target
    frozen = await credentials.get_frozen_credentials()
    assert (plain[1].access_key, plain[1].secret_key, plain[1].token) == (frozen.access_key, frozen.secret_key,
                                                                          frozen.token)


async def test_environment_region_and_keys_are_what_botocore_uses(no_aws_settings: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "env-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "env-token")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    for variable, region in (("AWS_DEFAULT_REGION", "eu-west-2"), ("AWS_REGION", "eu-west-3")):
        monkeypatch.setenv(variable, region)  # AWS_REGION wins when both are set
        plain = S3Backend("media")._plain_settings()
        assert plain is not None
        async with S3Backend("media") as b:
            target, credentials = await b._resolve(await b.client())
        assert plain[0] == target and target.region == region
        frozen = await credentials.get_frozen_credentials()
        assert plain[1] == StaticCredentials(frozen.access_key, frozen.secret_key, frozen.token)
        assert plain[1] == StaticCredentials("env-key", "env-secret", "env-token")


@pytest.mark.parametrize(("why", "kw", "environ"), [
    ("virtual hosts", settings(addressing_style="virtual"), {}),
    ("a profile", settings(profile="p"), {}),
    ("AWS_PROFILE", settings(), {"AWS_PROFILE": "p"}),
    ("AWS's own endpoints", settings(endpoint_url=None), {}),
    ("an endpoint with a path", settings(endpoint_url="http://127.0.0.1:9000/s3"), {}),
    ("half a key pair", settings(secret_access_key=None), {}),
    ("no keys", settings(access_key_id=None, secret_access_key=None), {}),
    ("half a pair in the environment", settings(access_key_id=None, secret_access_key=None),
     {"AWS_ACCESS_KEY_ID": "k"}),
    ("keys that expire", settings(access_key_id=None, secret_access_key=None),
     {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AWS_CREDENTIAL_EXPIRATION": "2030-01-01T00:00:00Z"}),
    ("endpoints from the environment ignored", settings(endpoint_url=None),
     {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "true"}),
])
def test_settings_botocore_may_resolve_otherwise_are_left_to_it(no_aws_settings: Path, why: str,
                                                                kw: dict[str, Any], environ: dict[str, str]) -> None:
    assert plain_settings("media", **kw, environ=environ | {"AWS_CONFIG_FILE": str(no_aws_settings)}) is None, why


def test_a_config_file_that_may_set_the_region_is_left_to_botocore(no_aws_settings: Path) -> None:
    environ = {"AWS_CONFIG_FILE": str(no_aws_settings)}
    assert plain_settings("media", **settings(), environ=environ) is not None
    no_aws_settings.write_text("[default]\nregion = eu-north-1\n")
    assert plain_settings("media", **settings(), environ=environ) is None
    assert plain_settings("media", **settings(region="eu-north-1"), environ=environ) is not None


def test_keys_given_win_over_the_environment_and_the_secret_is_not_shown(no_aws_settings: Path) -> None:
    environ = {"AWS_CONFIG_FILE": str(no_aws_settings), "AWS_ACCESS_KEY_ID": "env", "AWS_SECRET_ACCESS_KEY": "env",
               "AWS_SECURITY_TOKEN": "first", "AWS_SESSION_TOKEN": "second"}
    plain = plain_settings("media", **settings(), environ=environ)
    assert plain is not None and plain[1] == StaticCredentials("AK", "SK")
    plain = plain_settings("media", **settings(access_key_id=None, secret_access_key=None), environ=environ)
    assert plain is not None and plain[1] == StaticCredentials("env", "env", "first")
    assert "SK" not in repr(StaticCredentials("AK", "SK"))


@pytest.mark.parametrize(("kw", "environ", "where"), [
    ({"region": "us_east_1"}, {}, "the remote's settings"),
    ({}, {"AWS_REGION": "eu west 1"}, "AWS_REGION"),
    ({}, {"AWS_DEFAULT_REGION": "-eu-west-1"}, "AWS_DEFAULT_REGION"),
    ({"endpoint_url": None}, {"AWS_REGION": "x" * 64}, "AWS_REGION"),  # even where botocore would be asked
])
def test_a_region_botocore_would_refuse_is_named(no_aws_settings: Path, kw: dict[str, Any], environ: dict[str, str],
                                                 where: str) -> None:
    # signed as given, it would only come back as a refused signature
    environ |= {"AWS_CONFIG_FILE": str(no_aws_settings)}
    with pytest.raises(ConfigError, match=f"invalid AWS region .* \\(from {where}\\)"):
        plain_settings("media", **settings(**kw), environ=environ)
    for good in ("us-east-1", "ru-central1", "garage", "7a"):
        assert plain_settings("media", **settings(region=good), environ=environ) is not None


# -- both ways against the server ------------------------------------------------------------


@pytest.fixture(params=["plain", "profile"])
async def way(request: pytest.FixtureRequest, seaweed: SeaweedFS, no_aws_settings: Path,
              tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    """Settings for a backend on the test server: written out (no botocore) or in a profile (botocore)."""
    base = {"endpoint_url": seaweed.endpoint, "region": seaweed.region}
    if request.param == "plain":
        yield base | {"access_key_id": seaweed.access_key, "secret_access_key": seaweed.secret_key}
        return
    (tmp_path / "aws-credentials").write_text(
        f"[vf]\naws_access_key_id = {seaweed.access_key}\naws_secret_access_key = {seaweed.secret_key}\n"
        "[vf-wrong]\naws_access_key_id = nobody\naws_secret_access_key = nothing\n")
    yield base | {"profile": "vf"}


async def test_round_trip_either_way(way: dict[str, Any], s3_bucket: str) -> None:
    async with S3Backend(s3_bucket, "both", **way) as b:
        await b.check(write=True)
        await put_bytes(b, "a b/ü.txt", b"hello")
        assert await get_bytes(b, "a b/ü.txt") == b"hello"
        assert await keys(b) == ["a b/ü.txt"]
        # only the botocore way makes the boto client for these requests
        assert (b._s3 is None) == ("profile" not in way)
        await b.delete("a b/ü.txt")  # a request the fast path does not send: the client is made now
        assert await keys(b) == []


async def test_check_errors_either_way(way: dict[str, Any], s3_bucket: str) -> None:
    async with S3Backend("no-such-bucket-here", **way) as b:
        with pytest.raises(NotFound, match="bucket 'no-such-bucket-here' does not exist"):
            await b.check()
    wrong = way | ({"profile": "vf-wrong"} if "profile" in way else {"secret_access_key": "wrong-secret"})
    async with S3Backend(s3_bucket, **wrong) as b:
        with pytest.raises(AuthError):
            await b.check()


async def test_a_bad_region_or_a_missing_profile_is_a_config_error_the_botocore_way(
        seaweed: SeaweedFS, no_aws_settings: Path, tmp_path: Path, s3_bucket: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "aws-credentials").write_text(
        f"[vf]\naws_access_key_id = {seaweed.access_key}\naws_secret_access_key = {seaweed.secret_key}\n")
    no_aws_settings.write_text("[profile vf]\nregion = eu_north_1\n")
    async with S3Backend(s3_bucket, endpoint_url=seaweed.endpoint, profile="vf") as b:
        with pytest.raises(ConfigError, match="invalid AWS region 'eu_north_1' .from the AWS configuration"):
            await b.check()
    monkeypatch.setenv("AWS_PROFILE", "nowhere")  # a profile named by the environment is named in the error
    async with S3Backend(s3_bucket, endpoint_url=seaweed.endpoint) as b:
        with pytest.raises(ConfigError, match="AWS profile 'nowhere' not found"):
            await b.check()
