"""The drill's checks that need not wait for the restore to end (issue #19, goal 3): each
table's COPY fingerprint — and, for an append-only table, its side of the PITR comparison — read
as soon as pg_restore has loaded and committed that table's data, while other tables still load
and indexes build; and the live source's side of the PITR comparison, which needs no restored
data at all (``SourceSide``: the drill starts it as soon as it knows its target, so it overlaps
the fetch, the deep verify and the scratch's start whether or not the restored tables are read
early).

With ``copies=False`` (drill_early_checks = pitr, the default on a host with no more cores than
restore_jobs) only the append-only tables' restored side of the PITR comparison is read during
the restore, every COPY fingerprint after it: on 2 cores the full reads slowed the restore past
its bound, this small one does not (docs/BENCHMARKS.md, goal 3).

Nothing read early is trusted as it is: after the restore, a table counts as read only if it
provably has not changed since (bvh_ops.pg.fingerprint.unchanged_since: same row count, no row
written by a transaction the early read could not see); any other table is read again. So the
checks' results are those of reading every table after the restore — a row changed, removed or
added at any time before the checks still fails them.

The reads during the restore run at the lowest CPU priority (bvh_ops.priority: nice 19), so they
take the CPU pg_restore leaves idle and not the CPU it would use: the reading thread; a child
process in a session of its own that hashes the table's text (on the drill's embedded scratch
written by the backend into a FIFO the child reads, bvh_ops.pg.fingerprint.fifo_read; elsewhere
read by a psql it runs), that session's autogroup lowered as well (with autogroups a nice value
counts only within its session: until the twelfth #19 session the psql children and our
hashing, niced but in the drill's session, took CPU from the restore at full weight); and the scratch server's backends serving both (when the server
runs here and we may renice them: as root or as its OS user), with no parallel workers (the
server's processes, not lowered with the backend). When the restore ends,
each read still under way is raised back to its old priority (where the kernel lets us: root),
so it does not trail behind other work. The live source's side (SourceSide) is not lowered:
its backend is another server's (maybe behind a pooler that hands the same backend to other
clients), and its thread only waits for it."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bvh_ops import priority
from bvh_ops.drill import committime, dumpside
from bvh_ops.pg.conn import connect
from bvh_ops.pg.fingerprint import (
    COPY,
    COPY_METHODS,
    INLINE_BELOW,
    LocalServer,
    Mark,
    copy_digest_apart,
    copy_digest_inline,
    copy_env,
    copy_settings,
    mark,
    may_write_server_files,
    method_of,
    text_encoding,
    unchanged_since,
)
from bvh_ops.repository.manifest import Manifest
from checks.drill_suite import PITR_TEXT, bounded_fingerprint, pitr_method

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Taken:
    """One plain table read early: its COPY digest and, for an append-only table, its PITR bound
    with the whole table's row count in that read."""

    mark: Mark
    rows: int
    digest: str | None  # None: only the PITR bound was read (EarlyChecks' copies=False)
    item: str | None = None  # the append_only_tables entry, when the PITR bound was read too
    pitr: tuple[int, str] | None = None
    pitr_rows: int | None = None


@dataclass
class Settled:
    """What the checks after the restore may use: per plain table (schema, name) its COPY
    (rows, sha256); per append-only entry its restored and its source PITR bound."""

    copies: dict[tuple[str, str], tuple[int, str]]
    restored_pitr: dict[str, tuple[int, str] | None]
    source_pitr: dict[str, tuple[int, str] | None]
    zone: str | None
    reread: list[str]  # tables read early that had changed since (read again after the restore)


# How long SourceSide.stop() goes on cancelling the scan under way on the live source.
STOP_WAIT = 10.0


