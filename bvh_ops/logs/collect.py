"""Collection (#13, item 1): every configured source's files read on from their stored offsets,
each line parsed, classified, pseudonymised where its category asks, and COPYed into the hot
store. A file's records and its new offset commit in ONE transaction (every COMMIT_BYTES of
it, and at its end): if the ops database goes away, nothing of the uncommitted part is kept
and the next run reads it again — nothing lost, nothing twice. Malformed lines go to the
quarantine (counted, in the same transaction); an unreadable file is one message and the run
goes on with the others."""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import date, datetime

import psycopg

from bvh_ops.audit.store import append_many
from bvh_ops.config import LogSource, Settings
from bvh_ops.errors import ConcurrencyError, DatabaseError, DatabaseUnavailable
from bvh_ops.logs import store
from bvh_ops.logs.classify import Rule, classify
from bvh_ops.logs.offsets import HEAD_BYTES, FileState, ReadPlan, head_length, plan_reads
from bvh_ops.logs.parsers import ParseError, parse
from bvh_ops.logs.pseudonym import Pseudonymiser, load_or_create_key
from bvh_ops.logs.reader import read_records
from bvh_ops.logs.record import Record

COMMIT_BYTES = 64 << 20     # a huge first read commits (records + offset) every 64 MiB of file
LOCK_KEY = 0x6C6F6773       # "logs": one collector (or log rotation) at a time per ops database
LOCK_WAIT_SECONDS = 30.0    # how long a collect waits for that lock (a rotation holds it for seconds)
_SKIP_SUFFIXES = (".gz", ".zst", ".xz", ".bz2")   # compressed rotations: read before compression


@dataclass
class SourceResult:
    name: str
    files: int = 0
    records: int = 0
    bytes: int = 0
    quarantined: int = 0
    errors: int = 0
    messages: list[str] = field(default_factory=list)   # unreadable files, restarts: one line each


@dataclass
class CollectResult:
    sources: list[SourceResult]
    seconds: float

    @property
    def records(self) -> int:
        return sum(s.records for s in self.sources)

    @property
    def quarantined(self) -> int:
        return sum(s.quarantined for s in self.sources)

    @property
    def errors(self) -> int:
        return sum(s.errors for s in self.sources)

    def to_json(self) -> dict:
        return {"sources": [asdict(s) for s in self.sources], "records": self.records,
                "quarantined": self.quarantined, "errors": self.errors, "seconds": round(self.seconds, 3)}


@dataclass(frozen=True)
class Pipeline:
    """What turns a line into a stored Record: the source, the rules, the pseudonymiser."""

    source: LogSource
    rules: tuple[Rule, ...] = ()
    default_category: str = "application"
    pseudonymiser: Pseudonymiser | None = None

    def record(self, text: str) -> Record:
        rec = parse(self.source.format, text, source=self.source.name)
        rec = classify(rec, source_category=self.source.category, rules=self.rules, default=self.default_category)
        return self.pseudonymiser.apply(rec) if self.pseudonymiser else rec


def pipelines(settings: Settings, sources: Sequence[LogSource] | None = None) -> list[Pipeline]:
    """One Pipeline per configured source (or per ``sources``)."""
    chosen = list(settings.log_sources if sources is None else sources)
    rules = tuple(Rule(r.category, r.event, r.level, r.message) for r in settings.log_rules)
    pseudo = None
    if chosen and settings.log_pseudonymise_fields and settings.log_pseudonymise_categories:
        key = load_or_create_key(settings.state_dir)
        pseudo = Pseudonymiser.of(key, settings.log_pseudonymise_fields, settings.log_pseudonymise_categories)
    return [Pipeline(s, rules, settings.log_default_category, pseudo) for s in chosen]


