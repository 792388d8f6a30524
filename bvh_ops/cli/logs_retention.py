"""``bvh-ops logs retention [--apply]``, ``logs hold``, ``logs holds``, ``logs release``: the
log retention plan (archive before delete, legal retention per category, audit never deleted)
and the legal holds that block deletion."""

from __future__ import annotations

import getpass
from datetime import UTC, date, datetime
from typing import Annotated

import typer

from bvh_ops.cli.core import cli_settings, emit_json, out
from bvh_ops.cli.logs import logs_app
from bvh_ops.errors import ConfigError


def _ops(settings):
    from contextlib import contextmanager

    from bvh_ops.opsdb.database import ops_database
    from bvh_ops.opsdb.migrations import migrate
    from bvh_ops.pg.conn import connect

    @contextmanager
    def cm():
        with ops_database(settings) as dsn, connect(dsn, autocommit=True) as conn:
            migrate(conn)
            yield conn

    return cm()


def _day(text: str, option: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{option} '{text}': not a date (YYYY-MM-DD)") from None


@logs_app.command("retention")
def retention_cmd(apply: Annotated[bool, typer.Option("--apply", help="Carry the plan out (default: show it)")]
                  = False,
                  as_json: Annotated[bool, typer.Option("--json", help="Print the plan/outcome as JSON")] = False
                  ) -> None:
    """Show (or apply) the log retention plan: days older than log_hot_days archived to the
    repository, verified, then dropped from the ops database; archives past their category's
    retention deleted (security 7 years, application 2, performance 90 days, debug 30; audit
    never); legal holds block deletion. Exit 1 when an applied action failed."""
    from bvh_ops.logs.archive import apply as apply_plan
    from bvh_ops.logs.archive import state
    from bvh_ops.logs.retention import held_back, plan

    settings = cli_settings()
    now = datetime.now(UTC)
    with _ops(settings) as conn:
        partitions, archives, holds = state(conn, now)
        actions = plan(partitions, archives, holds, now, hot_days=settings.log_hot_days,
                       retention=settings.log_retention_days)
        kept = held_back(partitions, archives, holds, now, retention=settings.log_retention_days)
        if apply and actions:
            settings.require_recipients()
            outcome = apply_plan(conn, settings, actions, now)
        else:
            outcome = [a.to_json() for a in actions]
    failed = [o for o in outcome if o.get("done") is False and "skipped" not in o]
    doc = {"applied": apply, "actions": outcome, "held": kept}
    if as_json:
        emit_json(doc)
    else:
        if not outcome:
            out.print("nothing to do: every day is hot, archived, or kept", markup=False)
        for o in outcome:
            state_word = "" if not apply else (" done" if o.get("done") else f" FAILED: {o.get('error') or o.get('skipped')}")
            extra = f" ({o['records']} records)" if "records" in o else ""
            out.print(f"{o['action']:<16} {o['category']:<12} {o['day']}{extra}  {o['why']}{state_word}", markup=False)
        for k in kept:
            out.print(f"held             {k['category']:<12} {k['day']}  legal hold: {k['hold']}", markup=False)
        if not apply and outcome:
            out.print("(dry run: --apply carries it out)", markup=False)
    raise typer.Exit(1 if failed else 0)


@logs_app.command("hold")
def hold_cmd(category: Annotated[str, typer.Argument(help="security, application, performance, audit or debug")],
             from_day: Annotated[str, typer.Option("--from", help="First day held (YYYY-MM-DD)")],
             to_day: Annotated[str, typer.Option("--to", help="Last day held (YYYY-MM-DD)")],
             reason: Annotated[str, typer.Option("--reason", help="Why (case number, request)")],
             as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Place a legal hold: no log of CATEGORY from those days is deleted until it is released
    (they are still archived out of the hot store)."""
    from bvh_ops.logs.record import CATEGORIES

    if category not in CATEGORIES:
        raise ConfigError(f"category '{category}': choose one of {', '.join(CATEGORIES)}")
    first, last = _day(from_day, "--from"), _day(to_day, "--to")
    if last < first:
        raise ConfigError(f"--to {last} is before --from {first}")
    if not reason.strip():
        raise ConfigError("--reason is empty: say why (it is kept with the hold)")
    settings = cli_settings()
    with _ops(settings) as conn:
        hid = conn.execute("INSERT INTO ops.log_holds (category, from_day, to_day, reason, created_by, created_at) "
                           "VALUES (%s, %s, %s, %s, %s, now()) RETURNING id",
                           (category, first, last, reason.strip(), getpass.getuser())).fetchone()[0]
        from bvh_ops.audit.record import record

        record(settings, None, "logs.hold", f"{category}/{first}..{last}", {"id": hid, "reason": reason.strip()},
               conn=conn)
    doc = {"id": hid, "category": category, "from": first.isoformat(), "to": last.isoformat(), "reason": reason}
    if as_json:
        emit_json(doc)
    else:
        out.print(f"hold {hid}: {category} {first} .. {last} ({reason.strip()})", markup=False)


@logs_app.command("holds")
def holds_cmd(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Active legal holds."""
    settings = cli_settings()
    with _ops(settings) as conn:
        rows = conn.execute("SELECT id, category, from_day, to_day, reason, created_by, created_at FROM ops.log_holds "
                            "WHERE released_at IS NULL ORDER BY id").fetchall()
    docs = [{"id": r[0], "category": r[1], "from": r[2].isoformat(), "to": r[3].isoformat(), "reason": r[4],
             "created_by": r[5], "created_at": r[6].isoformat()} for r in rows]
    if as_json:
        emit_json(docs)
        return
    if not docs:
        out.print("no active legal holds", markup=False)
    for d in docs:
        out.print(f"{d['id']}: {d['category']} {d['from']} .. {d['to']} ({d['reason']}; {d['created_by']})",
                  markup=False)


@logs_app.command("release")
def release_cmd(hold_id: Annotated[int, typer.Argument(help="The hold's id (bvh-ops logs holds)")]) -> None:
    """Release a legal hold (retention applies again to those days)."""
    settings = cli_settings()
    with _ops(settings) as conn:
        done = conn.execute("UPDATE ops.log_holds SET released_at = now() WHERE id = %s AND released_at IS NULL",
                            (hold_id,)).rowcount
        if done:
            from bvh_ops.audit.record import record

            record(settings, None, "logs.release", str(hold_id), {}, conn=conn)
    if not done:
        from bvh_ops.errors import NotFound

        raise NotFound(f"no active hold {hold_id}: see `bvh-ops logs holds` for the active ones")
    out.print(f"released hold {hold_id}", markup=False)


@logs_app.command("rotate")
def rotate_cmd(dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the plan only")] = False,
               as_json: Annotated[bool, typer.Option("--json", help="Print the actions as JSON")] = False) -> None:
    """Rotate the platform's log files (the [\\[log_sources]] with rotate_bytes), as cleanup-logs
    does daily: each source collected first; a file past rotate_bytes renamed <file>.1 (older
    ones shifted; the collector reads on what it had not from the new name) and the platform,
    proven to be the writer, sent its reopen signal; rotated files beyond rotate_keep deleted
    once collected to their end. Exit 1 when an action failed."""
    from bvh_ops.logs.collect import collect_configured
    from bvh_ops.logs.rotate import rotate_configured

    settings = cli_settings()
    names = [s.name for s in settings.log_sources if s.rotate_bytes is not None]
    if not names:
        raise ConfigError("no log source rotates: give a [[log_sources]] table rotate_bytes, active_file and "
                          "reopen_pid_file")
    messages = []
    if not dry_run:  # what is collected now need not be read from a renamed file later
        messages = [f"{src.name}: {m}" for src in collect_configured(settings, names).sources for m in src.messages]
    with _ops(settings) as conn:
        actions = rotate_configured(settings, conn, act=not dry_run)
    if as_json:
        emit_json({"actions": actions, "collect_messages": messages})
    else:
        for m in messages:
            out.print(f"collect  {m}", markup=False)
        for a in actions:
            out.print(f"{a['status']:<8} {a['action']:<7} {a['object']}  {a['detail']}", markup=False)
        if not actions:
            out.print("nothing to rotate or delete", markup=False)
    raise typer.Exit(1 if any(a["status"] == "failed" for a in actions) else 0)