class SourceSide:
    """The live source's side of the PITR comparison (each append-only table's rows up to the
    cutoff: count and hash sum) and its session time zone, read on a thread of its own from
    ``start()``: it reads the source only, so it need not wait for anything restored. Nothing
    here fails the drill: an unreachable source or a table that could not be read is simply not
    known, and the checks after the restore read it again (and report what they find)."""

    def __init__(self, source: str | None, append_only: list[str], cutoff: datetime,
                 restored_version: int | None = None, method: str | None = None,
                 method_items: set[str] | None = None) -> None:
        self._source, self._items, self._cutoff = source, list(append_only), cutoff
        self._restored_version = restored_version  # the backup's server_version_num: the scratch runs it or later
        self.zone: str | None = None
        # How rows are hashed (drill_suite.pitr_method), once known; ``method``: this one (the
        # text method, where the restored side is summed from the dump: bvh_ops.drill.dumpside).
        self._method = method
        # The entries ``method`` is for (None: all); the others are hashed the usual way (the
        # dump can sum only some tables, and the text method costs the source about twice the CPU).
        self._method_items = method_items
        self.method: str | None = None   # the usual method, once known
        self.encoding: str | None = None  # the source's server_encoding, once known
        self.platform: str | None = None  # the source's version() (its C library and CPU), once known
        # Whether the dump's sums compare with this side (bvh_ops.drill.dumpside): asked for, and
        # the source's text hashes as theirs (not merely the text method: a source before 14 gets
        # that anyway, on any platform).
        self.dump_comparable = False
        self._wanted: str | None = None  # the asked-for method, where this source allows it
        self._done: Future[dict[str, tuple[int, str] | None]] = Future()
        self._zoned = threading.Event()  # the zone is asked (known, or not to be known early)
        self._lock, self._started, self._stopped = threading.Lock(), False, False
        self._conn: Any = None  # the source connection a bound is read on (stop() cancels its query)

    def start(self, fallback_dsn: str | None = None) -> SourceSide:
        """Begin (once). ``fallback_dsn``: where to ask the time zone when there is no source."""
        with self._lock:
            if self._started:
                return self
            self._started = True
        self._done.set_running_or_notify_cancel()
        # A daemon: a source that hangs must not keep a finished drill's process alive.
        threading.Thread(target=self._run, args=(fallback_dsn,), name="bvh-source-side", daemon=True).start()
        return self

    def _run(self, fallback_dsn: str | None) -> None:
        out: dict[str, tuple[int, str] | None] = {}
        try:
            if self._source is not None and self._items:
                self.zone = committime.source_time_zone(self._source, fallback_dsn or self._source)
                with connect(self._source) as conn:
                    version = int(conn.execute("SHOW server_version_num").fetchone()[0])
                    self.encoding = conn.execute("SHOW server_encoding").fetchone()[0]
                    self.platform = conn.execute("SELECT version()").fetchone()[0]
                wanted = self._method
                if wanted == PITR_TEXT and not dumpside.matches_source(self.encoding, self.platform):
                    wanted = None  # its text would not hash as the dump's sums do: the usual method
                self.dump_comparable = wanted == PITR_TEXT
                self._wanted = wanted
                self.method = pitr_method(version, *([self._restored_version] if self._restored_version else []))
                self._zoned.set()
                for item in self._items:
                    if self._stopped:
                        break
                    try:
                        with connect(self._source) as conn:
                            with self._lock:
                                if self._stopped:
                                    break
                                self._conn = conn
                            try:
                                out[item] = bounded_fingerprint(conn, item, self.zone, self._cutoff,
                                                                method=self.method_for(item))
                            finally:
                                with self._lock:
                                    self._conn = None
                    except Exception:  # noqa: BLE001 - not known early: the check reads it again and reports
                        continue
        except Exception:  # noqa: BLE001 - the checks after the restore ask again and report it
            pass
        finally:
            self._zoned.set()
            self._done.set_result(out)

    def method_for(self, item: str) -> str | None:
        """How ``item``'s rows are hashed on both sides (None: not known yet): the asked-for
        method where it applies to the item, else the usual one."""
        if self.method is None:
            return None
        if self._wanted is not None and (self._method_items is None or item in self._method_items):
            return self._wanted
        return self.method

    def time_zone(self) -> str | None:
        """The source's session time zone as this read it (None: not known), as soon as it is
        asked — without waiting for the bounds (the freshness check needs only the zone)."""
        if not self._started:
            return None
        self._zoned.wait()
        return self.zone

    def stop(self) -> None:
        """The drill will not compare (its verify or restore failed): read no further bound on
        the live source, and cancel the one under way (a whole scan of a production table)."""
        with self._lock:
            self._stopped = True
            conn = self._conn
        # A cancel stops only a query already running: one sent a moment later (the connection is
        # handed over just before its scan starts) would run, and wait behind a lock on the live
        # table for as long as that is held. So cancel until the reader has let go of the connection.
        deadline = time.monotonic() + STOP_WAIT
        while conn is not None and time.monotonic() < deadline:
            try:
                conn.cancel_safe(timeout=2)
            except Exception:  # noqa: BLE001 - gone already: nothing to cancel
                pass
            time.sleep(0.05)
            with self._lock:
                if self._conn is not conn:
                    break

    def result(self) -> dict[str, tuple[int, str] | None]:
        """append_only entry -> its bound on the source (None: no such table there); an entry
        missing was not read. Waits for the thread; {} if never started."""
        if not self._started:
            return {}
        return self._done.result()


