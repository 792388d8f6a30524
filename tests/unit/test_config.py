"""Configuration: file + environment, bad values fail at start naming the field, secrets hidden."""

from __future__ import annotations

import pytest

from bvh_ops.config import load_settings, redact_dsn
from bvh_ops.errors import ConfigError


@pytest.fixture
def cfg_file(tmp_path, monkeypatch):
    path = tmp_path / "bvh-ops.toml"
    monkeypatch.setenv("BVH_OPS_CONFIG", str(path))
    return path


def test_file_values_and_env_override(cfg_file, monkeypatch):
    cfg_file.write_text('repository = "file:///srv/a"\ncompression_level = 5\n')
    assert load_settings().compression_level == 5
    monkeypatch.setenv("BVH_OPS_COMPRESSION_LEVEL", "9")
    s = load_settings()
    assert s.compression_level == 9 and s.repository == "file:///srv/a"


def test_unknown_field_names_the_field(cfg_file):
    cfg_file.write_text('repository = "file:///srv/a"\nretention_dayz = 3\n')
    with pytest.raises(ConfigError, match="unknown config field 'retention_dayz'"):
        load_settings()


@pytest.mark.parametrize("field, value, message", [
    ("BVH_OPS_REPOSITORY", "ftp://x/y", "'repository'"),
    ("BVH_OPS_REPOSITORY", "file://relative/path", "absolute path"),
    ("BVH_OPS_DATABASE_URL", "mysql://u@h/db", "'database_url'"),
    ("BVH_OPS_S3_ENDPOINT_URL", "localhost:9000", "'s3_endpoint_url'"),
    ("BVH_OPS_COMPRESSION_LEVEL", "99", "'compression_level'"),
])
def test_malformed_values_name_the_field(monkeypatch, field, value, message):
    monkeypatch.setenv(field, value)
    with pytest.raises(ConfigError, match=message):
        load_settings()


def test_missing_config_file_is_clear(monkeypatch, tmp_path):
    monkeypatch.setenv("BVH_OPS_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings()


def test_password_never_in_repr_or_redacted_view(monkeypatch):
    monkeypatch.setenv("BVH_OPS_DATABASE_URL", "postgresql://ops:hunter2-Secret@db.example:5432/lottery")
    s = load_settings()
    assert "hunter2-Secret" not in repr(s)
    assert "hunter2-Secret" not in str(s.redacted())
    assert s.redacted()["database_url"] == "postgresql://ops:***@db.example:5432/lottery"
    assert s.require_database_url().endswith("/lottery")


def test_redact_key_value_dsn():
    assert redact_dsn("host=h password=abc dbname=x") == "host=h password=*** dbname=x"


def test_missing_required_value_says_how_to_fix():
    with pytest.raises(ConfigError, match="BVH_OPS_REPOSITORY"):
        load_settings().require_repository()


SECRET = "Hunter2-s3cret"


@pytest.mark.parametrize("field", ["BVH_OPS_DATABASE_URL", "BVH_OPS_OPS_DATABASE_URL", "BVH_OPS_DRILL_SCRATCH_DSN"])
@pytest.mark.parametrize("dsn, message", [
    (f"postgresql://postgres:{SECRET}@[::1]x:55432/db", "not a valid connection URI"),
    (f"postgresql://postgres:{SECRET}@127.0.0.1:5432/db?foo=bar", "unknown connection parameter"),
    (f"postgresql://postgres:{SECRET}@127.0.0.1:notaport/db", "port 'notaport'"),
    (f"postgresql://postgres:{SECRET}@127.0.0.1:5432/db?port=notaport", "port 'notaport'"),
    (f"postgresql://postgres:{SECRET}@127.0.0.1:70000/db", "between 1 and 65535"),
    (f"postgresql://postgres:{SECRET}@[::1:5432/db", "not a valid connection URI"),
    (f"postgresql://postgres:{SECRET}@/db", "no host"),
    (f"postgresql://postgres:{SECRET}@/db?host=h1,h2&port=5432,5433,5434", "3 ports for 2 hosts"),
])
def test_malformed_dsn_fails_at_load_without_the_password(monkeypatch, field, dsn, message):
    monkeypatch.setenv(field, dsn)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    text = str(caught.value)
    name = field.removeprefix("BVH_OPS_").lower()
    assert f"'{name}'" in text and message in text and "\n" not in text
    assert SECRET not in text


@pytest.mark.parametrize("dsn", [
    "postgresql://ops:pw@db.example:5432/lottery",
    "postgres://ops@db.example/lottery?sslmode=require&connect_timeout=5",
    "postgresql://ops:p%40ss@[::1]:5432/lottery",
    "postgresql://ops@h1:5432,h2:5433/lottery?target_session_attrs=read-write",
    "postgresql://postgres@/lottery?host=/var/run/postgresql",
])
def test_valid_dsns_load(monkeypatch, dsn):
    monkeypatch.setenv("BVH_OPS_DATABASE_URL", dsn)
    assert load_settings().require_database_url() == dsn


def test_redact_malformed_dsn():
    assert redact_dsn(f"postgresql://postgres:{SECRET}@[::1]x:55432/db") == "postgresql://postgres:***@[::1]x:55432/db"


@pytest.mark.parametrize("value", ["not-base64!", "AAAA", "YWJj" * 11 + "YQ=="])
def test_bad_trusted_host_key_names_the_field(monkeypatch, value):
    monkeypatch.setenv("BVH_OPS_TRUSTED_HOST_KEYS", value)
    with pytest.raises(ConfigError, match="'trusted_host_keys'.*not an Ed25519 public key"):
        load_settings()


def test_trusted_host_keys_accept_real_public_keys(monkeypatch, tmp_path):
    from bvh_ops.keys import load_or_create_host_key

    keys = [load_or_create_host_key(tmp_path / n).public_b64 for n in ("a", "b")]
    monkeypatch.setenv("BVH_OPS_TRUSTED_HOST_KEYS", ",".join(keys))
    assert load_settings().trusted_host_keys == keys


def test_empty_state_dir_is_refused(monkeypatch, cfg_file):
    cfg_file.write_text('repository = "file:///srv/a"\n')
    monkeypatch.setenv("BVH_OPS_STATE_DIR", "")
    with pytest.raises(ConfigError, match="'state_dir'.*must not be empty"):
        load_settings()
    monkeypatch.delenv("BVH_OPS_STATE_DIR")
    cfg_file.write_text('state_dir = ""\n')
    with pytest.raises(ConfigError, match="'state_dir'.*must not be empty"):
        load_settings()


def test_misspelled_env_variable_warns_with_the_closest_setting(monkeypatch, capsys):
    import bvh_ops.config

    monkeypatch.setattr(bvh_ops.config, "_warned", set())
    monkeypatch.setenv("BVH_OPS_DATABSE_URL", "postgresql://u@h/db")
    monkeypatch.setenv("BVH_OPS_CONFIG", "")  # not a setting, but ours: no warning
    monkeypatch.setenv("BVH_OPS_PROJECT_DIR", "/srv/bvh-ops")
    load_settings()
    load_settings()  # once per process
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["warning: BVH_OPS_DATABSE_URL is not a bvh-ops setting (did you mean BVH_OPS_DATABASE_URL?)"]


def test_unrelated_env_variable_warns_without_a_guess(monkeypatch, capsys):
    import bvh_ops.config

    monkeypatch.setattr(bvh_ops.config, "_warned", set())
    monkeypatch.setenv("BVH_OPS_XYZZY", "1")
    load_settings()
    assert capsys.readouterr().err == "warning: BVH_OPS_XYZZY is not a bvh-ops setting\n"
