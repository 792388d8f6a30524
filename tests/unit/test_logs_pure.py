"""The pure parts of log collection and search, table-driven: parsers, classifier, offset
planner, reader framing, pseudonymiser, search arguments."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta

import pytest

from bvh_ops.errors import ConfigError
from bvh_ops.logs.classify import Rule, classify
from bvh_ops.logs.offsets import FileState, Stored, plan_reads
from bvh_ops.logs.parsers import CSV_COLUMNS, ParseError, parse, parse_pg_time
from bvh_ops.logs.pseudonym import PREFIX, Pseudonymiser
from bvh_ops.logs.reader import MAX_LINE_BYTES, read_records
from bvh_ops.logs.record import Record
from bvh_ops.logs.search import build_query, parse_time

T = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)


def jsonlog(**kw) -> str:
    base = {"timestamp": "2026-11-28 10:00:00.123 UTC", "user": "app", "dbname": "lottery", "pid": 42,
            "remote_host": "10.0.0.5", "remote_port": 51000, "error_severity": "LOG", "message": ""}
    return json.dumps(base | kw)


def csvlog(severity: str, message: str, state: str = "00000", columns: int = len(CSV_COLUMNS)) -> str:
    row = ["2026-11-28 10:00:00.123 UTC", "app", "lottery", "42", "10.0.0.5:51000", "6748.2a", "3", "SELECT",
           "2026-11-28 09:59:00 UTC", "3/7", "0", severity, state, message, "", "", "", "", "", "", "", "",
           "psql", "client backend", "", "0"][:columns]
    buf = io.StringIO()
    import csv

    csv.writer(buf).writerow(row)
    return buf.getvalue().rstrip("\r\n")


@pytest.mark.parametrize("fmt, line, event, level", [
    ("postgres-jsonlog", jsonlog(message="connection authorized: user=app database=lottery"),
     "pg.connection_authorized", "info"),
    ("postgres-jsonlog", jsonlog(error_severity="FATAL", state_code="28P01",
                                 message='password authentication failed for user "app"'), "pg.auth_failed", "error"),
    ("postgres-jsonlog", jsonlog(error_severity="FATAL", state_code="28000",
                                 message='no pg_hba.conf entry for host "10.0.0.5"'), "pg.auth_failed", "error"),
    ("postgres-jsonlog", jsonlog(message="duration: 1532.204 ms  statement: SELECT * FROM draws"),
     "pg.slow_statement", "info"),
    ("postgres-jsonlog", jsonlog(error_severity="ERROR", state_code="23505", message="duplicate key value"),
     "pg.error", "error"),
    ("postgres-jsonlog", jsonlog(error_severity="WARNING", message="there is no transaction in progress"),
     "pg.log", "warning"),
    ("postgres-jsonlog", jsonlog(error_severity="DEBUG2", message="x"), "pg.log", "debug"),
    ("postgres-csvlog", csvlog("LOG", "connection received: host=10.0.0.5 port=51000"), "pg.connection_received",
     "info"),
    ("postgres-csvlog", csvlog("FATAL", 'password authentication failed for user "app"', "28P01"),
     "pg.auth_failed", "error"),
    ("postgres-csvlog", csvlog("LOG", "duration: 12.5 ms  execute <unnamed>: SELECT 1"), "pg.slow_statement", "info"),
    ("postgres-csvlog", csvlog("PANIC", "could not write"), "pg.error", "error"),
    ("postgres-csvlog", csvlog("LOG", "checkpoint complete: wrote 3 buffers", columns=23), "pg.checkpoint", "info"),
])
def test_postgres_lines(fmt, line, event, level):
    rec = parse(fmt, line, source="pg")
    assert (rec.event, rec.level, rec.category) == (event, level, "")
    assert rec.at == datetime(2026, 11, 28, 10, 0, 0, 123000, tzinfo=UTC)
    assert rec.fields["ip"] == "10.0.0.5" and rec.fields["database"] == "lottery"


def test_duration_fields():
    rec = parse("postgres-jsonlog", jsonlog(message="duration: 1532.204 ms  statement: SELECT\n 1"), source="pg")
    assert rec.fields["duration_ms"] == 1532.204 and rec.fields["statement"] == "SELECT\n 1"


def test_platform_line():
    line = ('{"timestamp":"2026-11-28T10:00:00.500Z","level":"warning","category":"security",'
            '"event":"auth.login_failed","service":"lottery-api","ip":"203.0.113.9","email":"a@b.co"}')
    rec = parse("json", line, source="app")
    assert rec == Record(at=datetime(2026, 11, 28, 10, 0, 0, 500000, tzinfo=UTC), category="security", source="app",
                         level="warning", event="auth.login_failed",
                         fields={"service": "lottery-api", "ip": "203.0.113.9", "email": "a@b.co"})


@pytest.mark.parametrize("fmt, line, error", [
    ("json", "{", "not JSON"),
    ("json", "[1]", "not a JSON object"),
    ("json", '{"level": "info"}', "timestamp is missing"),
    ("json", '{"timestamp": "yesterday"}', "not ISO 8601"),
    ("json", '{"timestamp": "2026-11-28T10:00:00Z", "level": "loud"}', "unknown level"),
    ("json", '{"timestamp": "2026-11-28T10:00:00Z", "category": "metrics"}', "unknown category"),
    ("postgres-jsonlog", jsonlog(error_severity="SHOUT"), "unknown error_severity"),
    ("postgres-jsonlog", json.dumps({"timestamp": "2026-11-28 10:00:00 UTC"}), "error_severity is missing"),
    ("postgres-jsonlog", jsonlog(timestamp="2026-11-28 10:00:00 IST"), "ambiguous"),
    ("postgres-csvlog", "a,b,c", "3 columns"),
    ("postgres-csvlog", 'x,"unterminated', "not CSV"),
])
def test_malformed(fmt, line, error):
    with pytest.raises(ParseError, match=error):
        parse(fmt, line, source="s")


@pytest.mark.parametrize("text, expected", [
    ("2026-11-28 10:00:00 UTC", datetime(2026, 11, 28, 10, tzinfo=UTC)),
    ("2026-11-28 10:00:00.5 GMT", datetime(2026, 11, 28, 10, 0, 0, 500000, tzinfo=UTC)),
    ("2026-11-28 12:00:00 +02", datetime(2026, 11, 28, 10, tzinfo=UTC)),
    ("2026-11-28 04:30:00 -05:30", datetime(2026, 11, 28, 10, tzinfo=UTC)),
])
def test_pg_times(text, expected):
    assert parse_pg_time(text) == expected


def rec(event="", level="info", category="", message="") -> Record:
    return Record(at=T, category=category, source="s", level=level, event=event, message=message)


@pytest.mark.parametrize("record, source_cat, rules, expected", [
    (rec("auth.login_failed", category="audit"), "debug", (), "audit"),      # its own category wins
    (rec("pg.error"), "security", (), "security"),                          # then the source's
    (rec("pg.auth_failed"), None, (), "security"),
    (rec("pg.connection_authorized"), None, (), "security"),
    (rec("pg.slow_statement"), None, (), "performance"),
    (rec("pg.error", level="error"), None, (), "application"),
    (rec("pg.log", message="permission denied for table draws"), None, (), "security"),
    (rec("pg.log", level="debug"), None, (), "debug"),
    (rec("pg.log"), None, (), "application"),                              # the default
    (rec("pg.error"), None, (Rule("audit", event="pg.*", message="balance"),), "application"),
    (rec("pg.error", message="balance adjusted"), None, (Rule("audit", event="pg.*", message="balance"),), "audit"),
    (rec("pg.slow_statement"), None, (Rule("debug", event="pg.slow_*", level="info"),), "debug"),
])
def test_classifier(record, source_cat, rules, expected):
    assert classify(record, source_category=source_cat, rules=rules).category == expected


def fs(path, fid, size, mtime=1.0, head="h") -> FileState:
    return FileState(path, fid, size, mtime, head)


@pytest.mark.parametrize("files, stored, expected, gone", [
    ([fs("app.log", "1:1", 100)], {}, [("app.log", 0, None)], []),
    ([fs("app.log", "1:1", 100)], {"1:1": Stored("1:1", "app.log", 60, "h")}, [("app.log", 60, None)], []),
    # rotated: the old inode under its new name continues; the new file from 0, after it
    ([fs("app.log", "1:2", 10, mtime=5), fs("app.log.1", "1:1", 100, mtime=4)],
     {"1:1": Stored("1:1", "app.log", 60, "h")}, [("app.log.1", 60, None), ("app.log", 0, None)], []),
    ([fs("app.log", "1:1", 30)], {"1:1": Stored("1:1", "app.log", 60, "h")}, [("app.log", 0, "truncated")], []),
    ([fs("app.log", "1:1", 100, head="other")], {"1:1": Stored("1:1", "app.log", 60, "h")},
     [("app.log", 0, "replaced")], []),
    ([fs("app.log", "1:3", 5)], {"1:1": Stored("1:1", "app.log.1", 60, "h")}, [("app.log", 0, None)], ["1:1"]),
])
def test_offset_planner(files, stored, expected, gone):
    plans, vanished = plan_reads(files, stored)
    assert [(p.path, p.start, p.restart and p.restart.split()[0]) for p in plans] == expected
    assert vanished == gone


@pytest.mark.parametrize("data, start, csv_mode, expected, end", [
    (b"a\nb\n", 0, False, ["a", "b"], 4),
    (b"a\nb\npartial", 0, False, ["a", "b"], 4),
    (b"a\nb\n", 2, False, ["b"], 4),
    (b"a\n\nb\n", 0, False, ["a", "", "b"], 5),
    (b'1,"x\ny",2\n3,"z",4\n', 0, True, ['1,"x\ny",2', '3,"z",4'], 18),
    (b'1,"x\ny",2\n3,"still open\n', 0, True, ['1,"x\ny",2'], 10),
])
def test_reader_framing(data, start, csv_mode, expected, end):
    lines = list(read_records(io.BytesIO(data), start, multiline_csv=csv_mode))
    assert [r.text for r in lines] == expected
    assert (lines[-1].end if lines else start) == end


def test_reader_cuts_an_overlong_line_and_goes_on():
    data = b"x" * (MAX_LINE_BYTES + 10) + b"\nok\n"
    lines = list(read_records(io.BytesIO(data), 0))
    assert lines[0].error and "longer than" in lines[0].error and len(lines[0].text) == 1024
    assert lines[1].text == "ok" and lines[1].end == len(data)


def test_pseudonymiser_is_stable_keyed_and_category_bound():
    p = Pseudonymiser.of(b"k" * 32, ["email", "ip"], ["application"])
    r = Record(at=T, category="application", source="s", message="mail dana@example.org now",
               fields={"email": "dana@example.org", "IP": "1.2.3.4", "nested": {"ip": "5.6.7.8"}, "n": 3})
    out = p.apply(r)
    assert out.fields["email"] == p.pseudonym("dana@example.org") and out.fields["email"].startswith(PREFIX)
    assert out.fields["IP"].startswith(PREFIX) and out.fields["nested"]["ip"].startswith(PREFIX)
    assert out.fields["n"] == 3 and "dana@example.org" not in out.message
    assert p.apply(out) == out                                                 # never hashed twice
    assert Pseudonymiser.of(b"j" * 32, ["email"], ["application"]).pseudonym("x") != p.pseudonym("x")
    sec = Record(at=T, category="security", source="s", fields={"email": "dana@example.org"})
    assert p.apply(sec) is sec
    assert "k" * 8 not in repr(p)


@pytest.mark.parametrize("text, expected", [
    ("2h", T - timedelta(hours=2)), ("1h30m", T - timedelta(minutes=90)), ("7d", T - timedelta(days=7)),
    ("2026-11-27", datetime(2026, 11, 27, tzinfo=UTC)),
    ("2026-11-27T12:00:00+02:00", datetime(2026, 11, 27, 10, tzinfo=UTC)),
])
def test_search_times(text, expected):
    assert parse_time("--since", text, T) == expected


def test_build_query():
    q = build_query(category="security", since="1h", until=None, level="WARN", match=["ip=1.2.3.4", "note=a=b"],
                    grep="x", limit=0, now=T)
    assert (q.category, q.since, q.level, q.match, q.limit) == ("security", T - timedelta(hours=1), "warning",
                                                                {"ip": "1.2.3.4", "note": "a=b"}, None)
    with pytest.raises(ConfigError, match="--match"):
        build_query(category=None, since=None, until=None, level=None, match=["=x"], grep=None, limit=None, now=T)