class EarlyChecks:
    """Start with ``begin()`` before pg_restore, pass ``loaded`` as its on_table_loaded, call
    ``restored()`` when it returns (reads under way get their priority back), then ``settle()``.
    ``jobs`` tables are read at a time while the restore runs, at low priority (it has the
    CPU it wants)."""

    def __init__(self, dsn: str, manifest: Manifest, *, source: str | None, append_only: list[str],
                 cutoff: datetime, bin_dir: Any = None, jobs: int = 1, source_side: SourceSide | None = None,
                 server: LocalServer | None = None, copies: bool = True) -> None:
        self._dsn, self._cutoff, self._bin_dir = dsn, cutoff, bin_dir
        # False: only the append-only tables' PITR side is read early (drill_early_checks = pitr),
        # each table's COPY fingerprint after the restore.
        self._copies = copies
        self._server = server  # the scratch on this host: large tables by the backend into a FIFO
        # The drill's own (started when it knew its target), else one begun with the restore.
        self._side = source_side or SourceSide(source, append_only, cutoff, manifest.server_version_num)
        # Only backups fingerprinted from their COPY text (fingerprints 2 to 4) are read this way,
        # each as its backup recorded (one COPY method per backup).
        methods = [m for m in COPY_METHODS if m in {method_of(t.fingerprint) for t in manifest.tables}]
        self._copy = bool(methods)
        self._method = methods[-1] if methods else COPY
        self._encoding = manifest.extra.get("dump_encoding")
        self._env = copy_env(dsn, self._encoding)
        self._items = {_split(item): item for item in append_only}
        self._pool = ThreadPoolExecutor(max(1, jobs), thread_name_prefix="bvh-early")
        self._taken: dict[tuple[str, str], Future[Taken]] = {}
        self._lock = threading.Lock()
        self._open = True
        self._low: dict[int, priority.Was] = {}  # lowered while the restore runs: tid/pid -> before
        self._raised = False

    @property
    def zone(self) -> str | None:
        return self._side.zone

    def begin(self) -> EarlyChecks:
        """The live source's side, if the drill has not started it (SourceSide: a thread of its
        own; an unreachable source must not hold up the restore)."""
        self._side.start(self._dsn)
        return self

    def loaded(self, schema: str, table: str) -> None:
        """pg_restore has committed this table's data: read it (queued behind the others)."""
        with self._lock:
            wanted = self._copy if self._copies else (schema, table) in self._items
            if self._open and wanted and (schema, table) not in self._taken:
                self._taken[(schema, table)] = self._pool.submit(self._take, schema, table)

    @contextmanager
    def _lowered(self) -> Iterator[tuple[Any, Any]]:
        """This thread at low priority until the block ends or the restore does. Yields
        ``serving(child pid, backend pid, port)`` — the child this thread started (low already,
        as its child) is raised with it, the backend (if local) is lowered likewise —,
        ``session(pid)`` — a child in a session of its own, whose autogroup is lowered too — and
        ``gone(*pids)``, to call once those have ended (so no other process gets their pid's
        priority). When the block ends the thread is raised back; the processes are only
        forgotten (the connection closes next)."""
        mine: list[int] = []
        with self._lock:
            me = None if self._raised else priority.lower()
            if me is not None:
                self._low[me.tid] = me

        def serving(child: int | None, pid: int, port: int | None = None) -> None:
            with self._lock:
                if self._raised or me is None:
                    return
                if child is not None:
                    self._low[child] = priority.Was(child, me.policy, me.nice)
                    mine.append(child)
                if priority.local_backend(pid, port) and (was := priority.lower(pid)) is not None:
                    self._low[pid] = was
                    mine.append(pid)

        def session(pid: int) -> None:
            """A child of ours in a session of its own (copy_digest_apart): its autogroup lowered
            too — with autogroups a nice value counts only within its session."""
            with self._lock:
                if self._raised or me is None:
                    return
                self._low[pid] = priority.Was(pid, me.policy, me.nice, priority.lower_group(pid))
                mine.append(pid)

        def gone(*pids: int) -> None:
            with self._lock:
                for pid in pids:
                    self._low.pop(pid, None)

        try:
            yield serving, session, gone
        finally:
            with self._lock:
                for pid in mine:
                    self._low.pop(pid, None)
                if me is not None:
                    priority.restore(self._low.pop(me.tid, None))

    def restored(self) -> None:
        """The restore has ended: what is still being read competes at its old priority."""
        with self._lock:
            self._raised = True
            for was in self._low.values():
                priority.restore(was)
            self._low.clear()

    def _take(self, schema: str, table: str) -> Taken | None:
        if not self._copies:
            return self._take_pitr(schema, table)
        with connect(self._dsn, autocommit=True) as conn, self._lowered() as (serving, session, gone):
            # Parallel workers are the server's processes, not this backend: not lowered with it.
            conn.execute("SET max_parallel_workers_per_gather = 0")
            serving(None, conn.info.backend_pid, _client_port(conn))
            since = mark(conn, schema, table)
            copying: list[int] = []

            def started(pid: int) -> None:
                copying.append(pid)
                session(pid)

            if _table_bytes(conn, schema, table) < INLINE_BELOW:
                # Small: read on a connection of this thread's (a child process costs more than the read).
                with connect(self._dsn, autocommit=True) as small:
                    serving(None, small.info.backend_pid, _client_port(small))
                    encoding = copy_settings(small, self._encoding)
                    rows, digest = copy_digest_inline(small, schema, table, method=self._method, encoding=encoding)
                    copying.append(small.info.backend_pid)
            else:
                fifo = self._server if self._server is not None and may_write_server_files(conn) else None
                rows, digest = copy_digest_apart(conn, schema, table, self._env, self._bin_dir, started=started,
                                                 on_backend=lambda *p: (copying.extend(p[:2]), serving(*p)),
                                                 method=self._method, server=fifo,
                                                 encoding=fifo and text_encoding(conn, self._encoding))
            gone(*copying)
            item = self._items.get((schema, table))
            zone, method = self.zone, (self._side.method_for(item) if item else None)
            if item is None or zone is None or method is None or _has_children(conn, schema, table):
                return Taken(since, rows, digest)
            bound = bounded_fingerprint(conn, item, zone, self._cutoff, whole=True, method=method)
        if bound is None:
            return Taken(since, rows, digest)
        return Taken(since, rows, digest, item, (bound[0], bound[1]), bound[2])

    def _take_pitr(self, schema: str, table: str) -> Taken | None:
        """An append-only table's PITR bound only (its rows up to the cutoff, with the whole
        table's row count in the same read: what ``settle`` proves unchanged since); None where
        none can be read early (no time zone or method yet, a partitioned parent)."""
        item = self._items.get((schema, table))
        zone, method = self.zone, (self._side.method_for(item) if item else None)
        if item is None or zone is None or method is None:
            return None
        with connect(self._dsn, autocommit=True) as conn, self._lowered() as (serving, _session, _gone):
            conn.execute("SET max_parallel_workers_per_gather = 0")
            serving(None, conn.info.backend_pid, _client_port(conn))
            since = mark(conn, schema, table)
            if _has_children(conn, schema, table):
                return None
            bound = bounded_fingerprint(conn, item, zone, self._cutoff, whole=True, method=method)
        if bound is None:
            return None
        return Taken(since, bound[2], None, item, (bound[0], bound[1]), bound[2])

    def join(self) -> None:
        """Wait for the reads queued so far (a drill does not: see ``settle``)."""
        with self._lock:
            futures = list(self._taken.values())
        for f in futures:
            f.exception()

    def settle(self, jobs: int = 2, *, queued: bool = False) -> Settled:
        """After the restore: stop reading, wait for the reads under way (``queued``: and for
        those not begun; else they are dropped and the checks read those tables with ``jobs``
        at a time), keep each only if its table has not changed since."""
        self.restored()
        with self._lock:
            self._open = False
            futures = dict(self._taken)
        if not queued:
            for f in futures.values():
                f.cancel()
        self._pool.shutdown(wait=True)
        taken = {k: f.result() for k, f in futures.items()
                 if not f.cancelled() and f.exception() is None and f.result() is not None}
        failed = {k: f.exception() for k, f in futures.items() if not f.cancelled() and f.exception() is not None}
        if failed:  # read again after the restore (no result is lost), but an operator should see why
            from bvh_ops.config import redact_dsn

            (schema, table), exc = next(iter(failed.items()))
            log.warning("%d table(s) could not be read during the restore and are read after it, e.g. %s.%s: %s",
                        len(failed), schema, table, redact_dsn(f"{type(exc).__name__}: {exc}")[:300])
        source = self._side.result()

        def check(key: tuple[str, str]) -> bool:
            t = taken[key]
            if t.pitr_rows is not None and t.pitr_rows != t.rows:
                return False  # a row came or went between the two reads
            with connect(self._dsn, autocommit=True) as conn:
                return unchanged_since(conn, key[0], key[1], t.mark, t.rows)

        with ThreadPoolExecutor(max(1, jobs), thread_name_prefix="bvh-settle") as pool:
            keys = list(taken)
            valid = dict(zip(keys, pool.map(_safe(check), keys), strict=True))
        copies = {k: (t.rows, t.digest) for k, t in taken.items() if valid[k] and t.digest is not None}
        restored = {t.item: t.pitr for k, t in taken.items() if valid[k] and t.item is not None}
        reread = sorted(f"{k[0]}.{k[1]}" for k, ok in valid.items() if not ok)
        return Settled(copies, restored, source, self.zone, reread)

    def close(self) -> None:
        """Abandon (a failed restore): nothing queued starts; reads under way end on their own."""
        with self._lock:
            self._open = False
        self.restored()
        self._pool.shutdown(wait=False, cancel_futures=True)


