"""Versioned migrations of the ops database: an ordered list of (version, description, SQL), the
applied ones recorded in ``ops.schema_migrations``. ``migrate`` applies the missing ones in one
transaction under an advisory lock, so two commands starting at once cannot both apply one.

Migration 1 is exactly the drills schema the drill code used to create on every call (CREATE ...
IF NOT EXISTS), so a database made before migrations existed upgrades in place. Never edit an
applied migration: add the next one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import psycopg

from bvh_ops.errors import DatabaseError

# pg_advisory_xact_lock key: "bvhmigr" in ASCII, any constant the other users of the database avoid.
LOCK_KEY = 0x62766868_6D696772


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    sql: str


DRILLS_SQL = """
CREATE SCHEMA IF NOT EXISTS ops;
CREATE TABLE IF NOT EXISTS ops.drills (
    drill_id text PRIMARY KEY,
    started_at timestamptz NOT NULL,
    finished_at timestamptz NOT NULL,
    backup_id text,
    mode text NOT NULL,
    passed boolean NOT NULL,
    rto_seconds double precision,
    rpo_seconds double precision,
    rto_objective_seconds double precision NOT NULL,
    rpo_objective_seconds double precision NOT NULL,
    report jsonb NOT NULL
);
CREATE TABLE IF NOT EXISTS ops.drill_checks (
    drill_id text NOT NULL REFERENCES ops.drills (drill_id) ON DELETE CASCADE,
    name text NOT NULL,
    status text NOT NULL CHECK (status IN ('passed', 'failed', 'not_verified')),
    detail text NOT NULL DEFAULT '',
    PRIMARY KEY (drill_id, name)
);
"""

# Raw samples, one daily partition per UTC day (named samples_YYYYMMDD, so retention can read the
# day from the name); the writer creates today's and the next days' partitions ahead through
# ops.ensure_sample_partitions. status: 0 ok, 1 warning, 2 unknown, 3 critical (the Prometheus
# exposition's numbers). No detail column: details may carry host names.
SAMPLES_SQL = """
CREATE TABLE ops.samples (
    at timestamptz NOT NULL,
    name text NOT NULL,
    service text NOT NULL,
    status smallint NOT NULL CHECK (status BETWEEN 0 AND 3),
    value double precision,
    unit text NOT NULL DEFAULT ''
) PARTITION BY RANGE (at);
CREATE INDEX samples_name_at ON ops.samples (name, at);
CREATE INDEX samples_service_at ON ops.samples (service, at);

CREATE FUNCTION ops.ensure_sample_partitions(first_day date, days integer) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    d date;
BEGIN
    FOR i IN 0 .. days - 1 LOOP
        d := first_day + i;
        -- the common case (it exists) costs one catalog lookup: no lock, no NOTICE
        CONTINUE WHEN to_regclass('ops.samples_' || to_char(d, 'YYYYMMDD')) IS NOT NULL;
        -- serialise writers creating the same partition (CREATE IF NOT EXISTS alone can race)
        PERFORM pg_advisory_xact_lock(hashtext('ops.samples partitions'));
        EXECUTE format(
            'CREATE TABLE IF NOT EXISTS ops.%I PARTITION OF ops.samples FOR VALUES FROM (%L) TO (%L)',
            'samples_' || to_char(d, 'YYYYMMDD'),
            (d::timestamp AT TIME ZONE 'UTC'), ((d + 1)::timestamp AT TIME ZONE 'UTC'));
    END LOOP;
END $$;

CREATE TABLE ops.samples_hourly (
    hour timestamptz NOT NULL,
    name text NOT NULL,
    service text NOT NULL,
    n integer NOT NULL,
    ok integer NOT NULL,
    warning integer NOT NULL,
    unknown integer NOT NULL,
    critical integer NOT NULL,
    avg double precision,
    min double precision,
    max double precision,
    p95 double precision,
    PRIMARY KEY (hour, name, service)
);
CREATE INDEX samples_hourly_service ON ops.samples_hourly (service, hour);

