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
