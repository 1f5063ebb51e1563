"""Config validation and location parsing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vertexflow.config import load_config, parse_config
from vertexflow.config_file import NoConfigFile
from vertexflow.errors import ConfigError
from vertexflow.locations import parse_location

REPO = Path(__file__).resolve().parent.parent


def test_example_config_is_valid() -> None:
    config = load_config(REPO / "configs" / "remotes.toml")
    assert {"minio-old", "minio-new", "yd", "nas"} <= set(config.remotes)


def test_json_config(tmp_path: Path) -> None:
    f = tmp_path / "c.json"
    f.write_text('{"remotes": {"n": {"type": "local", "path": "/srv"}}}')
    assert load_config(f).remotes["n"].type == "local"


def test_missing_explicit_config_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


@pytest.mark.parametrize("raw, where", [
    ({"remotes": {"a": {"type": "s3", "concurrency": 0}}}, "remotes.a.concurrency"),
    ({"remotes": {"a": {"type": "s3", "part_size": 1}}}, "remotes.a.part_size"),
    ({"remotes": {"a": {"type": "s3", "endpiont": "http://x"}}}, "remotes.a.endpiont: unknown key"),
    ({"remotes": {"a": {"type": "ftp"}}}, "remotes.a"),
    ({"remotes": {"s3": {"type": "local", "path": "/"}}}, "not a URL scheme"),
    ({"remote": {}}, "remote: unknown key"),
])
def test_invalid_config_names_the_field(raw: dict, where: str) -> None:
    with pytest.raises(ConfigError, match="config file x.toml") as info:
        parse_config(raw, source="x.toml")
    assert where in str(info.value)


def test_secret_never_in_messages() -> None:
    raw = {"remotes": {"a": {"type": "s3", "secret_access_key": "TOPSECRET", "concurrency": -1}}}
    with pytest.raises(ConfigError) as info:
        parse_config(raw, source="x.toml")
    assert "TOPSECRET" not in str(info.value)
    config = parse_config({"remotes": {"a": {"type": "s3", "secret_access_key": "TOPSECRET"}}})
    assert "TOPSECRET" not in repr(config)


def test_secret_from_missing_env_var_is_named() -> None:
    config = parse_config({"remotes": {"a": {"type": "s3", "secret_access_key_env": "NO_SUCH_VAR_X"}}})
    with pytest.raises(ConfigError, match="NO_SUCH_VAR_X is not set"):
        parse_location("a:bucket/p", config, environ={})


def test_locations() -> None:
    config = parse_config({"remotes": {
        "old": {"type": "s3", "endpoint": "http://127.0.0.1:9000", "access_key_id": "k", "secret_access_key": "s"},
        "fixed": {"type": "s3", "bucket": "media"},
        "nas": {"type": "local", "path": "/srv/nas"},
        "yd": {"type": "yandex_disk", "token": "t", "root": "/base"},
    }})
    loc = parse_location("s3://media/photos/2020/", config)
    assert (loc.kind, loc.args) == ("s3", ("media", "photos/2020"))
    loc = parse_location("old:media/", config, environ={})
    assert loc.kind == "s3" and loc.args == ("media", "")
    assert loc.kwargs["endpoint_url"] == "http://127.0.0.1:9000" and loc.kwargs["secret_access_key"] == "s"
    assert parse_location("fixed:a/b", config, environ={}).args == ("media", "a/b")
    assert parse_location("nas:x/y", config).args == ("/srv/nas/x/y",)
    assert parse_location("yd:sub", config, environ={}).kwargs["root"] == "/base/sub"
    assert parse_location("file:///tmp/x", config).args == ("/tmp/x",)
    assert parse_location("./a:b", config).kind == "local"
    with pytest.raises(ConfigError, match="no bucket"):
        parse_location("s3://", config)
    with pytest.raises(ConfigError, match="no bucket"):
        parse_location("old:", config, environ={})
    with pytest.raises(ConfigError, match="unknown scheme 'gs'"):
        parse_location("gs://b/k", config)
    with pytest.raises(ConfigError, match="YANDEX_DISK_TOKEN"):
        parse_location("yadisk:/x", config, environ={})


def test_split_last_for_single_object_sources() -> None:
    parent, name = parse_location("s3://b/dir/file.txt").split_last()  # type: ignore[misc]
    assert (parent.args, name) == (("b", "dir"), "file.txt")
    parent, name = parse_location("/srv/a/f.bin").split_last()  # type: ignore[misc]
    assert (parent.args, name) == (("/srv/a",), "f.bin")
    assert parse_location("s3://b").split_last() is None


def test_a_run_without_a_config_file_does_not_load_the_config_models(tmp_path: Path) -> None:
    # the models (pydantic) took ~0.1 s of every start-up; a file, when there is one, still loads them
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("a")
    code = ("import sys, runpy\n"
            "sys.argv = ['vertexflow', *sys.argv[1:]]\n"
            "try:\n    runpy.run_module('vertexflow', run_name='__main__')\n"
            "except SystemExit as exit:\n    assert not exit.code, exit.code\n"
            "print('models loaded:', 'vertexflow.config' in sys.modules, 'pydantic' in sys.modules)\n")
    env = {k: v for k, v in os.environ.items() if k != "VERTEXFLOW_CONFIG"}
    env |= {"XDG_CONFIG_HOME": str(tmp_path / "no-config-here"), "VERTEXFLOW_JOURNAL": str(tmp_path / "j.db")}
    args = ["copy", str(tmp_path / "src"), str(tmp_path / "dst"), "--no-progress"]
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                         timeout=120, check=True).stdout
    assert "models loaded: False False" in out
    assert (tmp_path / "dst" / "a.txt").read_text() == "a"
    config = tmp_path / "config.toml"
    config.write_text(f'[remotes.here]\ntype = "local"\npath = "{tmp_path}"\n')
    args = ["--config", str(config), "copy", "here:src", str(tmp_path / "dst2"), "--no-progress"]
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                         timeout=120, check=True).stdout
    assert "models loaded: True True" in out
    assert (tmp_path / "dst2" / "a.txt").read_text() == "a"


def test_unknown_remote_without_a_config_file_says_so() -> None:
    with pytest.raises(ConfigError, match="unknown remote 'nowhere'.*no config file was found"):
        parse_location("nowhere:x", NoConfigFile())


def test_globs_match_keys_that_hold_a_newline() -> None:
    from vertexflow.filters import Filter, glob_to_regex

    assert glob_to_regex("odd/**").match("odd/line\nbreak/f.txt")
    assert glob_to_regex("*.jpg").match("dir\nname/a.jpg")
    assert not glob_to_regex("abc").match("abc\n")  # the name must end where the pattern does
    assert not Filter(exclude=("odd/**",)).matches_key("odd/line\nbreak.txt")
