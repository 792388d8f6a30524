"""Replication's entry points, each a list of steps: open both repositories, list both, plan
(pure), copy and verify, record how far the replica is in step.

``replicate``: copy what the replica lacks or holds stale (``verify``: first hash every replica
object and re-copy the corrupt ones). ``status``: the lag without copying; when the replica
cannot be listed, an estimate from the last time it was known in step (never "in step").
The last run's outcome is kept in ``<state_dir>/replica/state.json`` (no secret in it).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from bvh_ops.config import Settings
from bvh_ops.errors import BvhOpsError, StorageError
from bvh_ops.replica import plan as planner
from bvh_ops.replica.copy import execute, find_corrupt
from bvh_ops.storage import open_store
from bvh_ops.storage.base import ObjectStore


def _listing(store: ObjectStore, prefix: str = "") -> list[planner.Obj]:
    return [planner.Obj(i.key, i.size, i.modified) for i in store.list(prefix)]


def open_replica(settings: Settings) -> ObjectStore:
    """The replica's store, checked (bucket there, credentials accepted); one-line errors that
    name the replica's settings, not the primary's."""
    store = open_store(settings.for_replica())
    try:
        store.check()
    except StorageError as exc:
        text = str(exc).replace("BVH_OPS_REPOSITORY", "BVH_OPS_REPLICA_REPOSITORY")
        if "unreachable" in text:
            text += (": check replica_s3_endpoint_url and the network to it (the primary is unaffected; "
                     "`bvh-ops replicate` catches up once it answers)")
        raise type(exc)(f"replica {store.url}: {text}") from None
    return store


def _replica_listing(store: ObjectStore, prefix: str = "") -> list[planner.Obj]:
    try:
        return _listing(store, prefix)
    except StorageError as exc:
        raise type(exc)(f"replica {store.url}: {exc}") from None


def _state_path(settings: Settings) -> Path:
    return Path(settings.state_dir) / "replica" / "state.json"


def load_state(settings: Settings) -> dict:
    try:
        doc = json.loads(_state_path(settings).read_text())
    except (OSError, ValueError):
        return {}
    return doc if doc.get("replica") == settings.replica_repository else {}


def _save_state(settings: Settings, doc: dict) -> None:
    path = _state_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"replica": settings.replica_repository, **doc}, indent=1))
    os.replace(tmp, path)


@dataclass
class Report:
    primary: str
    replica: str
    listed_at: datetime
    planned_objects: int = 0
    planned_bytes: int = 0
    copied_objects: int = 0
    copied_bytes: int = 0
    server_side: int = 0
    units_copied: int = 0
    corrupt: list[str] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)
    seconds: float = 0.0
    lag_before: planner.Lag = field(default_factory=planner.Lag)
    lag_after: planner.Lag = field(default_factory=planner.Lag)
    verified: bool = False

    @property
    def ok(self) -> bool:
        return not self.failures and not self.deferred

    def to_json(self) -> dict:
        return {"primary": self.primary, "replica": self.replica, "ok": self.ok, "verified": self.verified,
                "planned": {"objects": self.planned_objects, "bytes": self.planned_bytes},
                "copied": {"objects": self.copied_objects, "bytes": self.copied_bytes, "units": self.units_copied,
                           "server_side": self.server_side},
                "corrupt_recopied": self.corrupt,
                "failures": [{"unit": u, "error": e} for u, e in self.failures], "deferred": self.deferred,
                "seconds": round(self.seconds, 3),
                "mb_per_s": round(self.copied_bytes / 1e6 / self.seconds, 2) if self.seconds else None,
                "lag_before": self.lag_before.to_json(), "lag_after": self.lag_after.to_json()}


def replicate(settings: Settings, now: datetime, *, verify: bool = False, prefix: str = "") -> Report:
    """Bring the replica in step with the primary (never deleting on it); ``prefix`` "wal/":
    the WAL alone (the follow passes between full ones)."""
    started = time.monotonic()
    src = open_store(settings)                          # the primary, where nothing waits on us
    dst = open_replica(settings)                        # fails in one line: bucket, credentials
    primary = _listing(src, prefix)                     # listed once: what is committed now
    replica = _replica_listing(dst, prefix)
    report = Report(src.url, dst.url, now, verified=verify)
    if verify:                                          # hash every replica object; corrupt -> re-copy
        units, _ = planner.group_units(primary)
        report.corrupt = find_corrupt(src, dst, units, {o.key: o.size for o in replica})
    todo = planner.plan(primary, replica, corrupt=report.corrupt)
    report.lag_before = planner.lag(todo, now)
    report.planned_objects, report.planned_bytes = report.lag_before.objects, report.lag_before.bytes
    outcome = execute(src, dst, todo, workers=settings.replica_copy_workers)  # commit points last
    report.copied_objects, report.copied_bytes = outcome.stats.objects, outcome.stats.bytes
    report.server_side, report.units_copied = outcome.stats.server_side, outcome.units
    report.failures, report.deferred = outcome.failures, outcome.deferred
    report.lag_after = planner.lag(planner.plan(primary, _replica_listing(dst, prefix)), now)
    report.seconds = time.monotonic() - started
    if prefix:
        return report                                   # a partial pass says nothing of the rest
    state = load_state(settings)
    state.update({"last_run_at": now.isoformat(), "last_ok": report.ok, "lag": report.lag_after.to_json()})
    if report.ok and report.lag_after.objects == 0:
        state["caught_up_at"] = now.isoformat()         # everything committed before the listing is there
    _save_state(settings, state)
    return report


def follow_wal(settings: Settings, seconds: float, poll_seconds: float, *,
               clock=time.monotonic, sleep=time.sleep, wall=None) -> dict:
    """WAL-only passes every ``poll_seconds`` for ``seconds``: between two scheduled runs the
    replica's WAL lag stays near the poll interval instead of the schedule's (an RPO of 5
    minutes cannot wait for a 5-minute schedule). Returns passes, objects and bytes copied and
    the largest WAL lag seen before a pass."""
    from datetime import UTC

    wall = wall or (lambda: datetime.now(UTC))
    end = clock() + seconds
    done = {"passes": 0, "objects": 0, "bytes": 0, "wal_lag_max_seconds": 0.0, "failures": []}
    while clock() + poll_seconds <= end:
        sleep(poll_seconds)
        r = replicate(settings, wall(), prefix="wal/")
        done["passes"] += 1
        done["objects"] += r.copied_objects
        done["bytes"] += r.copied_bytes
        done["wal_lag_max_seconds"] = max(done["wal_lag_max_seconds"], round(r.lag_before.wal_seconds, 1))
        done["failures"] += [{"unit": u, "error": e} for u, e in r.failures]
        if r.failures:
            break  # the next scheduled run reports and retries it
    return done


def verify_replica(settings: Settings, now: datetime) -> Report:
    """`bvh-ops replica verify`: the verify pass plus the re-copy of what it found."""
    return replicate(settings, now, verify=True)


def status(settings: Settings, now: datetime) -> dict:
    """Lag in objects, bytes and seconds (WAL apart). The primary must be readable; a replica
    that is not is reported ``reachable: false`` with an estimate that grows with the outage."""
    if not settings.replica_repository:
        settings.for_replica()  # raises the one-line ConfigError saying how to set it
    src = open_store(settings)
    primary = _listing(src)
    state = load_state(settings)
    doc = {"primary": src.url, "replica": settings.replica_repository, "now": now.isoformat(),
           "last_run_at": state.get("last_run_at"), "caught_up_at": state.get("caught_up_at")}
    try:
        dst = open_replica(settings)
        todo = planner.plan(primary, _replica_listing(dst))
    except BvhOpsError as exc:
        caught = state.get("caught_up_at")
        lag = planner.lag_since(primary, datetime.fromisoformat(caught) if caught else None, now)
        return {**doc, "reachable": False, "error": str(exc), "estimated": True, "lag": lag.to_json(),
                "in_step": None}
    lag = planner.lag(todo, now)
    return {**doc, "reachable": True, "estimated": False, "lag": lag.to_json(), "in_step": lag.objects == 0,
            "units": todo.units, "not_committed_on_primary": len(todo.skipped)}


def wal_lag(settings: Settings, now: datetime) -> planner.Lag:
    """The replica's WAL lag alone (one wal/ listing of each side: cheap enough for a probe).
    Raises StorageError when the replica cannot be listed."""
    src = open_store(settings)
    primary = [planner.Obj(i.key, i.size, i.modified) for i in src.list("wal/")]
    dst = open_replica(settings)
    try:
        replica = [planner.Obj(i.key, i.size, i.modified) for i in dst.list("wal/")]
    except StorageError as exc:
        raise type(exc)(f"replica {dst.url}: {exc}") from None
    return planner.lag(planner.plan(primary, replica), now)


def audit_replication(settings: Settings, doc: dict, conn=None) -> bool:
    """An audit entry for a pass that changed the replica (never failing the caller)."""
    from bvh_ops.audit.record import record

    return record(settings, None, "replica.replicate", doc["replica"],
                  {"units": doc["copied"]["units"], "objects": doc["copied"]["objects"],
                   "bytes": doc["copied"]["bytes"], "corrupt_recopied": len(doc["corrupt_recopied"]),
                   "failures": len(doc["failures"])}, conn=conn)
