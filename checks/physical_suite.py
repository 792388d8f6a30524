"""The physical backup suite: GX expectations over small frames describing one physical
backup: its stored objects (shallow verify), its chain (every parent present, trusted, of the
same cluster), PostgreSQL's backup_manifest (authenticated, its own checksum, every file's
CRC32C checked while streaming) and the WAL archive's continuity since the chain's base."""

from __future__ import annotations

from bvh_ops.errors import BvhOpsError
from bvh_ops.pg.physinfo import PhysicalInfo
from bvh_ops.results import CheckResult, CheckStatus
from checks.gx import validate_frame


def physical_frames(repo, manifest, verify_results, wal_report):
    import pandas as pd

    from bvh_ops.pg.tarscan import parse_backup_manifest
    from bvh_ops.physical.backup import chain_of, fetch_pg_manifest

    verify = pd.DataFrame([{"object": r.object, "status": str(r.status)} for r in verify_results],
                          columns=["object", "status"]).astype(object)
    rows = []
    try:
        chain = chain_of(repo, manifest)
        for m in chain:
            rows.append({"backup_id": m.backup_id, "kind": m.kind, "trusted": True,
                         "same_cluster": m.system_identifier == manifest.system_identifier})
    except BvhOpsError as exc:
        rows.append({"backup_id": f"(broken: {exc})", "kind": "?", "trusted": False, "same_cluster": False})
    chain_frame = pd.DataFrame(rows, columns=["backup_id", "kind", "trusted", "same_cluster"]).astype(object)
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
    pg_frame = pd.DataFrame(pg_rows, columns=["item", "ok", "files", "system_identifier"]).astype(object)
    wal_rows = [{"segment": n, "status": "missing"} for n in wal_report.missing] + \
               [{"segment": n, "status": f"damaged: {d}"} for n, d in wal_report.damaged]
    wal_frame = pd.DataFrame(wal_rows, columns=["segment", "status"]).astype(object)
    return verify, chain_frame, pg_frame, wal_frame


def run_physical_suite(repo, manifest, verify_results, wal_report) -> list[CheckResult]:
    import great_expectations as gx

    verify, chain, pgm, wal = physical_frames(repo, manifest, verify_results, wal_report)
    E = gx.expectations
    results: list[CheckResult] = []
    results += validate_frame("physical-verify", verify, [
        ("shallow_verify_ok", E.ExpectColumnValuesToBeInSet(column="status", value_set=["OK"])),
    ])
    results += validate_frame("physical-chain", chain, [
        ("chain_complete", E.ExpectColumnValuesToBeInSet(column="trusted", value_set=[True])),
        ("chain_same_cluster", E.ExpectColumnValuesToBeInSet(column="same_cluster", value_set=[True])),
        ("chain_starts_with_full", E.ExpectColumnValuesToBeInSet(column="kind", value_set=["full", "incremental"])),
    ])
    if not pgm.empty:
        results += validate_frame("physical-pg-manifest", pgm, [
            ("pg_backup_manifest", E.ExpectColumnValuesToBeInSet(column="ok", value_set=[True])),
        ])
    info = PhysicalInfo.of(manifest)
    if info.archive_mode == "off":
        # The tar carries the WAL from start to stop (-X fetch), checked with the other files
        # against backup_manifest: restorable to its end point, but no point-in-time recovery.
        status = CheckStatus.PASSED if info.mode == "native" else CheckStatus.NOT_VERIFIED
        results.append(CheckResult("wal_continuity", status,
                                   "archive_mode is off on the server: the backup carries the WAL it needs "
                                   "(restorable to its end point only; no point-in-time recovery)"))
    else:
        # An empty frame passes ExpectColumnValuesToBeInSet: the rows are the gaps.
        res = validate_frame("physical-wal", wal, [
            ("wal_continuity", E.ExpectTableRowCountToEqual(value=0)),
        ])
        results += [CheckResult(r.name, r.status, wal_report.summary()) if r.status is not CheckStatus.NOT_VERIFIED
                    else r for r in res]
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
