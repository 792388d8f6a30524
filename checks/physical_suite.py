"""The physical backup suite: expectations over small records describing one physical backup:
its stored objects (shallow verify), its chain (every parent present, trusted, of the same
cluster), PostgreSQL's backup_manifest (authenticated, its own checksum, every file's CRC32C
checked while streaming) and the WAL archive's continuity since the chain's base. A few records
in hand, checked directly (checks.inhand): a backup never waits on Great Expectations' import."""

from __future__ import annotations

from bvh_ops.errors import BvhOpsError
from bvh_ops.pg.physinfo import PhysicalInfo
from bvh_ops.results import CheckResult, CheckStatus
from checks.inhand import values_in_set


def physical_records(repo, manifest, verify_results, chain=None):
    """(verify, chain, pg_manifest) records: one per verify result, chain member, manifest item.
    ``chain``: the backup's chain if the caller has resolved it already (else resolved here)."""
    from bvh_ops.pg.tarscan import parse_backup_manifest
    from bvh_ops.physical.backup import chain_of, fetch_pg_manifest

    verify = [{"object": r.object, "status": str(r.status)} for r in verify_results]
    rows = []
    try:
        for m in chain if chain is not None else chain_of(repo, manifest):
            rows.append({"backup_id": m.backup_id, "kind": m.kind, "trusted": True,
                         "same_cluster": m.system_identifier == manifest.system_identifier})
    except BvhOpsError as exc:
        rows.append({"backup_id": f"(broken: {exc})", "kind": "?", "trusted": False, "same_cluster": False})
    pg_rows = []
    info = PhysicalInfo.of(manifest)
    if info.mode == "native":
        try:
            doc = parse_backup_manifest(fetch_pg_manifest(repo, manifest))
            pg_rows.append({"item": "backup_manifest", "ok": True, "files": len(doc["Files"]),
                            "system_identifier": str(doc.get("System-Identifier"))})
        except BvhOpsError as exc:
            pg_rows.append({"item": f"backup_manifest: {exc}", "ok": False, "files": 0, "system_identifier": ""})
        pg_rows.append({"item": "files checked against it while streaming", "ok": bool(info.files_checked),
                        "files": info.files_checked, "system_identifier": ""})
    return verify, rows, pg_rows


def run_physical_suite(repo, manifest, verify_results, wal_report, chain=None) -> list[CheckResult]:
    verify, chain_rows, pgm = physical_records(repo, manifest, verify_results, chain)
    results = [
        values_in_set("shallow_verify_ok", verify, "status", ["OK"]),
        values_in_set("chain_complete", chain_rows, "trusted", [True]),
        values_in_set("chain_same_cluster", chain_rows, "same_cluster", [True]),
        values_in_set("chain_starts_with_full", chain_rows, "kind", ["full", "incremental"]),
    ]
    if pgm:
        results.append(values_in_set("pg_backup_manifest", pgm, "ok", [True]))
    info = PhysicalInfo.of(manifest)
    if info.archive_mode == "off":
        # The tar carries the WAL from start to stop (-X fetch), checked with the other files
        # against backup_manifest: restorable to its end point, but no point-in-time recovery.
        status = CheckStatus.PASSED if info.mode == "native" else CheckStatus.NOT_VERIFIED
        results.append(CheckResult("wal_continuity", status,
                                   "archive_mode is off on the server: the backup carries the WAL it needs "
                                   "(restorable to its end point only; no point-in-time recovery)"))
    else:
        # Every gap or damaged segment fails it; the summary names them.
        results.append(CheckResult("wal_continuity", CheckStatus.PASSED if wal_report.ok else CheckStatus.FAILED,
                                   wal_report.summary()))
    return results


def check_archiver(status: dict, rpo_objective_seconds: float) -> CheckResult:
    """PostgreSQL's archiver is keeping up: not failing now, and no segment has waited longer
    than the RPO objective (an idle cluster with nothing waiting passes however old its last
    segment is)."""
    if status["archive_mode"] == "off":
        return CheckResult("wal_archiver", CheckStatus.NOT_VERIFIED, "archive_mode is off on the server")
    if status["failing"]:
        return CheckResult("wal_archiver", CheckStatus.FAILED,
                           f"archive_command is failing: last failure on {status['last_failed_wal']} "
                           f"({status['failed_count']} failures); see the server log")
    age, ready = status["last_archived_age_seconds"], status["ready_segments"]
    if ready and age is not None and age > rpo_objective_seconds:
        return CheckResult("wal_archiver", CheckStatus.FAILED,
                           f"{ready} segments waiting and the last one archived {age:.0f} s ago: more than the "
                           f"RPO objective of {rpo_objective_seconds:.0f} s")
    return CheckResult("wal_archiver", CheckStatus.PASSED,
                       f"last archived {status['last_archived_wal']} {age:.0f} s ago; "
                       f"{ready if ready is not None else '?'} segments waiting" if age is not None
                       else f"nothing archived yet; {ready if ready is not None else '?'} segments waiting")
