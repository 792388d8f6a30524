"""One daily sample per capacity series into ``ops.capacity_samples`` (what `bvh-ops capacity
collect` and the daily ``collect-capacity`` flow run).

Measured: the platform database's size, its largest tables and indexes (the rest summed), the
main tables' row counts, the WAL position (and from it WAL generated per day), active users and
tickets sold that day; the repository's bytes per family from its listing; disk used and size
per configured mount (psutil); connections (peak of the day's monitoring samples, or now) and
max_connections; CPU and memory peaks of the day's monitoring samples where the monitor runs.

Backfilled, where no sample exists yet, so a first report is not empty: repository bytes per
family per day from the listing (backup ids carry their start time; other objects their
modification time: expired backups are gone, so the past is a lower bound), row counts from the
main tables' time columns (deleted rows are not seen), ticket sales per day, and the peaks from
the monitoring rollups. A measured value replaces a backfilled one; a backfilled one never
replaces anything.

Each measure runs on its own: one that fails (a missing table, a standby without a WAL
position, an unreachable repository) is reported as skipped with its reason, never a crash.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import psycopg

from bvh_ops.config import Settings
from bvh_ops.errors import DatabaseError
from bvh_ops.pg.conn import connect
from bvh_ops.storage.base import ObjectInfo, ObjectStore

REST = "(rest)"
_BACKUP_ID = re.compile(r"^(\d{8}T\d{6}Z)-([a-z]+)-")
_TIME_COLUMNS = ("created_at", "purchased_at", "occurred_at")
FAMILIES = {"logical": "dumps", "full": "physical", "incremental": "physical"}
_PREFIX_FAMILY = {"wal": "wal", "archive": "archive", "logs": "logs", "files": "files", "audit": "audit"}


@dataclass(frozen=True)
class Sample:
    series: str
    value: float
    unit: str


@dataclass
class Collected:
    day: date
    samples: list[Sample] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (measure, why): it could not run
    not_configured: list[str] = field(default_factory=list)          # measures the settings leave out
    # (backfill, why): history that could not be backfilled; today's samples are whole, the
    # history only shorter, so this does not make the collection incomplete.
    warnings: list[tuple[str, str]] = field(default_factory=list)
    backfilled: int = 0

    @property
    def complete(self) -> bool:
        """Every configured measure ran (what was collected is stored either way)."""
        return not self.skipped

    def incomplete_line(self, rerun: str = "`bvh-ops capacity collect`") -> str:
        return incomplete_line(self.day.isoformat(), self.skipped, rerun)

    def to_json(self) -> dict[str, Any]:
        return {"day": self.day.isoformat(), "samples": [s.__dict__ for s in self.samples],
                "skipped": [{"measure": m, "reason": r} for m, r in self.skipped],
                "not_configured": list(self.not_configured), "complete": self.complete,
                "warnings": [{"measure": m, "reason": r} for m, r in self.warnings],
                "backfilled": self.backfilled}


def incomplete_line(day: str, skipped: Iterable[tuple[str, str]], rerun: str) -> str:
    """The one line an operator reads when a measure could not run: which, why, what to do."""
    what = "; ".join(f"{m} ({r})" for m, r in skipped)
    return (f"capacity collection for {day} is incomplete: {what} not collected; the rest is stored: "
            f"fix the cause and run {rerun} again (a second run the same day replaces the samples)")


# -- the platform database ----------------------------------------------------------------------

def _table_name(name: str) -> str:
    return name if "." in name else f"public.{name}"


def database_samples(conn: psycopg.Connection, top: int, main_tables: Iterable[str], day: date) -> list[Sample]:
    out = [Sample("db.bytes", float(conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]),
                  "bytes")]
    for kind, relkinds, size in (("table", "('r', 'm')", "pg_total_relation_size"), ("index", "('i')", "pg_relation_size")):
        rows = conn.execute(
            f"SELECT n.nspname || '.' || c.relname, {size}(c.oid) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            f"WHERE c.relkind IN {relkinds} AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
            "AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 2 DESC, 1").fetchall()
        out += [Sample(f"{kind}.bytes:{name}", float(b), "bytes") for name, b in rows[:top]]
        if len(rows) > top:
            out.append(Sample(f"{kind}.bytes:{REST}", float(sum(b for _, b in rows[top:])), "bytes"))
    for table in main_tables:
        name = _table_name(table)
        found = _resolve(conn, name)
        if found is None:
            continue
        # Exact below a million rows; above it the planner's estimate (a count(*) a day is not free).
        n = found[3] if found[3] >= 1_000_000 else conn.execute(f"SELECT count(*) FROM {found[2]}").fetchone()[0]
        out.append(Sample(f"rows:{name}", float(n), "rows"))
    if conn.execute("SELECT to_regclass('public.users')").fetchone()[0] is not None:
        out.append(Sample("business.active_users",
                          float(conn.execute("SELECT count(*) FROM public.users WHERE is_active").fetchone()[0]), "users"))
    if conn.execute("SELECT to_regclass('public.tickets')").fetchone()[0] is not None:
        start = datetime.combine(day, time(), UTC)
        n = conn.execute("SELECT count(*) FROM public.tickets WHERE purchased_at >= %s AND purchased_at < %s",
                         (start, start + timedelta(days=1))).fetchone()[0]
        out.append(Sample("business.tickets_per_day", float(n), "tickets"))
    return out


def _resolve(conn: psycopg.Connection, name: str) -> tuple[str, str, str, float] | None:
    """Schema, table, the two quoted and the planner's row estimate of the table ``name`` is as
    PostgreSQL reads it ('"Ünïcödé".café', '"Users"': quotes and all); None: no such table."""
    return conn.execute("SELECT n.nspname, c.relname, format('%%I.%%I', n.nspname, c.relname), c.reltuples "
                        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass(%s)",
                        (name,)).fetchone()


def wal_position(conn: psycopg.Connection) -> Sample:
    # An LSN never goes back on one cluster (pg_stat_wal's counters reset with the statistics); a
    # standby has no insert position: its replay position follows the primary's.
    pos = conn.execute("SELECT pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() "
                       "ELSE pg_current_wal_lsn() END, '0/0')").fetchone()[0]
    if pos is None:
        raise DatabaseError("the standby has replayed no WAL yet: it has no position to measure")
    return Sample("wal.position", float(pos), "bytes")


def connections(conn: psycopg.Connection) -> list[Sample]:
    used, maximum = conn.execute(
        "SELECT count(*) FILTER (WHERE backend_type = 'client backend'), current_setting('max_connections')::int "
        "FROM pg_stat_activity").fetchone()
    return [Sample("connections.peak", float(used), "connections"), Sample("connections.max", float(maximum), "connections")]


# -- the repository and the disks ---------------------------------------------------------------

def family(key: str) -> tuple[str, datetime | None]:
    """The repository family of an object key, and the backup's start time for backup objects."""
    head, _, rest = key.partition("/")
    if head == "backups":
        m = _BACKUP_ID.match(rest)
        if m:
            return FAMILIES.get(m[2], "other"), datetime.strptime(m[1], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        return "other", None
    return _PREFIX_FAMILY.get(head, "other"), None


def repository_history(objects: Iterable[ObjectInfo]) -> dict[str, list[tuple[date, int]]]:
    """Bytes per family (and 'total') as of the end of each day an object appeared (pure):
    cumulative sums over the objects that still exist."""
    added: dict[str, dict[date, int]] = defaultdict(lambda: defaultdict(int))
    for info in objects:
        fam, started = family(info.key)
        day = (started or info.modified).astimezone(UTC).date()
        added[fam][day] += info.size
        added["total"][day] += info.size
    out = {}
    for fam, per_day in added.items():
        running, points = 0, []
        for day in sorted(per_day):
            running += per_day[day]
            points.append((day, running))
        out[fam] = points
    return out


def repository_samples(objects: list[ObjectInfo]) -> list[Sample]:
    totals: dict[str, int] = defaultdict(int)
    for info in objects:
        totals[family(info.key)[0]] += info.size
    out = [Sample(f"repo.bytes:{fam}", float(n), "bytes") for fam, n in sorted(totals.items())]
    return out + [Sample("repo.bytes", float(sum(totals.values())), "bytes")]


def disk_samples(paths: Iterable[Path]) -> list[Sample]:
    import psutil

    out = []
    for path in paths:
        usage = psutil.disk_usage(str(path))
        out += [Sample(f"disk.used:{path}", float(usage.used), "bytes"),
                Sample(f"disk.total:{path}", float(usage.total), "bytes")]
    return out


# -- the monitoring samples ---------------------------------------------------------------------

_MONITORED = {"host.cpu": ("cpu.peak", "%"), "host.memory": ("memory.peak", "%")}


def monitoring_peaks(ops: psycopg.Connection, day: date) -> list[Sample]:
    """The day's peaks of the monitor's CPU, memory and connection samples (raw samples)."""
    if ops.execute("SELECT to_regclass('ops.samples')").fetchone()[0] is None:
        return []
    start = datetime.combine(day, time(), UTC)
    rows = ops.execute("SELECT name, max(value) FROM ops.samples WHERE at >= %s AND at < %s AND value IS NOT NULL "
                       "AND name IN ('host.cpu', 'host.memory', 'database.connections') GROUP BY name",
                       (start, start + timedelta(days=1))).fetchall()
    out = []
    for name, peak in rows:
        if name in _MONITORED:
            series, unit = _MONITORED[name]
            out.append(Sample(series, float(peak), unit))
        else:
            out.append(Sample("connections.peak_percent", float(peak), "%"))
    return out


# -- storing ------------------------------------------------------------------------------------

def store_samples(ops: psycopg.Connection, day: date, samples: Iterable[Sample]) -> int:
    """Upsert one value per series for ``day`` (a second collection the same day replaces it)."""
    n = 0
    with ops.transaction():
        for s in samples:
            ops.execute("INSERT INTO ops.capacity_samples (series, day, value, unit, source) "
                        "VALUES (%s, %s, %s, %s, 'measured') ON CONFLICT (series, day) DO UPDATE SET "
                        "value = EXCLUDED.value, unit = EXCLUDED.unit, source = 'measured'",
                        (s.series, day, s.value, s.unit))
            n += 1
    return n


def backfill_points(ops: psycopg.Connection, series: str, unit: str, points: Iterable[tuple[date, float]]) -> int:
    """Insert history where none exists (never over a measured or earlier backfilled value)."""
    n = 0
    with ops.transaction():
        for day, value in points:
            n += ops.execute("INSERT INTO ops.capacity_samples (series, day, value, unit, source) "
                             "VALUES (%s, %s, %s, %s, 'backfill') ON CONFLICT (series, day) DO NOTHING",
                             (series, day, float(value), unit)).rowcount
    return n


def _previous(ops: psycopg.Connection, series: str, day: date) -> tuple[date, float] | None:
    row = ops.execute("SELECT day, value FROM ops.capacity_samples WHERE series = %s AND day < %s "
                      "ORDER BY day DESC LIMIT 1", (series, day)).fetchone()
    return (row[0], row[1]) if row else None


def wal_per_day(previous: tuple[date, float] | None, day: date, position: float) -> float | None:
    """WAL bytes per day since the previous position (pure); None without one, or when the
    position went back (a new or restored cluster: the difference means nothing)."""
    if previous is None or previous[0] >= day or position < previous[1]:
        return None
    return (position - previous[1]) / (day - previous[0]).days


# -- the entry point ----------------------------------------------------------------------------

def collect(settings: Settings, ops: psycopg.Connection, *, now: datetime | None = None,
            store: ObjectStore | None = None) -> Collected:
    """Measure everything for ``now``'s UTC day, store it, and backfill history where missing."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    day = now.date()
    cfg = settings.capacity
    result = Collected(day)

    def guarded(measure: str, fn: Callable[[], list[Sample]]) -> list[Sample]:
        try:
            got = fn()
        except Exception as exc:  # noqa: BLE001 - one failed measure never stops the others
            result.skipped.append((measure, _why(exc)))
            return []
        result.samples.extend(got)
        return got

    if settings.database_url is not None:
        dsn = settings.require_database_url()
        try:
            with connect(dsn, autocommit=True) as db:
                guarded("database", lambda: database_samples(db, cfg.top_relations, cfg.main_tables, day))
                guarded("connections", lambda: connections(db))
                pos = guarded("wal", lambda: [wal_position(db)])
                if pos and (per_day := wal_per_day(_previous(ops, "wal.position", day), day, pos[0].value)) is not None:
                    result.samples.append(Sample("wal.bytes_per_day", per_day, "bytes"))
                result.backfilled += _guarded_backfill(result, "rows", lambda: backfill_rows(
                    ops, db, cfg.main_tables, day, cfg.backfill_days, warnings=result.warnings))
        except Exception as exc:  # noqa: BLE001 - the platform database down: the rest is still collected
            result.skipped.append(("database", _why(exc)))
    else:
        result.not_configured.append("database")
    if settings.repository:
        objects: list[ObjectInfo] = []

        def listing() -> list[Sample]:
            nonlocal store
            if store is None:   # inside the guard: a store that cannot be opened is this measure's failure
                from bvh_ops.storage import open_store

                store = open_store(settings)
            _present(store)
            objects.extend(store.list(""))
            if not objects and (before := _previous(ops, "repo.bytes", day)) is not None and before[1] > 0:
                # An empty mount point where the volume was (or a wrong bucket prefix): never a
                # repository of backups emptied overnight, and 0 bytes would be a false history.
                from bvh_ops.errors import StorageError

                raise StorageError(f"the repository lists no objects, where it held {before[1]:.0f} bytes on "
                                   f"{before[0]}: is its volume mounted (or its location right)?")
            return repository_samples(objects)

        if guarded("repository", listing):
            result.backfilled += _guarded_backfill(result, "repository",
                                                   lambda: backfill_repository(ops, objects, day, cfg.backfill_days))
    else:
        result.not_configured.append("repository")
    if not settings.disk_paths:
        result.not_configured.append("disks")
    for path in settings.disk_paths:   # one mount that cannot be measured costs only its own samples
        guarded(f"disk {path}", lambda path=path: disk_samples([path]))
    peaks = guarded("monitoring", lambda: monitoring_peaks(ops, day))
    _merge_connection_peak(result, peaks)
    result.backfilled += _guarded_backfill(result, "monitoring", lambda: backfill_monitoring(ops, day, cfg.backfill_days,
                                                                                            result.samples))
    store_samples(ops, day, result.samples)
    return result


def _guarded_backfill(result: Collected, measure: str, fn: Callable[[], int]) -> int:
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - a backfill that cannot run leaves the history shorter, nothing else
        result.warnings.append((f"backfill {measure}", _why(exc)))
        return 0


def _why(exc: BaseException) -> str:
    """An exception as one short line (a server error's LINE/HINT lines left out)."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:200] if text else ''}"


def _present(store: ObjectStore) -> None:
    """The repository is there to be measured: a local root that does not exist (an unmounted
    volume, a typo) would list as empty and be stored as 0 bytes; a bucket that cannot be
    reached fails here with its own message."""
    from bvh_ops.errors import StorageError
    from bvh_ops.storage.local import LocalStore

    if isinstance(store, LocalStore):
        if not store.root.is_dir():
            raise StorageError(f"repository {store.root} does not exist or is not a directory (not mounted?)")
    else:
        store.check()


def _merge_connection_peak(result: Collected, peaks: list[Sample]) -> None:
    """The day's peak connections: the monitor's highest share of max_connections where it ran,
    or the count seen now, whichever is higher."""
    pct = next((s.value for s in peaks if s.series == "connections.peak_percent"), None)
    maximum = next((s.value for s in result.samples if s.series == "connections.max"), None)
    if pct is None or maximum is None:
        return
    for i, s in enumerate(result.samples):
        if s.series == "connections.peak":
            result.samples[i] = Sample(s.series, max(s.value, round(pct * maximum / 100)), s.unit)


def backfill_repository(ops: psycopg.Connection, objects: list[ObjectInfo], day: date, days: int) -> int:
    first = day - timedelta(days=days)
    n = 0
    for fam, points in repository_history(objects).items():
        series = "repo.bytes" if fam == "total" else f"repo.bytes:{fam}"
        n += backfill_points(ops, series, "bytes", _daily(points, first, day))
    return n


def _daily(points: list[tuple[date, float]], first: date, day: date) -> list[tuple[date, float]]:
    """A cumulative step series as one value per day in [first, day) from its first point on."""
    if not points:
        return []
    out, i, value = [], 0, None
    d = max(first, points[0][0])
    while i < len(points) and points[i][0] <= d:
        value = points[i][1]
        i += 1
    while d < day:
        while i < len(points) and points[i][0] <= d:
            value = points[i][1]
            i += 1
        if value is not None:
            out.append((d, value))
        d += timedelta(days=1)
    return out


def backfill_rows(ops: psycopg.Connection, db: psycopg.Connection, tables: Iterable[str], day: date, days: int,
                  warnings: list[tuple[str, str]] | None = None) -> int:
    """Row counts per past day from each main table's time column; ticket sales per day. A table
    whose backfill fails is named in ``warnings`` (else raised) and the others still backfilled;
    a time column that is not a timestamp or date (epoch numbers, text) is not used."""
    if days <= 0:
        return 0
    first = day - timedelta(days=days)
    start = datetime.combine(first, time(), UTC)
    end = datetime.combine(day, time(), UTC)
    n = 0
    for table in tables:
        name = _table_name(table)
        try:
            n += _backfill_table(ops, db, name, first, day, start, end)
        except Exception as exc:
            if warnings is None:
                raise
            warnings.append((f"backfill rows:{name}", _why(exc)))
    return n


def _backfill_table(ops: psycopg.Connection, db: psycopg.Connection, name: str, first: date, day: date,
                    start: datetime, end: datetime) -> int:
    n = 0
    found = _resolve(db, name)
    if found is None:
        return 0
    schema, rel, quoted, _ = found
    cols = {r[0] for r in db.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s AND "
        "data_type IN ('timestamp with time zone', 'timestamp without time zone', 'date')", (schema, rel))}
    col = next((c for c in _TIME_COLUMNS if c in cols), None)
    if col is None:
        return 0
    before = db.execute(f'SELECT count(*) FROM {quoted} WHERE "{col}" < %s', (start,)).fetchone()[0]
    per_day = dict(db.execute(f'SELECT ("{col}" AT TIME ZONE \'UTC\')::date, count(*) FROM {quoted} '
                              f'WHERE "{col}" >= %s AND "{col}" < %s GROUP BY 1', (start, end)).fetchall())
    running, points, tickets = before, [], []
    d = first
    while d < day:
        running += per_day.get(d, 0)
        points.append((d, running))
        tickets.append((d, per_day.get(d, 0)))
        d += timedelta(days=1)
    if before or per_day:
        n += backfill_points(ops, f"rows:{name}", "rows", points)
        if name == "public.tickets" and col == "purchased_at":
            n += backfill_points(ops, "business.tickets_per_day", "tickets", tickets)
    return n


def backfill_monitoring(ops: psycopg.Connection, day: date, days: int, today: list[Sample]) -> int:
    """CPU and memory peaks, and the connections peak (as a count, at today's max_connections),
    per past day from the monitoring's daily rollups."""
    if days <= 0 or ops.execute("SELECT to_regclass('ops.samples_daily')").fetchone()[0] is None:
        return 0
    rows = ops.execute("SELECT day, name, max(max) FROM ops.samples_daily WHERE day >= %s AND day < %s "
                       "AND name IN ('host.cpu', 'host.memory', 'database.connections') AND max IS NOT NULL "
                       "GROUP BY 1, 2 ORDER BY 1", (day - timedelta(days=days), day)).fetchall()
    maximum = next((s.value for s in today if s.series == "connections.max"), None)
    per: dict[tuple[str, str], list[tuple[date, float]]] = defaultdict(list)
    for d, name, peak in rows:
        if name in _MONITORED:
            per[_MONITORED[name]].append((d, peak))
        elif maximum is not None:
            per[("connections.peak", "connections")].append((d, round(peak * maximum / 100)))
    return sum(backfill_points(ops, series, unit, pts) for (series, unit), pts in per.items())
