"""Failover: promote a standby built by `standby create`, with checks before and after, and
fence the old primary.

    before   ─ running and in archive recovery; given time to replay what is archived;
               behind the newest archived WAL by more than the RPO objective → refused
               (unless forced), naming the figure
    promote  ─ pg_ctl promote (no connection needed); recovery_end_command removes the
               recovery directory (identity copy, credentials)
    fence    ─ a signed fence record for the old timeline (bvh_ops.wal.fence): the old
               primary's bvh-ops-wal push refuses to continue its history into the repository
    after    ─ out of recovery, on a new timeline, the timeline's history file archived, the
               new primary's archive_command pointing at the repository, a test write
               (a WAL message, not a table row) archived on the new timeline, the identity
               copy gone.

Why the catch-up wait matters: PostgreSQL ends recovery at the first "not in the archive" after
the promote request, so a standby promoted while behind (``force``) may stop short of WAL the
archive holds. The pre-check therefore gives it ``catch_up_timeout`` to replay everything
archived, and ``force`` means "promote where it stands".

A failover drill promotes with ``drill=True``: no fence and no archiving (a drill must not
write a timeline into the repository or fence the live primary).
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from psycopg.conninfo import make_conninfo

from bvh_ops.config import Settings
from bvh_ops.errors import BvhOpsError, ConfigError, IntegrityError, NotFound
from bvh_ops.pg.cluster import server_env, server_ids
from bvh_ops.physical.restore import RECOVERY_DIR, recovery_log
from bvh_ops.results import CheckResult, CheckStatus
from bvh_ops.standby.lag import failover_verdict
from bvh_ops.standby.standby import (
    controldata,
    lag_of,
    load_meta,
    newest_history_timeline,
    port_of,
    repository_settings,
    standby_status,
)


class FailoverRefused(IntegrityError):
    """The pre-checks refused the promotion (exit code 8); nothing was changed."""


def standby_dsn(settings: Settings, data: Path, meta: dict, dsn: str | None = None) -> str:
    """How to connect to the promoted server: ``dsn``, else database_url's role and password
    (the standby has the primary's roles) pointed at 127.0.0.1 and the standby's port."""
    if dsn:
        return dsn
    if settings.database_url is None:
        raise ConfigError("failover's checks connect to the promoted server with database_url's role and password: "
                          "set BVH_OPS_DATABASE_URL (or pass --dsn)")
    return make_conninfo(settings.database_url.get_secret_value(), host="127.0.0.1", hostaddr=None,
                         port=str(port_of(data, meta)))


def wait_caught_up(settings: Settings, data: Path, *, timeout: float, clock: Callable[[], datetime],
                   interval: float = 0.5) -> dict:
    """Poll the standby's status until it has replayed the newest archived segment (or
    ``timeout`` passed, or it stopped); returns the last status."""
    deadline = time.monotonic() + timeout
    while True:
        doc = standby_status(settings, data, now=clock())
        if doc["caught_up"] or doc["state"] != "standby" or time.monotonic() >= deadline:
            return doc
        time.sleep(interval)


def promote(data: Path, meta: dict, *, timeout: float) -> None:
    from bvh_ops.physical.restore import _server_user

    proc = subprocess.run([str(Path(meta["bin_dir"]) / "pg_ctl"), "-D", str(data), "-w", "-t", str(int(timeout)),
                           "promote"], capture_output=True, cwd="/", env=server_env(),
                          **server_ids(_server_user(data)))
    if proc.returncode != 0:
        raise BvhOpsError(f"pg_ctl promote failed: {proc.stderr.decode(errors='replace').strip()[-300:]} "
                          f"(log: {recovery_log(data)})")


def _check(name: str, ok: bool | None, detail: str) -> CheckResult:
    status = CheckStatus.NOT_VERIFIED if ok is None else (CheckStatus.PASSED if ok else CheckStatus.FAILED)
    return CheckResult(name, status, detail)


def _wait(condition: Callable[[], object], timeout: float, interval: float = 0.3):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def failover(settings: Settings, target_dir: Path, *, force: bool = False, dsn: str | None = None,
             drill: bool = False, catch_up_timeout: float = 120.0, timeout: float = 300.0,
             clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> dict:
    """Promote the standby in ``target_dir``; returns the report (checks before and after, the
    fence). Raises FailoverRefused when a pre-check refuses; post-check failures are in the
    report (the promotion has happened: the caller reports them)."""
    data = Path(target_dir).resolve()
    meta = load_meta(data)
    started = clock()
    # Before: running, in recovery, replayed what the archive holds (given time to catch up).
    pre = wait_caught_up(settings, data, timeout=catch_up_timeout, clock=clock)
    if pre["state"] == "stopped":
        raise FailoverRefused(f"the standby in {data} is not running: start it (pg_ctl -D {data} start, as its OS "
                              "user) and let it catch up, then fail over")
    if pre["state"] != "standby":
        raise FailoverRefused(f"{data} is not in recovery (already promoted?): nothing to fail over")
    verdict = failover_verdict(lag_of(pre), settings.rpo_objective_seconds, force=force)
    if not verdict.allowed:
        raise FailoverRefused(verdict.reason)
    checks = [_check("standby_in_recovery", True, f"running in archive recovery on timeline {pre['timeline']}"),
              # Forced past the objective: an operator's decision in a real failover, a miss in a drill.
              _check("standby_lag", not (drill and verdict.reason.startswith("forced")), verdict.reason)]
    old_tl = pre["timeline"]
    # Promote: recovery ends, the recovery directory (identity copy, credentials) goes.
    promote(data, meta, timeout=timeout)
    promoted_at = clock()
    ctl = controldata(data, meta["bin_dir"])
    checks.append(_check("out_of_recovery", ctl.get("Database cluster state") == "in production",
                         f"pg_controldata: {ctl.get('Database cluster state')}"))
    new_tl = _wait(lambda: newest_history_timeline(data), 30) or None
    checks.append(_check("new_timeline", bool(new_tl and new_tl > old_tl),
                         f"timeline {old_tl} → {new_tl}" if new_tl else "no timeline history file in pg_wal"))
    gone = _wait(lambda: not (data / RECOVERY_DIR).exists(), 30)
    checks.append(_check("recovery_dir_removed", bool(gone), "identity copy and credentials removed at promotion"
                         if gone else f"{data / RECOVERY_DIR} still exists: remove it"))
    switch_lsn = _switch_lsn(data, new_tl, old_tl) if new_tl else None
    fence = None
    if not drill and new_tl:
        # Fence first: the sooner the old primary cannot continue its history, the better. In
        # the repository the standby came from, and (built from the replica) in the primary's
        # too, where the old primary archives: it may be unreachable in a regional outage.
        fence = write_fence(settings, meta, old_tl=old_tl, new_tl=new_tl, switch_lsn=switch_lsn, now=clock())
        checks.append(_check("old_primary_fenced", True, f"{fence['key']} written in {meta['repository']}: "
                             f"bvh-ops-wal push refuses timeline {old_tl} WAL past {switch_lsn}"))
        if meta["source"] == "replica":
            try:
                write_fence(settings, {**meta, "source": "primary"}, old_tl=old_tl, new_tl=new_tl,
                            switch_lsn=switch_lsn, now=clock())
                checks.append(_check("old_primary_fenced_in_primary_repository", True,
                                     f"{fence['key']} written in {settings.require_repository()}"))
            except BvhOpsError as exc:
                checks.append(_check("old_primary_fenced_in_primary_repository", None,
                                     f"the primary repository is unreachable ({exc}): run `bvh-ops standby "
                                     f"fence --target-dir {data} --to primary` once it is back"))
    conn_dsn = standby_dsn(settings, data, meta, dsn)
    checks.extend(_connected_checks(settings, meta, conn_dsn, new_tl, drill=drill, timeout=timeout))
    report = {"target_dir": str(data), "drill": drill, "forced": force and verdict.reason.startswith("forced"),
              "started_at": started.isoformat(), "promoted_at": promoted_at.isoformat(),
              "finished_at": clock().isoformat(), "old_timeline": old_tl, "new_timeline": new_tl,
              "switch_lsn": switch_lsn, "repository": meta["repository"], "port": port_of(data, meta),
              "before": {k: pre[k] for k in ("replayed_segment", "replayed_at", "archive_newest", "archive_newest_at",
                                             "lag_segments", "lag_bytes", "behind_seconds", "data_age_seconds")},
              "fence": fence, "checks": [c.to_json() for c in checks],
              "passed": all(c.passed for c in checks)}
    return report


def _connected_checks(settings: Settings, meta: dict, dsn: str, new_tl: int | None, *, drill: bool,
                      timeout: float) -> list[CheckResult]:
    from bvh_ops.physical.backup import switch_wal_and_wait
    from bvh_ops.storage import open_store
    from bvh_ops.wal.store import is_archived

    out = []
    try:
        conn = _wait(lambda: _try_connect(dsn), 60)
        if not conn:
            return [_check("accepts_connections", False, "the promoted server does not accept connections")]
        with conn:
            in_rec = connect_row(conn, "SELECT pg_is_in_recovery()")[0]
            out.append(_check("accepts_writes", not in_rec, "pg_is_in_recovery() = false" if not in_rec
                              else "still in recovery"))
            if drill:
                return out
            mode = connect_row(conn, "SHOW archive_mode")[0]
            command = connect_row(conn, "SHOW archive_command")[0]
            ok = mode == "on" and meta.get("archive_config") and meta["archive_config"] in command
            out.append(_check("archive_configured", bool(ok), f"archive_mode {mode}; archive_command archives into "
                              f"{meta['repository']} (via {meta.get('archive_config')})" if ok else
                              f"archive_mode {mode}, archive_command {command!r}: not bvh-ops-wal push into the "
                              "repository"))
            store = open_store(repository_settings(settings, meta["source"]))
            hist = f"{new_tl:08X}.history" if new_tl else None
            if hist:
                found = _wait(lambda: is_archived(store, hist), timeout)
                out.append(_check("timeline_history_archived", bool(found),
                                  f"{hist} in the repository" if found else f"{hist} not archived within {timeout:.0f} s"))
            try:
                seg, _lsn = switch_wal_and_wait(conn, timeout=timeout)
                on_new = new_tl is not None and int(seg[:8], 16) == new_tl
                stored = is_archived(store, seg)
                out.append(_check("test_write_archived", on_new and stored,
                                  f"WAL message archived as {seg} (timeline {int(seg[:8], 16)})"
                                  + ("" if stored else ": not found in the repository")))
            except BvhOpsError as exc:
                out.append(_check("test_write_archived", False, str(exc)))
    except BvhOpsError as exc:
        out.append(_check("accepts_connections", False, str(exc)))
    return out


def connect_row(conn, query: str):
    return conn.execute(query).fetchone()


def _try_connect(dsn: str):
    from bvh_ops.pg.conn import connect

    try:
        return connect(dsn, autocommit=True)
    except BvhOpsError:
        return None


def _switch_lsn(data: Path, new_tl: int, old_tl: int) -> str | None:
    """Where timeline ``old_tl`` ended: its line in the new timeline's history file."""
    try:
        text = (data / "pg_wal" / f"{new_tl:08X}.history").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit() and int(parts[0]) == old_tl:
            return parts[1]
    return None