CREATE TABLE ops.samples_daily (
    day date NOT NULL,
    name text NOT NULL,
    service text NOT NULL,
    n integer NOT NULL,
    ok integer NOT NULL,
    warning integer NOT NULL,
    unknown integer NOT NULL,
    critical integer NOT NULL,
    avg double precision,
    min double precision,
    max double precision,
    p95 double precision,
    PRIMARY KEY (day, name, service)
);
CREATE INDEX samples_daily_service ON ops.samples_daily (service, day);
"""

# Alerting (#12). alert_states: one row per fingerprint, the state machine's memory across
# restarts. alert_events: the journal of fired/resolved events (routing's input). notifications:
# the notification log and outbox in one — one row per message key, pending until delivered;
# a restarted monitor neither re-sends (the key exists) nor drops (pending rows are retried).
# silences: matchers (globs) muting notifications until ``until``. incidents: one per critical
# episode (fired -> resolved), what the incident report and the uptime report agree on.
ALERTING_SQL = """
CREATE TABLE ops.alert_states (
    fingerprint text PRIMARY KEY,
    name text NOT NULL,
    severity text NOT NULL CHECK (severity IN ('critical', 'warning', 'info')),
    service text NOT NULL,
    check_name text NOT NULL,
    labels jsonb NOT NULL DEFAULT '{}',
    detail text NOT NULL DEFAULT '',
    phase text NOT NULL CHECK (phase IN ('inactive', 'pending', 'firing', 'resolved')),
    since timestamptz NOT NULL,
    bad integer NOT NULL DEFAULT 0,
    good integer NOT NULL DEFAULT 0,
    silenced boolean NOT NULL DEFAULT false,
    inhibited boolean NOT NULL DEFAULT false,
    bad_since timestamptz,
    good_since timestamptz,
    acknowledged_at timestamptz,
    acknowledged_by text,
    updated_at timestamptz NOT NULL
);

CREATE TABLE ops.alert_events (
    fingerprint text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('fired', 'resolved')),
    at timestamptz NOT NULL,
    name text NOT NULL,
    severity text NOT NULL,
    service text NOT NULL,
    check_name text NOT NULL,
    labels jsonb NOT NULL DEFAULT '{}',
    detail text NOT NULL DEFAULT '',
    silenced boolean NOT NULL DEFAULT false,
    inhibited boolean NOT NULL DEFAULT false,
    since timestamptz,
    PRIMARY KEY (fingerprint, kind, at)
);
CREATE INDEX alert_events_at ON ops.alert_events (at);

CREATE TABLE ops.notifications (
    key text PRIMARY KEY,
    channel text NOT NULL,
    severity text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('fired', 'resolved', 'batch', 'digest', 'test')),
    subject text NOT NULL,
    lines jsonb NOT NULL,
    fingerprints text[] NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL,
    status text NOT NULL CHECK (status IN ('pending', 'sent', 'abandoned')),
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    last_error text,
    sent_at timestamptz
);
CREATE INDEX notifications_pending ON ops.notifications (channel, next_attempt_at) WHERE status = 'pending';
CREATE INDEX notifications_created ON ops.notifications (created_at);

CREATE TABLE ops.silences (
    id bigserial PRIMARY KEY,
    name text NOT NULL DEFAULT '*',
    service text NOT NULL DEFAULT '*',
    check_name text NOT NULL DEFAULT '*',
    fingerprint text,
    starts_at timestamptz NOT NULL,
    until timestamptz NOT NULL,
    comment text NOT NULL,
    created_by text NOT NULL,
    CHECK (until > starts_at)
);
CREATE INDEX silences_until ON ops.silences (until);

CREATE TABLE ops.incidents (
    id bigserial PRIMARY KEY,
    fingerprint text NOT NULL,
    name text NOT NULL,
    service text NOT NULL,
    check_name text NOT NULL,
    started_at timestamptz NOT NULL,
    ended_at timestamptz,
    fired_detail text NOT NULL DEFAULT '',
    resolved_detail text,
    UNIQUE (fingerprint, started_at),
    CHECK (ended_at IS NULL OR ended_at >= started_at)
);
CREATE INDEX incidents_started ON ops.incidents (started_at);
CREATE UNIQUE INDEX incidents_open ON ops.incidents (fingerprint) WHERE ended_at IS NULL;

