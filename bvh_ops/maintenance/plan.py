"""What maintenance to do and why, from the health facts (pure: facts, settings and ``now`` in).

Scopes (the runbook's schedule):
- ``daily``: ANALYZE the tables whose modifications since their last analyze pass
  ``analyze_threshold + analyze_scale_factor x reltuples`` (not every table every day);
- ``weekly``: the daily ANALYZEs, plus VACUUM (ANALYZE) where dead tuples pass
  ``vacuum_threshold + vacuum_scale_factor x reltuples``, VACUUM (FREEZE, ANALYZE) where
  age(relfrozenxid) passes ``freeze_warning_percent`` of autovacuum_freeze_max_age, and REINDEX
  INDEX CONCURRENTLY of invalid indexes (not being built right now) and of indexes bloated past
  ``bloat_warning_bytes``. VACUUM FULL only for tables in ``vacuum_full_tables``, when bloated;
- ``monthly``: the weekly plan (archive-logs, capacity and the security audit are their own
  deployments on the same schedule).

Unused and duplicate indexes, sequences near exhaustion, long sessions and inactive slots are
findings only: maintenance never drops an index nor ends a session. Outside the maintenance
window every action is listed as skipped: the run only assesses.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any

from bvh_ops.config import DAYS, MaintenanceSettings
from bvh_ops.maintenance.facts import Facts, IndexFact, TableFact
from bvh_ops.pg.ident import qualified

SCOPES = ("daily", "weekly", "monthly")
# Order of work: statistics first (cheap, helps the workload at once), reindex last (longest).
KINDS = ("analyze", "vacuum", "vacuum_freeze", "vacuum_full", "reindex")


@dataclass(frozen=True)
class Action:
    kind: str          # one of KINDS
    object: str        # schema.table, or schema.index for reindex
    table: str         # schema.table the statement touches (for reindex: the index's table)
    reason: str
    sql: str

    def to_json(self) -> dict[str, str]:
        return {"action": self.kind, "object": self.object, "reason": self.reason, "sql": self.sql}


@dataclass(frozen=True)
class Finding:
    kind: str          # unused_index | duplicate_index | invalid_index | table_bloat | index_bloat | wraparound
    object: str        # | sequence | long_query | idle_in_transaction | inactive_slot
    severity: str      # critical | warning | info
    detail: str

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "object": self.object, "severity": self.severity, "detail": self.detail}


@dataclass(frozen=True)
class Plan:
    scope: str
    at: datetime
    in_window: bool
    window: str                  # "01:00-06:00 UTC mon,tue,..." for the report
    actions: tuple[Action, ...]
    findings: tuple[Finding, ...]
    notes: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"scope": self.scope, "at": self.at.isoformat(), "in_window": self.in_window, "window": self.window,
                "actions": [a.to_json() for a in self.actions], "findings": [f.to_json() for f in self.findings],
                "notes": list(self.notes)}


def in_window(now: datetime, start: time, end: time, days: list[str] | tuple[str, ...]) -> bool:
    """``now`` (UTC) inside [start, end) on one of ``days``. A window that wraps past midnight
    (end <= start) belongs to the day it starts on: sat 23:00-02:00 covers Sunday 01:00."""
    t = now.time().replace(tzinfo=None)
    if start < end:
        return DAYS[now.weekday()] in days and start <= t < end
    if t >= start:
        return DAYS[now.weekday()] in days
    if t < end:
        return DAYS[(now - timedelta(days=1)).weekday()] in days
    return False


def window_text(cfg: MaintenanceSettings) -> str:
    days = "every day" if set(cfg.window_days) == set(DAYS) else ",".join(cfg.window_days)
    return f"{cfg.window_start:%H:%M}-{cfg.window_end:%H:%M} UTC {days}"


def _mib(n: int | None) -> str:
    return "?" if n is None else f"{n / 1048576:.1f} MiB"


def analyze_due(t: TableFact, cfg: MaintenanceSettings) -> int | None:
    """The threshold when ``t`` needs ANALYZE, else None."""
    limit = int(cfg.analyze_threshold + cfg.analyze_scale_factor * max(t.reltuples, 0))
    return limit if t.n_mod_since_analyze > limit else None


def vacuum_due(t: TableFact, cfg: MaintenanceSettings) -> int | None:
    limit = int(cfg.vacuum_threshold + cfg.vacuum_scale_factor * max(t.reltuples, 0))
    return limit if t.n_dead_tup > limit else None


def freeze_percent(t: TableFact, freeze_max_age: int) -> float:
    return 100.0 * t.freeze_age / freeze_max_age if freeze_max_age > 0 else 0.0


def _table_actions(t: TableFact, facts: Facts, cfg: MaintenanceSettings, scope: str) -> list[Action]:
    name = qualified(t.schema, t.name)
    an = analyze_due(t, cfg)
    if scope == "daily":
        if an is None:
            return []
        return [Action("analyze", t.qualified, t.qualified,
                       f"{t.n_mod_since_analyze} rows modified since the last analyze > {an}", f"ANALYZE {name}")]
    freeze = freeze_percent(t, facts.freeze_max_age)
    vac = vacuum_due(t, cfg)
    bloated = t.bloat_bytes is not None and t.bloat_bytes >= cfg.bloat_warning_bytes and t.bloat_bytes > 0
    if bloated and t.qualified in cfg.vacuum_full_tables:
        return [Action("vacuum_full", t.qualified, t.qualified,
                       f"~{_mib(t.bloat_bytes)} wasted ({t.bloat_source}) and allow-listed in vacuum_full_tables "
                       "(ACCESS EXCLUSIVE for the rewrite)", f"VACUUM (FULL, ANALYZE) {name}")]
    if freeze >= cfg.freeze_warning_percent:
        return [Action("vacuum_freeze", t.qualified, t.qualified,
                       f"age(relfrozenxid) {t.freeze_age} is {freeze:.0f}% of autovacuum_freeze_max_age "
                       f"{facts.freeze_max_age} (>= {cfg.freeze_warning_percent:g}%)",
                       f"VACUUM (FREEZE, ANALYZE) {name}")]
    if vac is not None:
        return [Action("vacuum", t.qualified, t.qualified,
                       f"{t.n_dead_tup} dead tuples ({t.dead_ratio:.0%}) > {vac}", f"VACUUM (ANALYZE) {name}")]
    if an is not None:
        return [Action("analyze", t.qualified, t.qualified,
                       f"{t.n_mod_since_analyze} rows modified since the last analyze > {an}", f"ANALYZE {name}")]
    return []


def _reindex(i: IndexFact, cfg: MaintenanceSettings) -> Action | None:
    sql = f"REINDEX INDEX CONCURRENTLY {qualified(i.schema, i.name)}"
    table = f"{i.schema}.{i.table}"
    if not i.valid and not i.building:
        return Action("reindex", i.qualified, table, "invalid (a failed CREATE INDEX CONCURRENTLY or REINDEX)", sql)
    if i.valid and i.bloat_bytes is not None and i.bloat_bytes >= cfg.bloat_warning_bytes and i.bloat_bytes > 0:
        return Action("reindex", i.qualified, table,
                      f"~{_mib(i.bloat_bytes)} of {_mib(i.size_bytes)} wasted ({i.bloat_source})", sql)
    return None


def _severity(value: float, warning: float, critical: float) -> str | None:
    if value >= critical:
        return "critical"
    if value >= warning:
        return "warning"
    return None


def findings(facts: Facts, cfg: MaintenanceSettings) -> list[Finding]:
    """What is reported, never acted on automatically (plus the critical side of what is acted on)."""
    out: list[Finding] = []
    for t in facts.tables:
        pct = freeze_percent(t, facts.freeze_max_age)
        if pct >= cfg.freeze_critical_percent:
            out.append(Finding("wraparound", t.qualified, "critical",
                               f"age(relfrozenxid) {t.freeze_age} is {pct:.0f}% of autovacuum_freeze_max_age: "
                               "VACUUM (FREEZE) it (the weekly run does, inside the window)"))
        if t.bloat_bytes is not None and (sev := _severity(t.bloat_bytes, cfg.bloat_warning_bytes,
                                                           cfg.bloat_critical_bytes)) and t.bloat_bytes > 0:
            out.append(Finding("table_bloat", t.qualified, sev,
                               f"~{_mib(t.bloat_bytes)} of {_mib(t.size_bytes)} wasted ({t.bloat_source}); VACUUM "
                               "makes it reusable, only VACUUM FULL (vacuum_full_tables) or pg_repack returns it"))
    groups: dict[tuple[str, str], list[IndexFact]] = defaultdict(list)
    for i in facts.indexes:
        if i.valid:
            groups[(f"{i.schema}.{i.table}", i.definition)].append(i)
        elif i.building:
            continue  # a concurrent build in progress looks invalid until it finishes
        else:
            out.append(Finding("invalid_index", i.qualified, "warning",
                               "invalid index (costs writes, serves no reads): rebuilt by the weekly run"))
        if (i.valid and i.idx_scan == 0 and not i.backs_constraint and i.size_bytes >= cfg.unused_index_min_bytes):
            out.append(Finding("unused_index", i.qualified, "info",
                               f"never scanned since the statistics reset, {_mib(i.size_bytes)}, backs no constraint: "
                               "review and drop it by hand if it is really unused (on every replica too)"))
    for (table, _definition), same in sorted(groups.items()):
        if len(same) < 2:
            continue
        keep = sorted(same, key=lambda i: (not i.backs_constraint, i.name))[0]
        for i in same:
            if i is not keep:
                out.append(Finding("duplicate_index", i.qualified, "warning",
                                   f"same definition as {keep.qualified} on {table}: one of them is enough "
                                   "(reported, never dropped automatically)"))
    for s in facts.sequences:
        if sev := _severity(s.percent_used, cfg.sequence_warning_percent, cfg.sequence_critical_percent):
            out.append(Finding("sequence", f"{s.schema}.{s.name}", sev,
                               f"{s.percent_used:.1f}% of its range used: widen it (ALTER SEQUENCE ... AS bigint) "
                               "before inserts fail"))
    for sess in facts.sessions:
        kind = "long_query" if sess.state == "active" else "idle_in_transaction"
        if sev := _severity(sess.seconds, cfg.session_warning_seconds, cfg.session_critical_seconds):
            out.append(Finding(kind, f"pid:{sess.pid}", sev,
                               f"{sess.state} for {sess.seconds:.0f} s ({sess.user}, {sess.application or '-'}): "
                               "holds back VACUUM and may hold locks"))
    for slot in facts.slots:
        if sev := _severity(slot.retained_bytes, cfg.slot_warning_bytes, cfg.slot_critical_bytes):
            out.append(Finding("inactive_slot", f"slot:{slot.name}", sev,
                               f"inactive {slot.slot_type} slot retains {_mib(slot.retained_bytes)} of WAL: "
                               "reconnect its consumer or drop the slot"))
    return out


def plan(facts: Facts, scope: str, cfg: MaintenanceSettings, now: datetime) -> Plan:
    """The plan for ``scope`` at ``now``. Raises ValueError for an unknown scope."""
    if scope not in SCOPES:
        raise ValueError(f"scope '{scope}': choose one of {', '.join(SCOPES)}")
    notes = list(facts.notes)
    actions: list[Action] = []
    if facts.in_recovery:
        notes.append("no action planned on a standby")
    else:
        for t in facts.tables:
            actions += _table_actions(t, facts, cfg, scope)
        if scope != "daily":
            actions += [a for i in facts.indexes if (a := _reindex(i, cfg)) is not None]
    if scope == "monthly":
        notes.append("monthly = the weekly plan; archive-logs, capacity planning and the security audit run as "
                     "their own deployments on the 1st")
    actions.sort(key=lambda a: (KINDS.index(a.kind), a.object))
    inside = in_window(now, cfg.window_start, cfg.window_end, cfg.window_days)
    if not inside and actions:
        notes.append(f"outside the maintenance window ({window_text(cfg)}): assessment only")
    return Plan(scope, now, inside, window_text(cfg), tuple(actions), tuple(findings(facts, cfg)), tuple(notes))
