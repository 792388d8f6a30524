"""Health facts of the target database, read from the catalog and the statistics views: what the
pure planner (plan.py) decides from. Reading them takes no lock on a user table (sizes come from
pg_class.relpages, as of the last VACUUM/ANALYZE/CREATE INDEX, because pg_relation_size() opens
the relation and would queue behind an ACCESS EXCLUSIVE lock); the optional pgstattuple calls do
lock (ACCESS SHARE), so each runs alone under ``lock_timeout`` and a locked relation falls back to
the statistics estimate.

Bloat: ``pgstattuple_approx`` (tables) and ``pgstatindex`` (btree indexes) where the pgstattuple
extension is installed in the target; otherwise a statistics-based estimate: the pages the rows
should need (reltuples x (sum of pg_stats.avg_width + tuple header and item pointer), at the
fill factor) against relpages. ``bloat_source`` says which; a missing extension adds a note.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import errors as pgerr


@dataclass(frozen=True)
class TableFact:
    schema: str
    name: str
    reltuples: float              # planner's row estimate (-1: never vacuumed/analyzed)
    n_live_tup: int
    n_dead_tup: int
    n_mod_since_analyze: int
    last_vacuum: datetime | None          # latest of manual and auto
    last_analyze: datetime | None         # latest of manual and auto
    freeze_age: int               # age(relfrozenxid)
    size_bytes: int               # relpages x block size
    bloat_bytes: int | None       # estimated wasted bytes (None: no estimate possible)
    bloat_source: str             # "pgstattuple_approx" | "statistics" | "none"

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def dead_ratio(self) -> float:
        total = self.n_live_tup + self.n_dead_tup
        return self.n_dead_tup / total if total else 0.0


@dataclass(frozen=True)
class IndexFact:
    schema: str
    table: str
    name: str
    valid: bool                   # pg_index.indisvalid
    building: bool                # a CREATE INDEX CONCURRENTLY / REINDEX of it is in progress
    idx_scan: int
    backs_constraint: bool        # primary key, unique or exclusion constraint (or a unique index)
    size_bytes: int
    definition: str               # normalised: access method, columns, opclasses, expressions, predicate
    bloat_bytes: int | None
    bloat_source: str

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class SequenceFact:
    schema: str
    name: str
    percent_used: float


@dataclass(frozen=True)
class SessionFact:
    pid: int
    state: str                    # "active" | "idle in transaction" | "idle in transaction (aborted)"
    seconds: float                # active: since query_start; idle in transaction: since state_change
    user: str
    application: str
    query: str                    # first 200 characters


@dataclass(frozen=True)
class SlotFact:
    name: str
    slot_type: str
    retained_bytes: int


@dataclass(frozen=True)
class Facts:
    at: datetime
    database: str
    server_version: int
    in_recovery: bool
    freeze_max_age: int
    tables: tuple[TableFact, ...] = ()
    indexes: tuple[IndexFact, ...] = ()
    sequences: tuple[SequenceFact, ...] = ()
    sessions: tuple[SessionFact, ...] = ()
    slots: tuple[SlotFact, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["at"] = self.at.isoformat()
        return doc


_TABLES_SQL = """
SELECT n.nspname, c.relname, c.reltuples, coalesce(s.n_live_tup, 0), coalesce(s.n_dead_tup, 0),
       coalesce(s.n_mod_since_analyze, 0),
       greatest(s.last_vacuum, s.last_autovacuum), greatest(s.last_analyze, s.last_autoanalyze),
       age(c.relfrozenxid), c.relpages::bigint * current_setting('block_size')::bigint,
       -- statistics estimate: the pages the rows need at the fill factor vs the pages there are
       CASE WHEN w.width IS NULL OR c.reltuples <= 0 THEN NULL ELSE greatest(0,
           c.relpages::bigint * current_setting('block_size')::bigint
           - ceil(c.reltuples * (w.width + 24 + 4)
                  / (current_setting('block_size')::numeric * coalesce(
                        (SELECT substring(o FROM 'fillfactor=([0-9]+)')::numeric FROM unnest(c.reloptions) o
                         WHERE o LIKE 'fillfactor=%%'), 100) / 100))
             * current_setting('block_size')::bigint) END
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_all_tables s ON s.relid = c.oid
LEFT JOIN LATERAL (SELECT sum(st.avg_width) AS width FROM pg_stats st
                   WHERE st.schemaname = n.nspname AND st.tablename = c.relname) w ON true