def collect(conn: psycopg.Connection, pipes: Sequence[Pipeline], *, now: datetime,
            batch: int = 5000, lock_wait: float = LOCK_WAIT_SECONDS) -> CollectResult:
    """Collect every source of ``pipes`` (``conn``: not autocommit; transactions are ours). The
    collection lock is waited for up to ``lock_wait`` seconds."""
    t0 = time.monotonic()
    try:
        if conn.autocommit:
            raise ValueError("collect needs a connection with autocommit off")
        # One collector at a time: two would read the same offsets and store lines twice. A log
        # rotation (bvh_ops.logs.rotate) holds the lock for seconds: waited for, briefly.
        deadline = time.monotonic() + lock_wait
        while not conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()[0]:
            conn.rollback()
            if time.monotonic() > deadline:
                raise ConcurrencyError(f"another `logs collect` or a log rotation has held the ops database's "
                                       f"log-collection lock for {lock_wait:g} s: wait for it to finish")
            time.sleep(0.25)
        conn.commit()
        try:
            store.ensure_ahead(conn, now)
            known = store.existing_partitions(conn)
            conn.commit()
            results = [collect_source(conn, p, now=now, batch=batch, known=known) for p in pipes]
        finally:
            if not conn.closed and not conn.broken:
                conn.rollback()
                conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
                conn.commit()
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"ops database lost during log collection ({str(exc).strip().splitlines()[0]}): "
                                  "nothing uncommitted was kept; the next run reads it again") from None
    except psycopg.Error as exc:
        raise DatabaseError(f"ops database refused the log collection: {str(exc).strip().splitlines()[0]}") from None
    return CollectResult(results, time.monotonic() - t0)


def collect_source(conn: psycopg.Connection, pipe: Pipeline, *, now: datetime, batch: int,
                   known: set[tuple[str, date]]) -> SourceResult:
    """The steps of one source: find its files, plan each read, read, commit."""
    src = pipe.source
    result = SourceResult(src.name)
    stored = store.load_offsets(conn, src.name)
    conn.commit()
    # 1. Open every matching file now and keep it open: what is planned is what is read, even if
    #    the writer rotates meanwhile (a renamed file keeps its inode and our handle).
    handles: dict[str, int] = {}
    states = []
    try:
        for path in sorted(glob.glob(src.path)):
            if path.endswith(_SKIP_SUFFIXES):
                continue
            try:
                fd = os.open(path, os.O_RDONLY)
                st = os.fstat(fd)
                if not _is_regular(st.st_mode):
                    os.close(fd)
                    raise IsADirectoryError(21, "not a regular file")
            except FileNotFoundError as exc:
                if not os.path.lexists(path):  # listed, then renamed or removed: no error, read next run
                    continue
                result.errors += 1  # a dangling symlink
                result.messages.append(f"{path}: unreadable ({exc.strerror or exc}); skipped")
                continue
            except OSError as exc:
                result.errors += 1
                result.messages.append(f"{path}: unreadable ({exc.strerror or exc}); skipped")
                continue
            file_id = f"{st.st_dev}:{st.st_ino}"
            if file_id in handles:  # the same file under a second name (renamed while we listed): read once
                os.close(fd)
                continue
            handles[file_id] = fd
            prev = stored.get(file_id)
            head = head_digest(fd, head_length(prev))
            states.append(FileState(path, file_id, st.st_size, st.st_mtime, head))
        # 2. Plan (pure): where each file resumes; restarts are said.
        plans, gone = plan_reads(states, stored)
        # A file renamed while we listed (logrotate's rename + create, outside our lock) may be in
        # neither listing's view under a name we opened: only what a second listing does not find
        # either is gone (else its offset would be forgotten and the file read again from 0).
        if gone:
            gone = [fid for fid in gone if fid not in _listed_ids(src.path)]
        store.forget_offsets(conn, src.name, gone)
        conn.commit()
        # 3. Read each file to its last complete line, committing records with their offset.
        for plan in plans:
            result.files += 1
            if plan.restart:
                result.messages.append(f"{plan.path}: {plan.restart}; read again from the start")
            try:
                _read_file(conn, pipe, plan, handles[plan.file_id], result, now=now, batch=batch, known=known)
            except OSError as exc:
                conn.rollback()
                result.errors += 1
                result.messages.append(f"{plan.path}: read failed ({exc.strerror or exc}); the rest of it is "
                                       "read next run")
    finally:
        for fd in handles.values():
            os.close(fd)
    return result


def _listed_ids(pattern: str) -> set[str]:
    """device:inode of every file the glob finds now."""
    out = set()
    for path in glob.glob(pattern):
        try:
            st = os.stat(path)
        except OSError:
            continue
        out.add(f"{st.st_dev}:{st.st_ino}")
    return out


def _is_regular(mode: int) -> bool:
    import stat

    return stat.S_ISREG(mode)


