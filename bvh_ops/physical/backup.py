"""Physical backups: `pg_basebackup -D - -Ft -X fetch` streamed as one tar (with the WAL it
needs for consistency and PostgreSQL's own backup_manifest inside) through the same zstd →
AES-GCM → repository pipeline, committed by a signed manifest.

* full: a new chain.
* incremental on PostgreSQL ≥ 17: `pg_basebackup --incremental=<parent's backup_manifest>`
  (needs summarize_wal = on). The parent's backup_manifest is stored beside its backup in
  plain (file names, sizes and checksums, no table data) so a backup host without the restore
  key can use it; its sha256 is in the parent's signed manifest, so a tampered copy is refused.
* incremental on older servers: a WAL-only increment: the archived WAL since the chain's base,
  checked for continuity and recorded in a manifest (restorable to any point in that range).

While the tar streams, every file's CRC32C is checked against the server's backup_manifest
(bvh_ops.pg.tarscan): what pg_verifybackup checks, without a local copy.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from bvh_ops import __version__
from bvh_ops.config import Settings
from bvh_ops.errors import BvhOpsError, IntegrityError, NotFound, ToolError
from bvh_ops.keys import load_recipients
from bvh_ops.pg.conn import connect
from bvh_ops.pg.lock import TargetLock
from bvh_ops.pg.lsn import DEFAULT_SEGMENT
from bvh_ops.pg.physinfo import PhysicalInfo
from bvh_ops.pg.tarscan import TarScanner
from bvh_ops.pg.tools import StderrTail, matching_bin_dir, pg_env, raise_for_tool, spawn_to_socket
from bvh_ops.physical.plan import plan_physical
from bvh_ops.repository.manifest import PHYSICAL_KINDS, BackupResult, Manifest
from bvh_ops.repository.open import open_repository
from bvh_ops.repository.repo import Repository, backup_prefix, new_backup_id, stats_to_entry
from bvh_ops.storage.base import ObjectStore
from bvh_ops.stream import ReadAhead, seal_data_key

log = logging.getLogger("bvh_ops.physical.backup")

BASE_OBJECT = "base.tar"
PG_MANIFEST_OBJECT = "backup_manifest"  # plain: names, sizes, checksums (no table data)
READ_CHUNK = 1 << 20
_LSN = re.compile(r"write-ahead log (start|end) point: ([0-9A-F]+/[0-9A-F]+)(?: on timeline (\d+))?")


def physical_chain_tip(repo: Repository, system_identifier: str | None = None) -> Manifest | None:
    """The newest complete physical backup (any kind) of this cluster, or None."""
    candidates = [r for r in repo.list_backups() if r.status == "complete" and r.kind in PHYSICAL_KINDS]
    for rec in sorted(candidates, key=lambda r: (r.finished_at, r.backup_id), reverse=True):
        loaded = repo.load_manifest(rec.backup_id)
        if not loaded.signature_ok:
            continue
        m = loaded.manifest
        if system_identifier is None or m.system_identifier == system_identifier:
            return m
    return None


def native_parent(repo: Repository, m: Manifest) -> Manifest:
    """Walk WAL-only increments back to the backup whose files an incremental builds on."""
    while PhysicalInfo.of(m).wal_only:
        m = repo.trusted_manifest(m.parent_id or "", purpose="build on")
    return m


def chain_of(repo: Repository, m: Manifest) -> list[Manifest]:
    """[full, incremental, ...] whose combination is ``m`` (WAL-only increments resolve to their base)."""
    m = native_parent(repo, m)
    chain = [m]
    while chain[0].kind != "full":
        if not chain[0].parent_id:
            raise IntegrityError(f"backup {chain[0].backup_id} is an incremental without a parent")
        parent = native_parent(repo, repo.trusted_manifest(chain[0].parent_id, purpose="restore the chain of"))
        if parent.system_identifier != m.system_identifier:
            raise IntegrityError(f"backup {parent.backup_id} belongs to another cluster than {m.backup_id}")
        chain.insert(0, parent)
    return chain


def fetch_pg_manifest(repo: Repository, m: Manifest) -> bytes:
    """The parent's backup_manifest, authenticated by the sha256 in its signed manifest."""
    expected = PhysicalInfo.of(m).backup_manifest_sha256
    if not expected:
        raise NotFound(f"backup {m.backup_id} has no stored backup_manifest: take a new full backup")
    raw = repo.store.get_bytes(backup_prefix(m.backup_id) + PG_MANIFEST_OBJECT)
    if hashlib.sha256(raw).hexdigest() != expected:
        raise IntegrityError(f"backup {m.backup_id}: stored backup_manifest differs from the signed manifest "
                             "(tampered?); refusing to build an incremental on it — take a new full backup")
    return raw


