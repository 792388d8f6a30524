"""Tampering with a stored backup is detected and named; a wrong key is one clear line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bvh_ops.backup import open_repository, run_logical_backup
from bvh_ops.keys import load_identities, write_keypair
from bvh_ops.repository.verify import Status, verify_backup
from tests.integration.cli import assert_one_line_error, run_cli


@pytest.fixture
def stored(sample_db, repo_dir, make_settings):
    settings = make_settings(sample_db, f"file://{repo_dir}")
    manifest = run_logical_backup(settings).manifest
    bdir = Path(repo_dir) / "backups" / manifest.backup_id
    return settings, manifest, bdir


def statuses(settings, backup_id, deep=False):
    repo, _ = open_repository(settings)
    ids = load_identities(settings.identity) if deep else None
    return {r.object: r for r in verify_backup(repo, backup_id, identities=ids)}


def test_flipped_byte_is_checksum_mismatch_naming_the_object(stored):
    settings, m, bdir = stored
    dump = bdir / "dump.pgcustom"
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0x40
    dump.write_bytes(bytes(data))
    for deep in (False, True):
        res = statuses(settings, m.backup_id, deep)
        assert res["dump.pgcustom"].status is Status.CHECKSUM_MISMATCH
        assert res["manifest.json"].status is Status.OK


def test_truncated_object_is_size_mismatch(stored):
    settings, m, bdir = stored
    dump = bdir / "dump.pgcustom"
    dump.write_bytes(dump.read_bytes()[:-1000])
    assert statuses(settings, m.backup_id)["dump.pgcustom"].status is Status.SIZE_MISMATCH


def test_missing_object_is_reported_and_verify_goes_on(stored):
    settings, m, bdir = stored
    (bdir / "dump.pgcustom").unlink()
    (bdir / "manifest.json").unlink()
    res = statuses(settings, m.backup_id)
    assert res["manifest.json"].status is Status.MISSING
    assert res["manifest.json.copy"].status is Status.OK  # the copy still proves the object list
    assert res["dump.pgcustom"].status is Status.MISSING


def test_edited_manifest_is_bad_signature(stored):
    settings, m, bdir = stored
    for name in ("manifest.json", "manifest.json.copy"):
        doc = json.loads((bdir / name).read_text())
        doc["manifest"]["tables"][0]["rows"] += 1
        (bdir / name).write_text(json.dumps(doc))
    res = statuses(settings, m.backup_id)
    assert res["manifest.json"].status is Status.BAD_SIGNATURE
    assert res["manifest.json.copy"].status is Status.BAD_SIGNATURE


def test_restore_refuses_an_edited_manifest(stored, fresh_db):
    from bvh_ops.errors import IntegrityError
    from bvh_ops.restore import restore_logical

    settings, m, bdir = stored
    for name in ("manifest.json", "manifest.json.copy"):
        doc = json.loads((bdir / name).read_text())
        doc["manifest"]["objects"][0]["plaintext_sha256"] = "0" * 64
        (bdir / name).write_text(json.dumps(doc))
    with pytest.raises(IntegrityError, match="refusing to restore"):
        restore_logical(settings, m.backup_id, fresh_db())


def cli_env(settings, identity=None) -> dict[str, str]:
    return {
        "BVH_OPS_DATABASE_URL": settings.database_url.get_secret_value(),
        "BVH_OPS_REPOSITORY": settings.repository,
        "BVH_OPS_RECIPIENTS": ",".join(str(p) for p in settings.recipients),
        "BVH_OPS_IDENTITY": str(identity or settings.identity),
        "BVH_OPS_STATE_DIR": str(settings.state_dir),
    }


def test_cli_verify_json_names_every_object_and_exit_codes(stored):
    settings, m, bdir = stored
    ok = run_cli("verify", m.backup_id, "--deep", "--json", env=cli_env(settings))
    assert ok.returncode == 0, ok.stderr
    doc = json.loads(ok.stdout)
    assert doc["ok"] is True
    assert {r["object"] for r in doc["results"]} == {f"{m.backup_id}/{n}" for n in
                                                     ("manifest.json", "manifest.json.copy", "dump.pgcustom")}
    dump = bdir / "dump.pgcustom"
    data = bytearray(dump.read_bytes())
    data[100] ^= 1
    dump.write_bytes(bytes(data))
    bad = run_cli("verify", m.backup_id, "--json", env=cli_env(settings))
    assert bad.returncode != 0
    statuses_ = {r["object"].split("/")[-1]: r["status"] for r in json.loads(bad.stdout)["results"]}
    assert statuses_["dump.pgcustom"] == "CHECKSUM_MISMATCH"


def test_wrong_identity_is_one_clear_line(stored, tmp_path, fresh_db):
    settings, m, _ = stored
    _, other_key = write_keypair(tmp_path / "other")
    env = cli_env(settings, identity=other_key)
    proc = run_cli("verify", m.backup_id, "--deep", env=env)
    assert proc.returncode != 0
    assert "no identity matches" in proc.stdout and "Traceback" not in proc.stderr + proc.stdout
    proc = run_cli("restore", m.backup_id, "--into", fresh_db(), env=env)
    assert_one_line_error(proc, "no identity matches", "BVH_OPS_IDENTITY")