def head_digest(fd: int, length: int) -> str:
    """sha256 of the first ``length`` bytes of ``fd`` ('' for none): what ops.log_offsets records."""
    import hashlib

    return hashlib.sha256(os.pread(fd, length, 0)).hexdigest() if length else ""


def _read_file(conn: psycopg.Connection, pipe: Pipeline, plan: ReadPlan, fd: int, result: SourceResult, *,
               now: datetime, batch: int, known: set[tuple[str, date]]) -> None:
    src = pipe.source
    fh = os.fdopen(os.dup(fd), "rb")
    with fh:
        records: list[Record] = []
        bad: list[tuple[str, str, int, str, str]] = []
        committed = plan.start
        end = plan.start
        stats = [0, 0, 0]    # records, quarantined, bytes of the open transaction

        def flush() -> None:
            stats[0] += store.copy_records(conn, records, known)
            # The platform's audit-category records join the tamper-evident chain in the same
            # transaction as the records and their offset: each is chained exactly once.
            if audit := [audit_row(r) for r in records if r.category == "audit"]:
                append_many(conn, audit)
            store.quarantine(conn, bad, now)
            stats[1] += len(bad)
            records.clear()
            bad.clear()

        def commit() -> None:
            nonlocal committed
            flush()
            store.save_offset(conn, src.name, plan.file_id, plan.path, end, head_digest(fd, min(HEAD_BYTES, end)), now)
            conn.commit()
            result.records += stats[0]
            result.quarantined += stats[1]
            result.bytes += end - committed
            committed = end
            stats[0] = stats[1] = 0

        for raw in read_records(fh, plan.start, multiline_csv=src.format == "postgres-csvlog"):
            end = raw.end
            if raw.error:
                bad.append((src.name, plan.path, raw.offset, raw.text, raw.error))
            elif raw.text:
                try:
                    rec = pipe.record(raw.text)
                except ParseError as exc:
                    bad.append((src.name, plan.path, raw.offset, raw.text, str(exc)))
                else:
                    records.append(replace(rec, file_id=plan.file_id, file_offset=raw.offset))
            if len(records) + len(bad) >= batch:
                flush()
            if end - committed >= COMMIT_BYTES:
                commit()
        if end != committed or plan.start == 0 or plan.restart:
            commit()


def audit_row(rec: Record) -> tuple[datetime, str, str, str, dict]:
    """A platform audit record as an audit-chain entry: who (the user, else the source), what
    (its event), on what (the transaction, ticket or payment it names), and all its fields."""
    f = rec.fields
    actor = f"user:{f['userId']}" if f.get("userId") is not None else f"source:{rec.source}"
    subject = next((f"{k}:{f[k]}" for k in ("transactionId", "ticketId", "paymentId", "drawId") if f.get(k)), "")
    data = {"source": rec.source, "level": rec.level, "message": rec.message, "fields": f,
            "file_id": rec.file_id, "file_offset": rec.file_offset}
    return rec.at, actor, rec.event or "platform.audit", subject, data


def collect_configured(settings: Settings, names: Sequence[str] | None = None, *,
                       now: datetime | None = None) -> CollectResult:
    """Collect the configured sources (or those named) into the ops database (``ops_database_url``,
    or the embedded one, started for the call where stopped), its schema migrated first."""
    from datetime import UTC

    from bvh_ops.errors import ConfigError
    from bvh_ops.opsdb.database import ops_database
    from bvh_ops.opsdb.migrations import migrate
    from bvh_ops.pg.conn import connect

    if not settings.log_sources:
        raise ConfigError("no log sources: add [[log_sources]] tables (name, path, format) to bvh-ops.toml")
    by_name = {s.name: s for s in settings.log_sources}
    if names is not None and (unknown := [n for n in names if n not in by_name]):
        raise ConfigError(f"no log source named {unknown[0]!r} (configured: {', '.join(by_name)})")
    pipes = pipelines(settings, None if names is None else [by_name[n] for n in names])
    with ops_database(settings) as dsn:
        conn = connect(dsn, autocommit=True)
        try:
            migrate(conn)
            conn.autocommit = False
            return collect(conn, pipes, now=now or datetime.now(UTC), batch=settings.log_batch_records)
        finally:
            conn.close()
