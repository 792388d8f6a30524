"""Backup verification, the weekly maintenance stage (the runbook's "backup verification"):

- ``verify --all`` shallow: every complete backup's manifest signature, each object's presence,
  stored size and stored sha256, and the WAL archive's continuity (no keys needed);
- deep: the newest complete backup of each family (logical; physical = full or incremental)
  decrypted, decompressed and checked against its plaintext sha256, when the identity is
  configured (without it: skipped, and the report says so).

Each verify is one action in the run's report ({action: verify, object, status, detail,
seconds, before: null, after: {objects, failed}}); a failed verify is status ``failed`` (the
run's status then too) and the runbook's critical finding "data corruption detected" to
alerting, exactly as ``bvh-ops verify`` reports it; the rest of the plan goes on regardless.
"""

from __future__ import annotations

import time
from typing import Any

from bvh_ops.config import Settings
from bvh_ops.repository.manifest import PHYSICAL_KINDS
from bvh_ops.repository.verify import VerifyResult

FAMILIES = ("logical", "physical")


def _family(kind: str) -> str | None:
    return "logical" if kind == "logical" else "physical" if kind in PHYSICAL_KINDS else None


def _action(obj: str, results: list[VerifyResult], t0: float, what: str) -> dict[str, Any]:
    bad = [r for r in results if not r.ok]
    if bad:
        detail = f"{len(bad)} of {len(results)} objects failed: " + "; ".join(
            f"{r.backup_id + '/' if r.backup_id else ''}{r.object}: {r.status} {r.detail}".strip() for r in bad[:5])
    else:
        detail = f"{what}: {len(results)} objects OK"
    return {"action": "verify", "object": obj, "status": "failed" if bad else "done", "detail": detail[:1000],
            "seconds": round(time.monotonic() - t0, 3), "before": None,
            "after": {"objects": len(results), "failed": len(bad)}, "sql": None}


def skipped(obj: str, why: str) -> dict[str, Any]:
    return {"action": "verify", "object": obj, "status": "skipped", "detail": why, "seconds": 0.0,
            "before": None, "after": None, "sql": None}


def verify_stage(settings: Settings, *, deep: bool = True) -> tuple[list[dict[str, Any]], list[str]]:
    """Shallow verify of every backup and the WAL archive, then a deep verify of the newest of each
    family; (actions, notes). Never raises for a bad backup or an unreachable repository: those
    are failed actions."""
    from bvh_ops.alerting.verify import report_verify as report_to_alerting
    from bvh_ops.keys import load_identities
    from bvh_ops.repository.open import open_repository
    from bvh_ops.repository.verify import verify_backup
    from bvh_ops.wal.archive import verify_wal

    notes: list[str] = []
    if not settings.repository:
        return [skipped("repository", "no repository configured (BVH_OPS_REPOSITORY): nothing to verify")], notes
    t0 = time.monotonic()
    try:
        repo, _ = open_repository(settings)
        records = repo.list_backups()
    except Exception as exc:  # noqa: BLE001 - an unreachable repository is a failed verify, not a crash
        return [{**skipped("repository", ""), "status": "failed",
                 "detail": f"cannot list the repository: {type(exc).__name__}: {str(exc)[:300]}"}], notes
    ids = [r.backup_id for r in records if r.status != "incomplete"]
    actions: list[dict[str, Any]] = []
    every: list[VerifyResult] = []
    if not ids:
        actions.append(skipped("all backups (shallow)", f"no backups in {repo.store.url} yet"))
    else:
        shallow = [res for bid in ids for res in verify_backup(repo, bid)]
        every += shallow
        actions.append(_action(f"all backups (shallow, {len(ids)})", shallow, t0, f"{len(ids)} backups"))
    t0 = time.monotonic()
    wal = verify_wal(repo)
    every += wal
    actions.append(_action("WAL archive (shallow)", wal, t0, "continuity and stored sha256")
                   if wal else skipped("WAL archive (shallow)", "no physical backup: no WAL chain to verify"))
    identities = None
    if deep:
        if settings.identity is None:
            notes.append("deep verify skipped: identity is not set (BVH_OPS_IDENTITY): only stored hashes "
                         "were checked")
        else:
            try:
                identities = load_identities(settings.require_identity())
            except Exception as exc:  # noqa: BLE001 - a missing key file is reported, the shallow part stands
                actions.append({**skipped("deep verify", ""), "status": "failed",
                                "detail": f"cannot load the identity: {type(exc).__name__}: {str(exc)[:200]}"})
    if identities is not None:
        for family in FAMILIES:
            newest = [r for r in records if r.status == "complete" and r.signature_ok and _family(r.kind) == family]
            obj = f"newest {family} backup (deep)"
            if not newest:
                actions.append(skipped(obj, f"no complete trusted {family} backup"))
                continue
            rec = max(newest, key=lambda r: r.backup_id)    # ids begin with their UTC start time
            t0 = time.monotonic()
            results = verify_backup(repo, rec.backup_id, identities=identities)
            every += results
            actions.append(_action(f"{rec.backup_id} (deep, newest {family})", results, t0,
                                   "decrypted, decompressed, plaintext sha256"))
    problem = report_to_alerting(settings, every)
    if problem:
        notes.append(f"the verify could not be reported to alerting: {problem}")
    return actions, notes