def _split(item: str) -> tuple[str, str]:
    """(schema, table) of an append_only_tables entry, as pg_restore names the table it loaded:
    quotes removed (toc.split_name, the one reading of a table name); a name it refuses is
    left to the checks after the restore (they report it)."""
    from bvh_ops.errors import ConfigError
    from bvh_ops.logical.toc import split_name

    try:
        return split_name(item.split(":")[0])
    except ConfigError:
        return "", item


def _client_port(conn: Any) -> int | None:
    """Our end's TCP port as the server sees it (None over a Unix socket)."""
    return conn.execute("SELECT inet_client_port()").fetchone()[0]


def _table_bytes(conn: Any, schema: str, table: str) -> int:
    row = conn.execute("SELECT pg_table_size(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                       "WHERE n.nspname = %s AND c.relname = %s", (schema, table)).fetchone()
    return int(row[0]) if row else 0


def _has_children(conn: Any, schema: str, table: str) -> bool:
    """Inheritance children or partitions: the PITR bound reads them too, so not early."""
    return bool(conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhparent "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s)",
        (schema, table)).fetchone()[0])


def _safe(fn):
    def run(key):
        try:
            return fn(key)
        except Exception:  # noqa: BLE001 - cannot prove it unchanged: read it again
            return False
    return run