-- Findings other procedures report (security scan, capacity, log analysis, drills, verify): the
-- monitor turns the active ones into alerts every cycle, and the cleared ones into resolutions.
CREATE TABLE ops.findings (
    source text NOT NULL,
    key text NOT NULL,
    severity text NOT NULL CHECK (severity IN ('critical', 'warning', 'info')),
    title text NOT NULL,
    detail text NOT NULL DEFAULT '',
    first_seen timestamptz NOT NULL,
    last_seen timestamptz NOT NULL,
    cleared_at timestamptz,
    PRIMARY KEY (source, key)
);
CREATE INDEX findings_active ON ops.findings (source) WHERE cleared_at IS NULL;
"""

# Logs and the audit trail (#13). log_records: collected log lines, partitioned by category
# (LIST) and then by UTC day (RANGE), partitions named log_<category>_<YYYYMMDD> and created
# ahead by ops.ensure_log_partition; retention archives then drops a whole day partition.
# log_offsets: how far each source file was read (identity = device:inode; a rotated file keeps
# its identity under a new name). log_quarantine: malformed lines, kept, never dropped silently.
# log_archives: day partitions exported to the repository (verified before the drop).
# log_holds: legal holds blocking deletion. audit_chain: the append-only hash chain;
# audit_digests: the signed checkpoints written to the repository.
LOGS_AUDIT_SQL = """
CREATE TABLE ops.log_records (
    at timestamptz NOT NULL,
    category text NOT NULL CHECK (category IN ('security', 'application', 'performance', 'audit', 'debug')),
    source text NOT NULL,
    level text NOT NULL DEFAULT 'info',
    event text NOT NULL DEFAULT '',
    message text NOT NULL DEFAULT '',
    fields jsonb NOT NULL DEFAULT '{}',
    file_id text NOT NULL DEFAULT '',
    file_offset bigint NOT NULL DEFAULT 0
) PARTITION BY LIST (category);
CREATE TABLE ops.log_security PARTITION OF ops.log_records FOR VALUES IN ('security') PARTITION BY RANGE (at);
CREATE TABLE ops.log_application PARTITION OF ops.log_records FOR VALUES IN ('application') PARTITION BY RANGE (at);
CREATE TABLE ops.log_performance PARTITION OF ops.log_records FOR VALUES IN ('performance') PARTITION BY RANGE (at);
CREATE TABLE ops.log_audit PARTITION OF ops.log_records FOR VALUES IN ('audit') PARTITION BY RANGE (at);
CREATE TABLE ops.log_debug PARTITION OF ops.log_records FOR VALUES IN ('debug') PARTITION BY RANGE (at);
CREATE INDEX log_records_at ON ops.log_records (at);
CREATE INDEX log_records_event_at ON ops.log_records (event, at);

CREATE FUNCTION ops.ensure_log_partition(cat text, d date) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF to_regclass('ops.log_' || cat || '_' || to_char(d, 'YYYYMMDD')) IS NOT NULL THEN
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('ops.log_records partitions'));
    EXECUTE format(
        'CREATE TABLE IF NOT EXISTS ops.%I PARTITION OF ops.%I FOR VALUES FROM (%L) TO (%L)',
        'log_' || cat || '_' || to_char(d, 'YYYYMMDD'), 'log_' || cat,
        (d::timestamp AT TIME ZONE 'UTC'), ((d + 1)::timestamp AT TIME ZONE 'UTC'));
END $$;

CREATE TABLE ops.log_offsets (
    source text NOT NULL,
    file_id text NOT NULL,
    path text NOT NULL,
    file_offset bigint NOT NULL,
    head_sha256 text NOT NULL DEFAULT '',
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (source, file_id)
);

CREATE TABLE ops.log_quarantine (
    id bigserial PRIMARY KEY,
    source text NOT NULL,
    path text NOT NULL,
    file_offset bigint NOT NULL,
    line text NOT NULL,
    error text NOT NULL,
    at timestamptz NOT NULL
);

CREATE TABLE ops.log_archives (
    category text NOT NULL,
    day date NOT NULL,
    object_key text NOT NULL,
    records bigint NOT NULL,
    sha256 text NOT NULL,
    bytes_stored bigint NOT NULL,
    archived_at timestamptz NOT NULL,
    partition_dropped_at timestamptz,
    deleted_at timestamptz,
    PRIMARY KEY (category, day)
);

CREATE TABLE ops.log_holds (
    id bigserial PRIMARY KEY,
    category text NOT NULL,
    from_day date NOT NULL,
    to_day date NOT NULL,
    reason text NOT NULL,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL,
    released_at timestamptz,
    CHECK (to_day >= from_day)
);

CREATE TABLE ops.audit_chain (
    seq bigint PRIMARY KEY,
    at timestamptz NOT NULL,
    actor text NOT NULL,
    action text NOT NULL,
    subject text NOT NULL DEFAULT '',
    data jsonb NOT NULL DEFAULT '{}',
    prev_hash text NOT NULL,
    hash text NOT NULL UNIQUE
);
CREATE INDEX audit_chain_at ON ops.audit_chain (at);
-- Append-only by intent: updates, deletes and TRUNCATE are refused. Someone with the rights to
-- disable this trigger can still edit rows; the hash chain and the signed digests catch that.
CREATE FUNCTION ops.audit_chain_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ops.audit_chain is append-only (% refused)', TG_OP;
END $$;
CREATE TRIGGER audit_chain_append_only BEFORE UPDATE OR DELETE ON ops.audit_chain
    FOR EACH ROW EXECUTE FUNCTION ops.audit_chain_append_only();
