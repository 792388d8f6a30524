"""The backup integrity suite: GX expectations over a backup's manifest (as read back from the
repository) against the stats taken in the snapshot, plus the shallow verify results."""

from __future__ import annotations

from bvh_ops.results import CheckResult, CheckStatus
from checks.gx import validate_frame

HEX64 = r"^[0-9a-f]{64}$"
FINGERPRINT = r"^[0-9]+:(-?[0-9]+(:rec|:lo)?|[0-9a-f]{64}:copy)$"


def backup_frames(snapshot_tables: list[str], snapshot_stats: dict[str, dict], manifest, verify_results):
    """Small frames (one row per table / object / verify result), never table data."""
    import pandas as pd

    recorded = {t.name: t for t in manifest.tables}
    tables = pd.DataFrame(
        [
            {
                "table": name,
                "in_manifest": name in recorded,
                "rows_snapshot": snapshot_stats.get(name, {}).get("rows", -1),
                "rows_manifest": recorded[name].rows if name in recorded else -2,
                "fingerprint_snapshot": snapshot_stats.get(name, {}).get("fingerprint", ""),
                "fingerprint_manifest": recorded[name].fingerprint if name in recorded else None,
            }
            for name in snapshot_tables
        ],
        columns=["table", "in_manifest", "rows_snapshot", "rows_manifest", "fingerprint_snapshot",
                 "fingerprint_manifest"],
    ).astype({"fingerprint_snapshot": object, "fingerprint_manifest": object, "table": object})
    objects = pd.DataFrame(
        [{"object": o.name, "stored_size": o.stored_size, "plaintext_size": o.plaintext_size,
          "stored_sha256": o.stored_sha256, "plaintext_sha256": o.plaintext_sha256} for o in manifest.objects],
        columns=["object", "stored_size", "plaintext_size", "stored_sha256", "plaintext_sha256"],
    ).astype({"object": object, "stored_sha256": object, "plaintext_sha256": object})
    verify = pd.DataFrame([{"object": r.object, "status": str(r.status)} for r in verify_results],
                          columns=["object", "status"]).astype(object)
    return tables, objects, verify


def run_backup_suite(snapshot_tables, snapshot_stats, manifest, verify_results) -> list[CheckResult]:
    import great_expectations as gx

    tables, objects, verify = backup_frames(snapshot_tables, snapshot_stats, manifest, verify_results)
    E = gx.expectations
    results: list[CheckResult] = []
    if tables.empty:
        results.append(CheckResult("tables_present", CheckStatus.NOT_VERIFIED, "the snapshot listed no tables"))
    else:
        results += validate_frame("backup-tables", tables, [
            ("tables_present", E.ExpectColumnValuesToBeInSet(column="in_manifest", value_set=[True])),
            ("row_counts_equal", E.ExpectColumnPairValuesToBeEqual(column_A="rows_snapshot", column_B="rows_manifest")),
            ("fingerprints_equal", E.ExpectColumnPairValuesToBeEqual(
                column_A="fingerprint_snapshot", column_B="fingerprint_manifest")),
            ("hashes_present", E.ExpectColumnValuesToMatchRegex(column="fingerprint_manifest", regex=FINGERPRINT)),
        ])
    results += validate_frame("backup-objects", objects, [
        ("objects_present", E.ExpectTableRowCountToBeBetween(min_value=1)),
        ("object_sizes_positive", E.ExpectColumnValuesToBeBetween(column="stored_size", min_value=1)),
        ("stored_sha256_present", E.ExpectColumnValuesToMatchRegex(column="stored_sha256", regex=HEX64)),
        ("plaintext_sha256_present", E.ExpectColumnValuesToMatchRegex(column="plaintext_sha256", regex=HEX64)),
    ])
    results += validate_frame("backup-verify", verify, [
        ("shallow_verify_ok", E.ExpectColumnValuesToBeInSet(column="status", value_set=["OK"])),
        ("signature_checked", E.ExpectColumnValuesToBeInSet(
            column="object", value_set=["manifest.json", "manifest.json.copy"] + list(objects["object"]))),
    ])
    return results
