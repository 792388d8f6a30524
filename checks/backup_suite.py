"""The backup integrity suite: expectations over a backup's manifest (as read back from the
repository) against the stats taken in the snapshot, plus the shallow verify results. A few
records in hand, checked directly (checks.inhand), so a backup never waits on GX's import."""

from __future__ import annotations

from bvh_ops.results import CheckResult, CheckStatus
from checks.inhand import pair_equal, row_count_at_least, values_at_least, values_in_set, values_match

HEX64 = r"^[0-9a-f]{64}$"
FINGERPRINT = r"^[0-9]+:(-?[0-9]+(:rec|:lo)?|[0-9a-f]{64}:(copy|framed|blake3))$"


def backup_records(snapshot_tables: list[str], snapshot_stats: dict[str, dict], manifest, verify_results):
    """Small records (one per table / object / verify result), never table data."""
    recorded = {t.name: t for t in manifest.tables}
    tables = [
        {
            "table": name,
            "in_manifest": name in recorded,
            "rows_snapshot": snapshot_stats.get(name, {}).get("rows", -1),
            "rows_manifest": recorded[name].rows if name in recorded else -2,
            "fingerprint_snapshot": snapshot_stats.get(name, {}).get("fingerprint", ""),
            "fingerprint_manifest": recorded[name].fingerprint if name in recorded else None,
        }
        for name in snapshot_tables
    ]
    objects = [{"object": o.name, "stored_size": o.stored_size, "plaintext_size": o.plaintext_size,
                "stored_sha256": o.stored_sha256, "plaintext_digest": o.plaintext_digest[1]} for o in manifest.objects]
    verify = [{"object": r.object, "status": str(r.status)} for r in verify_results]
    return tables, objects, verify


def run_backup_suite(snapshot_tables, snapshot_stats, manifest, verify_results) -> list[CheckResult]:
    tables, objects, verify = backup_records(snapshot_tables, snapshot_stats, manifest, verify_results)
    results: list[CheckResult] = []
    if not tables:
        results.append(CheckResult("tables_present", CheckStatus.NOT_VERIFIED, "the snapshot listed no tables"))
    else:
        results += [
            values_in_set("tables_present", tables, "in_manifest", [True]),
            pair_equal("row_counts_equal", tables, "rows_snapshot", "rows_manifest"),
            pair_equal("fingerprints_equal", tables, "fingerprint_snapshot", "fingerprint_manifest"),
            values_match("hashes_present", tables, "fingerprint_manifest", FINGERPRINT),
        ]
    results += [
        row_count_at_least("objects_present", objects, 1),
        values_at_least("object_sizes_positive", objects, "stored_size", 1),
        values_match("stored_sha256_present", objects, "stored_sha256", HEX64),
        values_match("plaintext_digest_present", objects, "plaintext_digest", HEX64),
        values_in_set("shallow_verify_ok", verify, "status", ["OK"]),
        values_in_set("signature_checked", verify, "object",
                      ["manifest.json", "manifest.json.copy"] + [o["object"] for o in objects]),
    ]
    return results