CREATE TRIGGER audit_chain_no_truncate BEFORE TRUNCATE ON ops.audit_chain
    FOR EACH STATEMENT EXECUTE FUNCTION ops.audit_chain_append_only();

CREATE TABLE ops.audit_digests (
    seq bigint PRIMARY KEY,
    head_hash text NOT NULL,
    entries bigint NOT NULL,
    at timestamptz NOT NULL,
    prev_digest_sha256 text NOT NULL,
    object_key text,
    signature text NOT NULL,
    public_key text NOT NULL
);
"""

# Maintenance (#14): each run and its actions; pg_stat_statements snapshots for the weekly
# performance report's week-over-week comparison. (Unreleased: edited in place until it lands.)
MAINTENANCE_SQL = """
CREATE TABLE ops.maintenance_runs (
    run_id text PRIMARY KEY,
    scope text NOT NULL,
    target text NOT NULL,
    started_at timestamptz NOT NULL,
    finished_at timestamptz,
    dry_run boolean NOT NULL,
    report jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX maintenance_runs_target_started ON ops.maintenance_runs (target, started_at);

-- pg_stat_statements per query (summed over users), cumulative as the view has them: a week's
-- work is the difference between two snapshots (a smaller figure means the stats were reset).
CREATE TABLE ops.statement_snapshots (
    target text NOT NULL,
    taken_at timestamptz NOT NULL,
    queryid bigint NOT NULL,
    query text NOT NULL,
    calls bigint NOT NULL,
    total_ms double precision NOT NULL,
    rows bigint NOT NULL,
    PRIMARY KEY (target, taken_at, queryid)
);
"""

# Security (#15): each scan/audit run and its findings. (Unreleased: edited in place.)
# kind: scan | audit | baseline; status: passed | warning | failed; counts: unwaived findings
# per severity ({"critical": 0, ...}) for the trend; report: the whole report (no secrets in it).
SECURITY_SQL = """
CREATE TABLE ops.security_runs (
    run_id text PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('scan', 'audit', 'baseline')),
    started_at timestamptz NOT NULL,
    finished_at timestamptz,
    status text NOT NULL DEFAULT 'passed' CHECK (status IN ('passed', 'warning', 'failed')),
    counts jsonb NOT NULL DEFAULT '{}',
    not_checked integer NOT NULL DEFAULT 0,
    drift integer,
    report jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX security_runs_started ON ops.security_runs (started_at DESC);
"""

# Capacity (#16): the daily history of every resource series. (Unreleased: edited in place.)
CAPACITY_SQL = """
-- One value per series per UTC day (bvh_ops/capacity/collect.py); a re-collection the same day
-- replaces it. source: 'measured' (collected that day) or 'backfill' (reconstructed from
-- manifests, monitoring rollups or created_at columns; never overwrites a measured value).
CREATE TABLE ops.capacity_samples (
    series text NOT NULL,
    day date NOT NULL,
    value double precision NOT NULL,
    unit text NOT NULL DEFAULT '',
    source text NOT NULL DEFAULT 'measured' CHECK (source IN ('measured', 'backfill')),
    PRIMARY KEY (series, day)
);
-- The forecasts each capacity-planning run made (expected path with its interval, one row per
-- target day), so a later run scores them against what happened (MAPE at 1 and 3 months).
CREATE TABLE ops.capacity_forecasts (
    made_on date NOT NULL,
    series text NOT NULL,
    target_day date NOT NULL,
    model text NOT NULL,
    expected double precision NOT NULL,
    low double precision NOT NULL,
    high double precision NOT NULL,
    PRIMARY KEY (made_on, series, target_day)
);
CREATE INDEX capacity_forecasts_series ON ops.capacity_forecasts (series, target_day);
"""

# The weekly performance report's index and table trend (#14, second part): one row per target
# and run (with the target's statistics reset time then: a reset since a snapshot voids its
# index counts), each index's cumulative scans and size by OID (an index created again under its
# name is new), each table's size and estimated bloat with the kind of estimate (only like is
# compared). A week's index use and bloat growth are the difference between two snapshots;
# everything older than 400 days is pruned (statement snapshots too: their index here).
PERFORMANCE_SQL = """
CREATE TABLE ops.performance_snapshots (
    target text NOT NULL,
    taken_at timestamptz NOT NULL,
    stats_reset timestamptz,
    in_recovery boolean NOT NULL DEFAULT false,
    PRIMARY KEY (target, taken_at)
);
CREATE INDEX performance_snapshots_taken_at ON ops.performance_snapshots (taken_at);
CREATE TABLE ops.index_snapshots (
    target text NOT NULL,
    taken_at timestamptz NOT NULL,
    index_oid oid NOT NULL,
    index_name text NOT NULL,
    table_name text NOT NULL,
    idx_scan bigint NOT NULL,
    size_bytes bigint NOT NULL,
    backs_constraint boolean NOT NULL,
    valid boolean NOT NULL DEFAULT true,
    PRIMARY KEY (target, taken_at, index_oid),
    FOREIGN KEY (target, taken_at) REFERENCES ops.performance_snapshots ON DELETE CASCADE
);
CREATE TABLE ops.table_snapshots (
    target text NOT NULL,
    taken_at timestamptz NOT NULL,
    table_name text NOT NULL,
    size_bytes bigint NOT NULL,
    bloat_bytes bigint,
    bloat_source text NOT NULL,
    n_live_tup bigint NOT NULL,
    n_dead_tup bigint NOT NULL,
    PRIMARY KEY (target, taken_at, table_name),
    FOREIGN KEY (target, taken_at) REFERENCES ops.performance_snapshots ON DELETE CASCADE
);
CREATE INDEX table_snapshots_table ON ops.table_snapshots (target, table_name, taken_at);
CREATE INDEX statement_snapshots_taken_at ON ops.statement_snapshots (taken_at);
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "drills and their checks", DRILLS_SQL),
    Migration(2, "monitoring samples (daily partitions) and hourly/daily rollups", SAMPLES_SQL),
    Migration(3, "alerting: alert states, event journal, notification log, silences, incidents, findings",
              ALERTING_SQL),
    Migration(4, "logs (by category and day), offsets, quarantine, archives, legal holds; the audit chain and its "
                 "signed digests", LOGS_AUDIT_SQL),
    Migration(5, "maintenance runs and pg_stat_statements snapshots", MAINTENANCE_SQL),
    Migration(6, "security scan and audit runs", SECURITY_SQL),
    Migration(7, "capacity history (daily samples) and the forecasts made, for scoring", CAPACITY_SQL),
    Migration(8, "performance report: index use and table bloat snapshots", PERFORMANCE_SQL),
)

