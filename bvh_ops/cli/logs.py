"""``bvh-ops logs collect|search``: collect the configured log sources into the ops database's hot
store, and search it (the runbook's log viewer). The ops database is ``ops_database_url``, or the
embedded one (started for the call where stopped)."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated

import typer

from bvh_ops.cli.core import app, cli_settings, emit_json, out

logs_app = typer.Typer(no_args_is_help=True, help="Logs: collect, search, analyze, retention and legal holds.")
app.add_typer(logs_app, name="logs")


@contextmanager
def _ops_conn(settings):
    from bvh_ops.opsdb.database import ops_database
    from bvh_ops.opsdb.migrations import migrate
    from bvh_ops.pg.conn import connect

    with ops_database(settings) as dsn:
        conn = connect(dsn, autocommit=True)
        try:
            migrate(conn)
            yield conn
        finally:
            conn.close()


@logs_app.command("collect")
def collect_cmd(as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON")] = False) -> None:
    """Read every [\\[log_sources]] file on from its stored offset into the ops database. Exit 0,
    1 when a file could not be read (the others were collected)."""
    from bvh_ops.logs.collect import collect_configured

    result = collect_configured(cli_settings())
    if as_json:
        emit_json(result.to_json())
    else:
        for s in result.sources:
            out.print(f"{s.name}: {s.records} records from {s.files} files ({s.bytes} bytes), "
                      f"{s.quarantined} quarantined, {s.errors} errors", markup=False)
            for line in s.messages:
                out.print(f"  {line}", markup=False)
        out.print(f"{result.records} records, {result.quarantined} quarantined in {result.seconds:.1f} s",
                  markup=False)
    raise typer.Exit(1 if result.errors else 0)


@logs_app.command("search")
def search_cmd(
    category: Annotated[str | None, typer.Option("--category", help="security, application, performance, "
                                                 "audit or debug")] = None,
    since: Annotated[str | None, typer.Option("--since", help="ISO time or a duration back (30m, 2h, 7d)")] = None,
    until: Annotated[str | None, typer.Option("--until", help="ISO time or a duration back (exclusive)")] = None,
    level: Annotated[str | None, typer.Option("--level", help="This level and above: debug, info, warning, "
                                              "error")] = None,
    match: Annotated[list[str] | None, typer.Option("--match", help="FIELD=VALUE (repeatable): a record field, "
                                                    "or event/source/message")] = None,
    grep: Annotated[str | None, typer.Option("--grep", help="Text in the message or any field (any case)")] = None,
    limit: Annotated[int, typer.Option("--limit", max=10**12, help="At most this many records (0: all)")] = 1000,
    archived: Annotated[bool, typer.Option("--archived", help="Search the archived days too (decrypted from the "
                                           "repository with the identity, streamed)")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the records as JSON")] = False,
) -> None:
    """Records of the hot store (and with --archived the archived days first), oldest first, then
    their count; streamed (never held whole)."""
    from bvh_ops.logs.search import build_query, text_line
    from bvh_ops.logs.store import iter_records

    query = build_query(category=category, since=since, until=until, level=level, match=match or [], grep=grep,
                        limit=limit, now=datetime.now(UTC))
    count = 0
    write = sys.stdout.write
    settings = cli_settings()
    if archived:
        settings.require_identity()
    with _ops_conn(settings) as conn:
        if as_json:
            write('{"records": [')
        for rec in _archived_then_hot(settings, conn, query, archived, iter_records):
            if query.limit and count >= query.limit:
                break
            if as_json:
                write(("," if count else "") + "\n  " + json.dumps(_doc(rec), default=str, ensure_ascii=False))
            else:
                write(text_line(rec) + "\n")
            count += 1
    limited = bool(query.limit) and count >= (query.limit or 0)
    if as_json:
        write(f'\n], "count": {count}, "limited": {json.dumps(limited)}}}\n')
    else:
        write(f"{count} records" + (f" (limited to {query.limit}: --limit 0 for all)" if limited else "") + "\n")


def _archived_then_hot(settings, conn, query, archived: bool, iter_records):
    """Archived days (older: their partitions are gone from the hot store) then the hot store."""
    if archived:
        from bvh_ops.logs.archive import iter_archived
        from bvh_ops.logs.search import matches, record_of

        for doc in iter_archived(settings, conn, query.since, query.until, query.category):
            if matches(query, doc):
                yield record_of(doc)
    yield from iter_records(conn, query)


def _doc(rec) -> dict:
    return {"at": rec.at.isoformat(), "category": rec.category, "source": rec.source, "level": rec.level,
            "event": rec.event, "message": rec.message, "fields": rec.fields}