def _server_facts(conn: psycopg.Connection) -> dict:
    version, num, seg, summarize = conn.execute(
        "SELECT current_setting('server_version'), current_setting('server_version_num')::int, "
        "(SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'), "
        "(SELECT setting FROM pg_settings WHERE name = 'summarize_wal')").fetchone()
    try:
        sysid = str(conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone()[0])
    except psycopg.Error:
        sysid = "unknown"
    archive = conn.execute("SELECT current_setting('archive_mode')").fetchone()[0]
    return {"version": version, "num": num, "wal_segment_size": int(seg or DEFAULT_SEGMENT), "summarize_wal": summarize,
            "system_identifier": sysid, "archive_mode": archive}


def run_physical_backup(settings: Settings, kind: str = "full", *, klass: str | None = None) -> BackupResult:
    """A physical backup of the target's cluster, streamed (never a local copy). ``klass`` (e.g.
    monthly-archive) is recorded in the manifest as ``extra["class"]``.

    ``kind="incremental"`` builds on the newest physical backup of the same cluster; with none
    yet it takes a full one (recorded as ``promoted_from = incremental``), as pgBackRest does.
    """
    if kind not in PHYSICAL_KINDS:
        raise BvhOpsError(f"unknown physical backup kind {kind!r}")
    dsn = settings.require_database_url()
    recipients = load_recipients(settings.require_recipients())
    repo, host_key = open_repository(settings)
    with connect(dsn, autocommit=True) as conn:
        facts = _server_facts(conn)
    # Which backup (plan_physical): the chain tip matters only to an incremental.
    tip = physical_chain_tip(repo, facts["system_identifier"]) if kind == "incremental" else None
    plan = plan_physical(kind, tip, facts["num"], facts["summarize_wal"])
    if plan.promoted:
        log.warning("no physical backup of this cluster yet: taking a full backup instead of an incremental")
    if plan.mode == "wal-only":
        return _wal_only_increment(settings, repo, host_key, facts, plan.parent)
    kind, promoted = plan.kind, plan.promoted
    parent = native_parent(repo, plan.parent) if plan.parent is not None else None
    started = datetime.now(UTC)
    t0 = time.monotonic()
    backup_id = new_backup_id(kind, started)
    with TargetLock(dsn, "physical-backup"), tempfile.TemporaryDirectory(prefix=f"bvh-incr-{os.getpid()}-") as tmp:
        args = ["-D", "-", "-Ft", "-X", "fetch", "--checkpoint=fast", "-v", "--no-sync"]
        if parent is not None:
            parent_manifest = Path(tmp) / "parent_backup_manifest"
            parent_manifest.write_bytes(fetch_pg_manifest(repo, parent))
            args.append(f"--incremental={parent_manifest}")
        writer = repo.begin(backup_id)
        proc = source = None
        try:
            data_key = os.urandom(32)
            # The tar arrives on a socket, not a pipe: pg_basebackup then seldom waits for us.
            proc, source = spawn_to_socket("pg_basebackup", args, env=pg_env(dsn),
                                           bin_dir=matching_bin_dir(facts["num"] // 10000, settings.pg_bin_dir))
            err = StderrTail(proc.stderr)
            err.start()
            scanner = TarScanner()
            with writer.object(BASE_OBJECT, data_key=data_key, envelopes=seal_data_key(data_key, recipients),
                               compression_level=settings.compression_level,
                               segment_size=settings.segment_size_kib << 10,
                               compression_threads=settings.compression_threads) as out:
                ahead = ReadAhead(source, chunk=READ_CHUNK)
                try:
                    for chunk in ahead:
                        scanner.feed(chunk)
                        out.write(chunk)
                finally:
                    ahead.close()
                rc = proc.wait()
                if rc != 0:
                    stderr = err.text()
                    if "WAL summaries are required" in stderr:
                        raise ToolError(
                            "pg_basebackup: the server's WAL summaries do not cover the time since the parent backup "
                            f"{parent.backup_id if parent else ''} (summarize_wal was off or summaries were removed): "
                            "take a full backup")
                    raise_for_tool("pg_basebackup", rc, stderr)
                lsns = {m.group(1): (m.group(2), m.group(3)) for m in _LSN.finditer(err.text())}
                start_lsn = lsns.get("start", (None,))[0]
                stop_lsn = lsns.get("end", (None,))[0]
                timeline = int(lsns.get("start", (None, "1"))[1] or 1)
                # The checks wait for the stop segment's archiving: start that wait now, so it
                # runs while the upload finishes and the manifest is committed.
                StopSegmentWait.begin(dsn, backup_id, {"stop_lsn": stop_lsn, "timeline": timeline,
                                                       "wal_segment_size": facts["wal_segment_size"],
                                                       "archive_mode": facts["archive_mode"]}, repo.store)
            problems = scanner.check()
            if problems:
                raise IntegrityError(f"pg_basebackup stream does not match its backup_manifest: {'; '.join(problems[:5])}")
            pg_manifest = scanner.manifest or b""
            repo.store.put_bytes(backup_prefix(backup_id) + PG_MANIFEST_OBJECT, pg_manifest)
            key_ids = tuple(r.key_id for r in recipients)
            manifest = Manifest(
                backup_id=backup_id, kind=kind, tool_version=__version__, started_at=started.isoformat(),
                finished_at=datetime.now(UTC).isoformat(), database="(cluster)", server_version=facts["version"],
                server_version_num=facts["num"], system_identifier=facts["system_identifier"], snapshot_id="",
                dump_format="tar", compression=f"zstd-{settings.compression_level}", kem=recipients[0].kem,
                key_ids=key_ids, host=socket.gethostname(),
                objects=(stats_to_entry(BASE_OBJECT, out.stats, key_ids, f"zstd-{settings.compression_level}"),),
                parent_id=parent.backup_id if parent else None,
                extra={**({"class": klass} if klass else {}),
                       "start_lsn": start_lsn, "stop_lsn": stop_lsn, "timeline": timeline, "mode": "native",
                       "wal_segment_size": facts["wal_segment_size"], "archive_mode": facts["archive_mode"],
                       "backup_manifest_sha256": hashlib.sha256(pg_manifest).hexdigest(),
                       "files_checked": len(scanner.files), "promoted_from": "incremental" if promoted else None,
                       "tool": "pg_basebackup -Ft -X fetch" + (" --incremental" if parent else "")},
            )
            writer.commit(manifest, host_key)
            return BackupResult(manifest, time.monotonic() - t0, repo.store.url)
        except BaseException:
            StopSegmentWait.discard(backup_id)
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
            writer.abort()
            raise
        finally:
            if source is not None:
                source.close()


def switch_wal_and_wait(conn: psycopg.Connection, *, timeout: float = 120.0) -> tuple[str, str]:
    """Finish the current WAL segment and wait until PostgreSQL has archived it; returns the
    segment's name and the LSN it was switched at. A WAL record is written first:
    pg_switch_wal() does nothing on a segment with no WAL in it, which would never be archived."""
    conn.execute("SELECT pg_logical_emit_message(false, 'bvh-ops', 'switch')")
    lsn, seg = conn.execute("SELECT pg_current_wal_lsn()::text, pg_walfile_name(pg_current_wal_lsn())").fetchone()
    conn.execute("SELECT pg_switch_wal()")
    wait_archived(conn, seg, timeout=timeout)
    return seg, lsn


def wait_archived(conn: psycopg.Connection, segment: str, *, timeout: float = 120.0,
                  give_up_when_failing: float | None = None, cancel: threading.Event | None = None,
                  store: ObjectStore | None = None) -> bool:
    """Wait until PostgreSQL's archiver has archived ``segment`` (pg_stat_archiver), polling a
    condition, not sleeping a fixed time. A timeout names the segment, where to look and the
    failing segment. With ``give_up_when_failing``: once archive_command has been failing (and
    not succeeding since) for that many seconds, return False instead of waiting on — the
    caller's checks report the archiver. ``cancel`` set: return False at the next poll.
    ``store``: the repository our archive_command pushes to; the segment's index entry there
    (wal-push's commit point) also ends the wait — what the continuity check needs, possibly
    before the rest of a compound archive_command has returned (or pushed ahead of it)."""
    deadline = time.monotonic() + timeout
    failing_since = None
    interval = POLL_MIN
    while True:
        if store is not None and _in_archive(store, segment):
            return True
        archived, failed, failed_at, archived_at = conn.execute(
            "SELECT last_archived_wal, last_failed_wal, last_failed_time, last_archived_time "
            "FROM pg_stat_archiver").fetchone()
        if archived is not None and archived[:24] >= segment[:24] and archived[:8] == segment[:8]:
            return True
        if archived is not None and archived[:8] > segment[:8]:
            return True  # a later timeline is being archived: this one is finished
        failing = bool(failed) and (archived_at is None or failed_at > archived_at)
        failing_since = (failing_since or time.monotonic()) if failing else None
        if give_up_when_failing is not None and failing_since is not None \
                and time.monotonic() - failing_since >= give_up_when_failing:
            return False
        if time.monotonic() > deadline:
            failing = (f"; archive_command has been failing on {failed} since {failed_at:%Y-%m-%d %H:%M:%S %Z}"
                       if failed and (archived_at is None or failed_at > archived_at) else "")
            raise BvhOpsError(f"WAL segment {segment} was not archived within {timeout:.0f} s{failing}: "
                              "check archive_command (bvh-ops-wal push %p) in the server log")
        if cancel is not None and cancel.is_set():
            return False
        # One cheap query per poll: start at 20 ms (an archive_command often takes well under a
        # second) and back off to 250 ms, so a late segment costs at most a quarter of a second.
        time.sleep(interval)
        interval = min(interval * 1.5, POLL_MAX)


def _in_archive(store: ObjectStore, segment: str) -> bool:
    from bvh_ops.wal.store import wal_key

    try:
        return store.stat(wal_key(segment) + ".json") is not None
    except BvhOpsError:
        return False  # unreadable now: pg_stat_archiver still decides


POLL_MIN, POLL_MAX = 0.02, 0.25  # seconds between two looks at pg_stat_archiver
STOP_WAIT_TIMEOUT = 300.0
GIVE_UP_WHEN_FAILING = 15.0


class StopSegmentWait:
    """The wait for a backup's stop segment to be archived, on a thread of its own from the
    moment pg_basebackup ends (``begin``), so it overlaps the end of the upload, the commit and
    the first checks; ``wait_backup_wal_archived`` joins it. Kept per backup id in this process
    (the flow's tasks run in it); a check that finds none waits itself."""

    _pending: dict[str, StopSegmentWait] = {}
    _lock = threading.Lock()
    KEEP = 8  # waits nobody joined (a backup taken without its checks) are forgotten beyond this

    def __init__(self, dsn: str, segment: str, timeout: float, store: ObjectStore | None) -> None:
        self.segment = segment
        self.store = store
        self.started = time.monotonic()
        self.seconds: float | None = None  # from begin() until archived (or given up)
        self.archived: bool | None = None
        self.error: BaseException | None = None
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(dsn, timeout), name=f"bvh-wait-{segment}",
                                        daemon=True)

    def _run(self, dsn: str, timeout: float) -> None:
        try:
            with connect(dsn, autocommit=True) as conn:
                self.archived = wait_archived(conn, self.segment, timeout=timeout,
                                              give_up_when_failing=GIVE_UP_WHEN_FAILING, cancel=self._cancel,
                                              store=self.store)
        except BaseException as exc:  # noqa: BLE001 - handed to whoever joins
            self.error = exc
        finally:
            self.seconds = time.monotonic() - self.started

    @classmethod
    def begin(cls, dsn: str, backup_id: str, extra: dict, store: ObjectStore | None = None, *,
              timeout: float = STOP_WAIT_TIMEOUT) -> None:
        """Start waiting for the stop segment of ``extra`` (stop_lsn, timeline, segment size,
        archive_mode as the manifest will record them); nothing when the server does not archive."""
        info = PhysicalInfo(backup_id, extra)
        if not info.stop_lsn_text or info.archive_mode == "off":
            return
        wait = cls(dsn, info.stop_segment, timeout, store)
        with cls._lock:
            cls._pending[backup_id] = wait
            while len(cls._pending) > cls.KEEP:
                cls._pending.pop(next(iter(cls._pending)))._cancel.set()
        wait._thread.start()

    @classmethod
    def take(cls, backup_id: str) -> StopSegmentWait | None:
        with cls._lock:
            return cls._pending.pop(backup_id, None)

    @classmethod
    def discard(cls, backup_id: str) -> None:
        """The backup failed: stop its wait."""
        wait = cls.take(backup_id)
        if wait is not None:
            wait._cancel.set()

    def join(self, timeout: float) -> bool:
        """True once archived, False when archive_command kept failing; raises what the wait raised."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._cancel.set()
            raise BvhOpsError(f"WAL segment {self.segment} was not archived within {timeout:.0f} s: "
                              "check archive_command (bvh-ops-wal push %p) in the server log")
        if self.error is not None:
            raise self.error
        return bool(self.archived)


def wait_backup_wal_archived(settings: Settings, manifest: Manifest, *, timeout: float = STOP_WAIT_TIMEOUT,
                             store: ObjectStore | None = None) -> dict | None:
    """pg_basebackup does not wait for archiving: before the archive is checked for a backup's
    WAL, wait until the segment holding its stop LSN has been archived — joining the wait the
    backup started when pg_basebackup ended, if this process took it. Returns the segment, the
    seconds spent here and since the wait began (None when the server does not archive)."""
    info = PhysicalInfo.of(manifest)
    if not info.stop_lsn_text or info.archive_mode == "off":
        return None
    segment = info.stop_segment
    t0 = time.monotonic()
    wait = StopSegmentWait.take(manifest.backup_id)
    if wait is not None and wait.segment == segment:
        archived = wait.join(timeout)
        since_begin = wait.seconds
    else:
        with connect(settings.require_database_url(), autocommit=True) as conn:
            archived = wait_archived(conn, segment, timeout=timeout, give_up_when_failing=GIVE_UP_WHEN_FAILING,
                                     store=store)
        since_begin = None
    if not archived:
        log.warning("archive_command is failing: not waiting for %s (the wal_archiver check reports it)", segment)
    waited = time.monotonic() - t0
    return {"segment": segment, "archived": archived, "waited": waited,
            "since_backup_end": since_begin if since_begin is not None else waited}


def _wal_only_increment(settings: Settings, repo: Repository, host_key, facts: dict, tip: Manifest) -> BackupResult:
    """PostgreSQL < 17 has no native incrementals: switch WAL, wait until the segment is
    archived, check the archive is continuous since the chain's base, record it."""
    from bvh_ops.wal.archive import wal_continuity

    dsn = settings.require_database_url()
    started = datetime.now(UTC)
    t0 = time.monotonic()
    log.warning("PostgreSQL %s has no native incremental backups (they need 17+): recording a WAL-only increment",
                facts["version"])
    base = native_parent(repo, tip)
    with connect(dsn, autocommit=True) as conn:
        last, lsn_text = switch_wal_and_wait(conn, timeout=120)
    timeline = int(last[:8], 16)
    report = wal_continuity(repo.store, base, until=last)
    if report.missing:
        raise IntegrityError(f"the WAL archive has gaps since base {base.backup_id}: missing "
                             f"{', '.join(report.missing[:5])}{' …' if len(report.missing) > 5 else ''}")
    recipients = load_recipients(settings.require_recipients())
    backup_id = new_backup_id("incremental", started)
    manifest = Manifest(
        backup_id=backup_id, kind="incremental", tool_version=__version__, started_at=started.isoformat(),
        finished_at=datetime.now(UTC).isoformat(), database="(cluster)", server_version=facts["version"],
        server_version_num=facts["num"], system_identifier=facts["system_identifier"], snapshot_id="",
        dump_format="wal", compression=f"zstd-{settings.compression_level}", kem=recipients[0].kem,
        key_ids=tuple(r.key_id for r in recipients), host=socket.gethostname(), objects=(), parent_id=tip.backup_id,
        extra={"start_lsn": PhysicalInfo.of(tip).stop_lsn_text, "stop_lsn": lsn_text, "timeline": int(timeline),
               "mode": "wal-only", "wal_segment_size": facts["wal_segment_size"], "base_id": base.backup_id,
               "wal_segments": report.found, "last_segment": last,
               "note": "native incremental backups need PostgreSQL 17+; this increment is the archived WAL"},
    )
    repo.begin(backup_id).commit(manifest, host_key)
    return BackupResult(manifest, time.monotonic() - t0, repo.store.url)


def physical_possible(settings: Settings) -> tuple[bool, str]:
    """Can (and should) the daily flow start a physical chain on this target? A replication
    connection must be accepted (pg_hba, REPLICATION role, max_wal_senders) and the server
    must archive WAL (without an archive a physical base adds no recovery point to the dump)."""
    dsn = settings.require_database_url()
    try:
        with psycopg.connect(dsn, replication="true", autocommit=True, connect_timeout=10) as conn:
            if conn.pgconn.exec_(b"IDENTIFY_SYSTEM").status != psycopg.pq.ExecStatus.TUPLES_OK:
                return False, "the server refused IDENTIFY_SYSTEM on a replication connection"
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        return False, f"no replication connection ({first.split('FATAL:')[-1].strip()}): allow it in pg_hba.conf " \
                      "and grant the role REPLICATION"
    with connect(dsn, autocommit=True) as conn:
        archive = conn.execute("SELECT current_setting('archive_mode')").fetchone()[0]
    if archive == "off":
        return False, "archive_mode is off: set archive_command = 'bvh-ops wal-push %p' to enable point-in-time recovery"
    return True, "replication connection accepted and WAL archived"


def run_physical_full(settings: Settings) -> BackupResult:
    return run_physical_backup(settings, "full")


def physical_json(res: BackupResult) -> dict:
    doc = res.to_json()
    m, info = res.manifest, PhysicalInfo.of(res.manifest)
    doc.pop("tables", None)
    doc.update({"parent_id": m.parent_id, "start_lsn": info.start_lsn_text, "stop_lsn": info.stop_lsn_text,
                "timeline": info.timeline, "mode": info.mode, "promoted_from": info.promoted_from})
    return doc


def archiver_status(settings: Settings) -> dict:
    """The source's WAL archiver as PostgreSQL reports it (pg_stat_archiver): whether it is
    failing now, how old the last archived segment is, and how many segments wait."""
    dsn = settings.require_database_url()
    with connect(dsn, autocommit=True) as conn:
        mode = conn.execute("SELECT current_setting('archive_mode')").fetchone()[0]
        row = conn.execute(
            "SELECT archived_count, last_archived_wal, last_archived_time, failed_count, last_failed_wal, "
            "last_failed_time, now() FROM pg_stat_archiver").fetchone()
        try:
            with conn.transaction():
                ready = conn.execute(
                    "SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'").fetchone()[0]
        except psycopg.Error:
            ready = None  # needs superuser or pg_monitor
    archived, last_wal, last_time, failed, failed_wal, failed_time, now = row
    failing = failed_time is not None and (last_time is None or failed_time > last_time)
    return {"archive_mode": mode, "archived_count": archived, "last_archived_wal": last_wal,
            "last_archived_age_seconds": (now - last_time).total_seconds() if last_time else None,
            "failed_count": failed, "last_failed_wal": failed_wal, "failing": failing, "ready_segments": ready}