WHERE c.relkind IN ('r', 'm') AND c.relpersistence <> 't'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%%'
ORDER BY 1, 2
"""

# An index whose leading columns are a foreign key's columns on its table (any order): what
# deleting or updating a referenced row looks the referencing rows up by. Idle until then, it
# still backs the key: never "unused".
FK_SUPPORT = """EXISTS (SELECT 1 FROM pg_constraint f WHERE f.contype = 'f' AND f.conrelid = i.indrelid
           AND cardinality(f.conkey) <= i.indnkeyatts
           AND (SELECT array_agg(k ORDER BY k) FROM unnest((i.indkey::int2[])[0:cardinality(f.conkey) - 1]) k)
               = (SELECT array_agg(k ORDER BY k) FROM unnest(f.conkey) k))"""

_INDEXES_SQL = """
SELECT n.nspname, t.relname, c.relname, i.indisvalid,
       EXISTS (SELECT 1 FROM pg_stat_progress_create_index p
               WHERE p.datid = (SELECT oid FROM pg_database WHERE datname = current_database())
                 AND (p.index_relid = c.oid OR (p.relid = t.oid AND p.index_relid = 0))),
       coalesce(s.idx_scan, 0),
       i.indisprimary OR i.indisunique OR i.indisexclusion
           OR EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = c.oid)
           OR EXISTS (SELECT 1 FROM pg_inherits h WHERE h.inhrelid = c.oid)  -- a partition's, attached
           OR """ + FK_SUPPORT + """,
       c.relpages::bigint * current_setting('block_size')::bigint,
       -- pgwatch's duplicate key; pg_get_indexdef() would wait behind an ACCESS EXCLUSIVE lock
       concat_ws(' ', am.amname, i.indkey::text, i.indclass::text, i.indcollation::text, i.indoption::text,
                 coalesce(i.indexprs::text, ''), coalesce(i.indpred::text, '')),
       am.amname, c.reltuples,
       (SELECT sum(st.avg_width) FROM pg_attribute a JOIN pg_stats st
            ON st.schemaname = n.nspname AND st.tablename = t.relname AND st.attname = a.attname
        WHERE a.attrelid = t.oid AND a.attnum = ANY (i.indkey::smallint[]))
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_class t ON t.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_am am ON am.oid = c.relam
LEFT JOIN pg_stat_all_indexes s ON s.indexrelid = c.oid
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%%'
  AND t.relpersistence <> 't'
ORDER BY 1, 2, 3
"""

_SEQUENCES_SQL = """
SELECT schemaname, sequencename,
       CASE WHEN increment_by > 0 THEN
                (coalesce(last_value, start_value) - min_value)::numeric / nullif(max_value - min_value, 0)
            ELSE (max_value - coalesce(last_value, start_value))::numeric / nullif(max_value - min_value, 0) END
FROM pg_sequences WHERE NOT cycle ORDER BY 1, 2
"""

_SESSIONS_SQL = """
SELECT pid, state,
       extract(epoch FROM now() - CASE WHEN state = 'active' THEN query_start ELSE state_change END),
       coalesce(usename, ''), coalesce(application_name, ''), left(coalesce(query, ''), 200)
FROM pg_stat_activity
WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
  AND state IN ('active', 'idle in transaction', 'idle in transaction (aborted)')
