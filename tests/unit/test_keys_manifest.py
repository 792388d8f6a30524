"""Keys (files, modes, rotation) and manifest signatures."""

from __future__ import annotations

import json
import stat

import pytest

from bvh_ops.errors import ConfigError
from bvh_ops.keys import (
    HYBRID,
    X25519,
    load_identities,
    load_or_create_host_key,
    load_recipients,
    write_keypair,
)
from bvh_ops.repository.manifest import Manifest, ObjectEntry, TableStat, parse_manifest, sign_manifest


@pytest.mark.parametrize("kem", [HYBRID, X25519])
def test_keygen_writes_private_key_0600_and_matching_public_key(tmp_path, kem):
    pub, key = write_keypair(tmp_path, kem)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    (ident,) = load_identities(key)
    (recipient,) = load_recipients([pub])
    assert ident.key_id == recipient.key_id
    sealed = recipient.seal(b"k" * 32)
    assert ident.open(sealed) == b"k" * 32


def test_keygen_never_overwrites(tmp_path):
    write_keypair(tmp_path)
    with pytest.raises(ConfigError, match="already exists"):
        write_keypair(tmp_path)


def test_keygen_never_replaces_a_lone_recipient(tmp_path):
    # A new recipient.pub beside no identity.key would seal every later backup to a key nobody holds.
    pub = tmp_path / "recipient.pub"
    pub.write_text("the recipient backups are sealed to\n")
    with pytest.raises(ConfigError, match="recipient.pub already exists"):
        write_keypair(tmp_path)
    assert pub.read_text() == "the recipient backups are sealed to\n"
    assert not (tmp_path / "identity.key").exists()


@pytest.mark.parametrize("name", ["recipient.pub", "identity.key"])
@pytest.mark.parametrize("dangling", [True, False])
def test_keygen_never_writes_through_a_symlink(tmp_path, name, dangling):
    elsewhere = tmp_path / "elsewhere"
    if not dangling:
        elsewhere.write_text("someone else's file\n")
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / name).symlink_to(elsewhere)
    with pytest.raises(ConfigError, match=f"{name} already exists \\(a symbolic link\\)"):
        write_keypair(keys)
    assert (elsewhere.read_text() == "someone else's file\n") if not dangling else not elsewhere.exists()
    assert [p.name for p in keys.iterdir()] == [name]


def test_malformed_key_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "recipient.pub"
    bad.write_text("ssh-ed25519 AAAA me@host\n")
    with pytest.raises(ConfigError, match="not a bvh-ops"):
        load_recipients([bad])


def test_identity_file_with_two_keys_supports_rotation(tmp_path):
    _, k1 = write_keypair(tmp_path / "a")
    _, k2 = write_keypair(tmp_path / "b", X25519)
    both = tmp_path / "both.key"
    both.write_text(k1.read_text() + k2.read_text())
    assert len(load_identities(both)) == 2


def sample_manifest() -> Manifest:
    return Manifest(
        backup_id="20261127T020000Z-logical-abcdef", kind="logical", tool_version="0.1.0",
        started_at="2026-11-27T02:00:00+00:00", finished_at="2026-11-27T02:01:00+00:00", database="lottery",
        server_version="18.6", server_version_num=180006, system_identifier="1", snapshot_id="0000-1",
        dump_format="custom", compression="zstd-3", kem=HYBRID, key_ids=("k1",), host="h",
        objects=(ObjectEntry("dump.pgcustom", "a" * 64, 10, "b" * 64, 20, ("k1",), "zstd-3"),),
        tables=(TableStat("public.users", 3, "3:42"),),
    )


def test_manifest_round_trip_and_signature(tmp_path):
    hk = load_or_create_host_key(tmp_path)
    raw = sign_manifest(sample_manifest(), hk)
    loaded = parse_manifest(raw, {hk.key_id: hk.public_b64})
    assert loaded.signature_ok and loaded.manifest == sample_manifest()


def test_edited_manifest_fails_signature(tmp_path):
    hk = load_or_create_host_key(tmp_path)
    doc = json.loads(sign_manifest(sample_manifest(), hk))
    doc["manifest"]["tables"][0]["rows"] = 4
    loaded = parse_manifest(json.dumps(doc).encode(), {hk.key_id: hk.public_b64})
    assert not loaded.signature_ok and "edited" in loaded.signature_detail


def test_manifest_signed_by_unknown_host_is_untrusted(tmp_path):
    hk = load_or_create_host_key(tmp_path / "a")
    other = load_or_create_host_key(tmp_path / "b")
    loaded = parse_manifest(sign_manifest(sample_manifest(), hk), {other.key_id: other.public_b64})
    assert not loaded.signature_ok and "untrusted" in loaded.signature_detail


def test_host_key_is_stable_and_private(tmp_path):
    a = load_or_create_host_key(tmp_path)
    b = load_or_create_host_key(tmp_path)
    assert a.key_id == b.key_id
    assert stat.S_IMODE((tmp_path / "host_ed25519.key").stat().st_mode) == 0o600


@pytest.mark.parametrize("dangling", [True, False])
def test_host_key_is_never_read_or_written_through_a_symlink(tmp_path, dangling):
    elsewhere = tmp_path / "elsewhere.key"
    if not dangling:
        load_or_create_host_key(tmp_path / "other")
        elsewhere.write_bytes((tmp_path / "other" / "host_ed25519.key").read_bytes())
    state = tmp_path / "state"
    state.mkdir()
    (state / "host_ed25519.key").symlink_to(elsewhere)
    with pytest.raises(ConfigError, match="is a symbolic link"):
        load_or_create_host_key(state)
    assert elsewhere.exists() != dangling