LATEST = MIGRATIONS[-1].version

_BOOKKEEPING_SQL = """
CREATE SCHEMA IF NOT EXISTS ops;
CREATE TABLE IF NOT EXISTS ops.schema_migrations (
    version integer PRIMARY KEY,
    description text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
"""


def check_order(migrations: Sequence[Migration]) -> None:
    """Versions are 1, 2, 3, ... in order, each described: a gap or a duplicate is a bug here."""
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(migrations) + 1)):
        raise ValueError(f"migration versions must be 1..{len(migrations)} in order, got {versions}")
    if any(not m.description.strip() or not m.sql.strip() for m in migrations):
        raise ValueError("every migration needs a description and SQL")


def plan(applied: Iterable[int], migrations: Sequence[Migration] = MIGRATIONS) -> list[Migration]:
    """The migrations still to apply, in order (pure). A database at a version this code does not
    know was migrated by a newer bvh-ops: refuse rather than write to a schema we do not know."""
    check_order(migrations)
    done = set(applied)
    known = {m.version for m in migrations}
    if unknown := sorted(done - known):
        raise DatabaseError(f"the ops database has schema version(s) {unknown} this bvh-ops does not know "
                            f"(it knows up to {migrations[-1].version if migrations else 0}): upgrade bvh-ops")
    return [m for m in migrations if m.version not in done]


def migrate(conn: psycopg.Connection, migrations: Sequence[Migration] = MIGRATIONS) -> list[int]:
    """Apply the missing migrations in one transaction under an advisory lock; returns the
    versions applied (empty when the schema was current). ``conn`` should have no transaction open
    (autocommit, or idle): the transaction here commits on success and rolls back on failure."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        conn.execute(_BOOKKEEPING_SQL)
        applied = [r[0] for r in conn.execute("SELECT version FROM ops.schema_migrations").fetchall()]
        todo = plan(applied, migrations)
        for m in todo:
            conn.execute(m.sql)
            conn.execute("INSERT INTO ops.schema_migrations (version, description) VALUES (%s, %s)",
                         (m.version, m.description))
    return [m.version for m in todo]


def schema_version(conn: psycopg.Connection) -> int | None:
    """The newest applied version; None when the database was never migrated."""
    row = conn.execute("SELECT to_regclass('ops.schema_migrations') IS NOT NULL").fetchone()
    if not row[0]:
        return None
    return conn.execute("SELECT max(version) FROM ops.schema_migrations").fetchone()[0]