ORDER BY 3 DESC
"""

_SLOTS_SQL = """
SELECT slot_name, slot_type, coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn), 0)::bigint
FROM pg_replication_slots WHERE NOT active ORDER BY 1
"""


def _extensions(conn: psycopg.Connection) -> dict[str, str]:
    """Installed extensions of the target database -> their schema."""
    return dict(conn.execute("SELECT e.extname, n.nspname FROM pg_extension e "
                             "JOIN pg_namespace n ON n.oid = e.extnamespace").fetchall())


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _one_locked(conn: psycopg.Connection, query: str, params: tuple) -> tuple | None:
    """One pgstattuple call on its own: a relation locked by someone else (lock_timeout) or gone
    since the catalog read answers None, never an error."""
    try:
        return conn.execute(query, params).fetchone()
    except (pgerr.LockNotAvailable, pgerr.QueryCanceled, pgerr.UndefinedTable, pgerr.FeatureNotSupported,
            pgerr.ObjectNotInPrerequisiteState, pgerr.WrongObjectType):
        if not conn.autocommit:
            conn.rollback()
        return None


def gather(conn: psycopg.Connection, *, now: datetime, lock_timeout_ms: int = 5000,
           statement_timeout_seconds: float = 600.0, indexes: bool = True) -> Facts:
    """Read every fact of the connected database. ``conn`` must be in autocommit. ``indexes``
    False: no index facts (the performance report reads its own; pgstatindex reads each index
    whole)."""
    conn.execute(f"SET lock_timeout = {int(lock_timeout_ms)}")
    conn.execute(f"SET statement_timeout = {int(statement_timeout_seconds * 1000)}")
    notes: list[str] = []
    db, version, in_recovery, freeze_max_age = conn.execute(
        "SELECT current_database(), current_setting('server_version_num')::int, pg_is_in_recovery(), "
        "current_setting('autovacuum_freeze_max_age')::bigint").fetchone()
    exts = _extensions(conn)
    pst = exts.get("pgstattuple")
    if pst is None:
        notes.append("pgstattuple is not installed in this database: bloat is a statistics-based estimate "
                     "(CREATE EXTENSION pgstattuple for pgstattuple_approx / pgstatindex)")

    tables = []
    for row in conn.execute(_TABLES_SQL).fetchall():
        schema, name, reltuples, live, dead, mods, last_vac, last_an, age, size, est = row
        bloat, source = (int(est), "statistics") if est is not None else (None, "none")
        if pst is not None and size > 0:
            got = _one_locked(conn, f"SELECT approx_free_space + dead_tuple_len FROM {_quote(pst)}.pgstattuple_approx"
                                    "(%s::regclass)", (f"{_quote(schema)}.{_quote(name)}",))
            if got is not None:
                bloat, source = int(got[0]), "pgstattuple_approx"
        tables.append(TableFact(schema, name, float(reltuples), int(live), int(dead), int(mods), last_vac, last_an,
                                int(age), int(size), bloat, source))

    index_facts = []
    for row in conn.execute(_INDEXES_SQL).fetchall() if indexes else ():
        schema, table, name, valid, building, scans, backs, size, definition, am, reltuples, width = row
        bloat: int | None = None
        source = "none"
        if width is not None and reltuples and reltuples > 0 and am == "btree":
            # btree leaf pages are filled to 90 % by default; 8-byte index tuple header + 4-byte item pointer
            need = reltuples * (float(width) + 12) / (8192 * 0.9) * 8192
            bloat, source = max(0, int(size - need)), "statistics"
        if pst is not None and am == "btree" and valid and size > 0:
            got = _one_locked(conn, f"SELECT index_size, avg_leaf_density FROM {_quote(pst)}.pgstatindex(%s::regclass)",
                              (f"{_quote(schema)}.{_quote(name)}",))
            if got is not None and got[1] == got[1]:  # avg_leaf_density is NaN on an empty index
                bloat, source = max(0, int(got[0] * (1 - float(got[1]) / 90.0))), "pgstatindex"
        index_facts.append(IndexFact(schema, table, name, bool(valid), bool(building), int(scans), bool(backs),
                                     int(size), definition, bloat, source))

    sequences = [SequenceFact(s, n, float(p or 0) * 100) for s, n, p in conn.execute(_SEQUENCES_SQL).fetchall()]
    sessions = [SessionFact(int(pid), st, float(sec or 0), u, app, q)
                for pid, st, sec, u, app, q in conn.execute(_SESSIONS_SQL).fetchall()]
    slots: list[SlotFact] = []
    if in_recovery:
        notes.append("the target is a standby (in recovery): maintenance runs on its primary; only facts were read")
    else:
        slots = [SlotFact(n, t, int(b)) for n, t, b in conn.execute(_SLOTS_SQL).fetchall()]
    conn.execute("RESET lock_timeout")
    conn.execute("RESET statement_timeout")
    return Facts(now, db, int(version), bool(in_recovery), int(freeze_max_age), tuple(tables), tuple(index_facts),
                 tuple(sequences), tuple(sessions), tuple(slots), tuple(notes))
