"""The physical backup suite over records in hand: every check passes on a sound backup and the
right one fails, naming what is wrong, on each kind of damage (no Great Expectations involved)."""

from __future__ import annotations

import pytest

from bvh_ops.repository.manifest import Manifest
from bvh_ops.repository.verify import Status, VerifyResult
from bvh_ops.results import CheckStatus
from bvh_ops.wal.archive import WalReport
from checks.physical_suite import run_physical_suite


def manifest(backup_id="b2", kind="incremental", sysid="7", archive_mode="on", mode="wal-only") -> Manifest:
    return Manifest(backup_id, kind, "0", "", "", "(cluster)", "15", 150000, sysid, "", "wal", "zstd-3", "x", ("k",),
                    "h", parent_id="b1" if kind == "incremental" else None,
                    extra={"mode": mode, "archive_mode": archive_mode, "start_lsn": "0/2000028",
                           "stop_lsn": "0/3000100", "timeline": 1})


def verify(status=Status.OK):
    return [VerifyResult("b2", name, status) for name in ("manifest.json", "manifest.json.copy")]


def wal(missing=(), damaged=()):
    return WalReport("b1", "000000010000000000000002", found=2, missing=list(missing), damaged=list(damaged),
                     last_segment="000000010000000000000004")


CHAIN = [manifest("b1", "full"), manifest()]


def failed(results) -> dict[str, str]:
    return {r.name: r.detail for r in results if r.status is not CheckStatus.PASSED}


def test_a_sound_backup_passes_every_check():
    results = run_physical_suite(None, manifest(), verify(), wal(), CHAIN)
    assert failed(results) == {}
    assert [r.name for r in results] == ["shallow_verify_ok", "chain_complete", "chain_same_cluster",
                                         "chain_starts_with_full", "wal_continuity"]


@pytest.mark.parametrize("verify_status, chain, report, expected, named", [
    (Status.CHECKSUM_MISMATCH, CHAIN, wal(), "shallow_verify_ok", "CHECKSUM_MISMATCH"),
    (Status.BAD_SIGNATURE, CHAIN, wal(), "shallow_verify_ok", "BAD_SIGNATURE"),
    (Status.OK, [manifest("b1", "full", sysid="8"), manifest()], wal(), "chain_same_cluster", "False"),
    (Status.OK, CHAIN, wal(missing=["000000010000000000000003"]), "wal_continuity", "000000010000000000000003"),
    (Status.OK, CHAIN, wal(damaged=[("000000010000000000000003", "stored sha256 differs")]), "wal_continuity",
     "stored sha256 differs"),
])
def test_each_damage_fails_its_check_and_names_it(verify_status, chain, report, expected, named):
    bad = failed(run_physical_suite(None, manifest(), verify(verify_status), report, chain))
    assert list(bad) == [expected] and named in bad[expected]


def test_a_broken_chain_fails_chain_complete(tmp_path):
    from bvh_ops.repository.repo import Repository
    from bvh_ops.storage.local import LocalStore

    repo = Repository(LocalStore(tmp_path), trusted_keys={})  # the parent b1 is not in it
    bad = failed(run_physical_suite(repo, manifest(), verify(), wal()))
    assert "chain_complete" in bad


def test_without_archiving_a_wal_only_increment_is_not_verified():
    results = run_physical_suite(None, manifest(archive_mode="off"), verify(), wal(), CHAIN)
    wal_check = next(r for r in results if r.name == "wal_continuity")
    assert wal_check.status is CheckStatus.NOT_VERIFIED and "archive_mode is off" in wal_check.detail