def write_fence(settings: Settings, meta: dict, *, old_tl: int, new_tl: int, switch_lsn: str | None,
                now: datetime) -> dict:
    """The signed fence record of the old timeline in the standby's repository."""
    from bvh_ops.repository.manifest import canonical
    from bvh_ops.repository.open import open_repository
    from bvh_ops.wal.fence import FENCE_FORMAT, fence_key

    if switch_lsn is None:
        raise IntegrityError(f"timeline {new_tl}'s history file does not say where timeline {old_tl} ended: "
                             "cannot fence; stop the old primary by hand (docs/OPERATIONS.md 'Failover at 02:00')")
    repo, host_key = open_repository(repository_settings(settings, meta["source"]), check=False)
    record = {"system_identifier": str(meta["system_identifier"]), "timeline": old_tl, "new_timeline": new_tl,
              "switch_lsn": switch_lsn, "segment_size": int(meta["segment_size"]), "fenced_at": now.isoformat(),
              "host": socket.gethostname(), "reason": "failover"}
    envelope = {"format": FENCE_FORMAT, "fence": record,
                "signature": {"alg": "ed25519", "key_id": host_key.key_id, "public_key": host_key.public_b64,
                              "value": host_key.sign(canonical(record))}}
    key = fence_key(record["system_identifier"], old_tl)
    repo.store.put_bytes(key, json.dumps(envelope, sort_keys=True, indent=1).encode() + b"\n")
    _readable_by_archiver(repository_settings(settings, meta["source"]).require_repository(), key)
    return {"key": key, **record, "signed_by": host_key.key_id}


