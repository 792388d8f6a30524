"""The backup integrity suite over records in hand: every check passes on a sound backup and the
right one fails on each kind of damage."""

from __future__ import annotations

import pytest

from bvh_ops.repository.manifest import Manifest, ObjectEntry, TableStat
from bvh_ops.repository.verify import Status, VerifyResult
from bvh_ops.results import CheckStatus
from checks.backup_suite import run_backup_suite

SHA = "ab" * 32
FP = "3:" + "cd" * 32 + ":blake3"  # fingerprints 4


def manifest(tables=(TableStat("public.t", 3, FP), TableStat("pg_largeobject", 0, "0:0:lo", "large_objects")),
             stored_size=10, stored_sha=SHA) -> Manifest:
    obj = ObjectEntry("dump.pgcustom", SHA, 20, stored_sha, stored_size, ("k",), "zstd-3")
    return Manifest("b1", "logical", "0", "", "", "db", "18", 180000, "1", "s", "custom", "zstd-3", "x", ("k",), "h",
                    objects=(obj,), tables=tuple(tables))


def verify(status=Status.OK):
    return [VerifyResult("b1", name, status) for name in ("manifest.json", "manifest.json.copy", "dump.pgcustom")]


SNAP = {"public.t": {"rows": 3, "fingerprint": FP}}


def failed(results) -> list[str]:
    return [r.name for r in results if r.status is not CheckStatus.PASSED]


@pytest.mark.parametrize("fp", [FP, FP.replace(":blake3", ":framed"), FP.replace(":blake3", ":copy")],
                         ids=["fingerprints 4", "fingerprints 3", "fingerprints 2"])
def test_a_sound_backup_passes_every_check(fp):
    results = run_backup_suite(["public.t"], {"public.t": {"rows": 3, "fingerprint": fp}},
                               manifest(tables=(TableStat("public.t", 3, fp),)), verify())
    assert failed(results) == [] and len(results) == 10


@pytest.mark.parametrize("kwargs, snapshot, status, expected", [
    ({"tables": ()}, SNAP, Status.OK, ["tables_present", "row_counts_equal", "fingerprints_equal", "hashes_present"]),
    ({}, {"public.t": {"rows": 4, "fingerprint": FP}}, Status.OK, ["row_counts_equal"]),
    ({}, {"public.t": {"rows": 3, "fingerprint": "3:1:rec"}}, Status.OK, ["fingerprints_equal"]),
    ({"tables": (TableStat("public.t", 3, "three"),)}, {"public.t": {"rows": 3, "fingerprint": "three"}}, Status.OK,
     ["hashes_present"]),
    ({"stored_size": 0}, SNAP, Status.OK, ["object_sizes_positive"]),
    ({"stored_sha": "nope"}, SNAP, Status.OK, ["stored_sha256_present"]),
    ({}, SNAP, Status.CHECKSUM_MISMATCH, ["shallow_verify_ok"]),
])
def test_each_kind_of_damage_fails_its_check(kwargs, snapshot, status, expected):
    results = run_backup_suite(["public.t"], snapshot, manifest(**kwargs), verify(status))
    assert failed(results) == expected
    bad = next(r for r in results if r.name == expected[0])
    assert bad.status is CheckStatus.FAILED and "unexpected of" in bad.detail


def test_no_tables_in_the_snapshot_is_not_verified_never_passed():
    results = run_backup_suite([], {}, manifest(), verify())
    assert next(r for r in results if r.name == "tables_present").status is CheckStatus.NOT_VERIFIED