def _readable_by_archiver(url: str, key: str) -> None:
    """In a file:// repository the old primary's archiver (another OS user) must be able to
    read the fence, or it could not honour it: world-readable (it holds no secret)."""
    if not url.startswith("file://"):
        return
    import os

    path = Path(url[len("file://"):]) / key
    os.chmod(path.parent, os.stat(path.parent).st_mode | 0o005)  # fence/: listable
    os.chmod(path.parent.parent, os.stat(path.parent.parent).st_mode | 0o001)  # the root: traversable only
    os.chmod(path, 0o644)


def show_fences(settings: Settings) -> list[dict]:
    """The fence records in the repository, each with whether a trusted host key signed it."""
    from bvh_ops.keys import host_key_id, verify_signature
    from bvh_ops.repository.manifest import canonical
    from bvh_ops.repository.open import open_repository
    from bvh_ops.wal.fence import FENCE_PREFIX

    repo, _ = open_repository(settings, check=False)
    out = []
    for info in repo.store.list(FENCE_PREFIX):
        try:
            env = json.loads(repo.store.get_bytes(info.key))
            sig, record = env["signature"], env["fence"]
        except (NotFound, ValueError, KeyError):
            out.append({"key": info.key, "trusted": False, "detail": "unreadable"})
            continue
        trusted = repo.trusted_keys.get(sig.get("key_id", ""))
        ok = bool(trusted) and host_key_id(trusted) == sig.get("key_id") and verify_signature(
            trusted, sig.get("value", ""), canonical(record))
        out.append({"key": info.key, **record, "trusted": ok,
                    "detail": f"signed by host key {sig.get('key_id')}" if ok else "signature not by a trusted host key"})
    return out


def fence_again(settings: Settings, target_dir: Path, *, to: str) -> dict:
    """Write the fence of a promoted standby (again) into repository ``to`` (primary or
    replica): after a failover that could not reach it."""
    data = Path(target_dir).resolve()
    meta = load_meta(data)
    new_tl = newest_history_timeline(data)
    if new_tl is None or new_tl <= int(meta["timeline"]):
        raise BvhOpsError(f"{data} has not been promoted (no new timeline): nothing to fence")
    lines = [ln.split() for ln in (data / "pg_wal" / f"{new_tl:08X}.history").read_text().splitlines()]
    parents = [int(p[0]) for p in lines if p and p[0].isdigit()]
    old_tl = parents[-1] if parents else new_tl - 1  # the last line: the timeline it switched from
    return write_fence(settings, {**meta, "source": to}, old_tl=old_tl, new_tl=new_tl,
                       switch_lsn=_switch_lsn(data, new_tl, old_tl), now=datetime.now(UTC))
