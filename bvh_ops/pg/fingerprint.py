"""Per-table row counts and fingerprints.

Version 4 (backups since fingerprints 4, see docs/FORMAT.md): "<rows>:<blake3>:blake3", the
BLAKE3 digest of the table's COPY text as pg_dump wrote it into the dump with ROW_MARK (five zero
bytes) before each row (bvh_ops.logical.archive computes it as the dump streams past, so the
server reads each table once); ``copy_fingerprints`` computes the same over a restored copy with
``COPY ... TO STDOUT`` under pg_dump's session settings. Version 3: "<rows>:<sha256>:framed", the
same text hashed with sha256; version 2: "<rows>:<sha256>:copy", sha256 without the marks (older
backups, still checked so). Large objects: "<count>:<sum>:lo". Version 1
(older backups, still checked the old way):

fingerprint(T) = "<rows>:<sum of 64-bit row hashes>:rec" where a row's hash is
hash_record_extended(row, 0) (PostgreSQL 14+: the types' own hash functions, about twice as fast
as hashing the row's text), or "<rows>:<sum>" with hashtextextended(row::text, 0) for tables with
a column type that has no hash function (and servers before 14). Summing (not XOR-ing) the row
hashes makes the result independent of row order yet sensitive to duplicate rows (two equal rows
add twice). Row text depends on session settings, which ``conn.SESSION_SETTINGS`` fixes. A
restored copy is fingerprinted with the method its backup recorded. Nothing but two numbers per
table leaves the server.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import psycopg
from psycopg import sql

from bvh_ops.pg.conn import translate
from bvh_ops.repository.manifest import TableStat

LARGE_OBJECTS = "pg_largeobject"

LIST_TABLES = """
SELECT format('%I.%I', n.nspname, c.relname) AS name, n.nspname, c.relname, c.relkind,
  -- Record hashing is safe only over plain base types: enums hash their OID, which differs
  -- after a restore (so do composites and ranges over them).
  NOT EXISTS (
    SELECT 1 FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
    LEFT JOIN pg_type bt ON bt.oid = t.typbasetype
    LEFT JOIN pg_type et ON et.oid = coalesce(nullif(t.typelem, 0), nullif(bt.typelem, 0))
    WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
      AND (t.typtype NOT IN ('b', 'd') OR coalesce(bt.typtype, 'b') <> 'b' OR coalesce(et.typtype, 'b') <> 'b')
  ) AS record_safe
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p')  -- not materialized views: a restore refreshes them from restored data
  AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1
"""

_KINDS = {"r": "table", "p": "partitioned"}


@dataclass(frozen=True)
class TableRef:
    name: str
    schema: str
    relname: str
    kind: str
    record_safe: bool = False


def list_tables(conn: psycopg.Connection) -> list[TableRef]:
    rows = conn.execute(LIST_TABLES).fetchall()
    return [TableRef(name, nsp, rel, _KINDS[kind], bool(safe)) for name, nsp, rel, kind, safe in rows]


# pg_partition_tree() lists nothing for a plain table (PostgreSQL 18), so only a partitioned
# table is summed over its tree; a plain table is its own heap + TOAST + indexes.
TABLE_BYTES = """
SELECT format('%%I.%%I', n.nspname, c.relname),
  CASE WHEN c.relkind = 'p'
       THEN (SELECT coalesce(sum(pg_total_relation_size(p.relid)), 0) FROM pg_partition_tree(c.oid) p)
       ELSE pg_total_relation_size(c.oid) END::bigint
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE format('%%I.%%I', n.nspname, c.relname) = ANY(%s)
"""


def table_bytes(conn: psycopg.Connection, tables: list[TableRef]) -> dict[str, int]:
    """Bytes on disk per table (a partitioned table: all its partitions), for the tables
    artifact and the parallel restore's job weighting."""
    sizes = dict(conn.execute(TABLE_BYTES, ([t.name for t in tables],)).fetchall())
    return {t.name: int(sizes.get(t.name, 0)) for t in tables}


RECORD = "rec"
TEXT = "text"
COPY = "copy"
FRAMED = "framed"  # fingerprints 3: the COPY text with ROW_MARK before each row (sha256)
BLAKE3 = "blake3"  # fingerprints 4: framed as 3, hashed with BLAKE3
COPY_METHODS = (COPY, FRAMED, BLAKE3)
FRAMED_METHODS = (FRAMED, BLAKE3)
LO = "lo"
_EXPR = {RECORD: "hash_record_extended(t, 0)", TEXT: "hashtextextended(t::text, 0)"}


def method_of(fingerprint: str) -> str:
    for method in (RECORD, *COPY_METHODS, LO):
        if fingerprint.endswith(f":{method}"):
            return method
    return TEXT


# The settings under which pg_dump's COPY text is reproducible: pg_dump itself sets DateStyle ISO,
# IntervalStyle postgres, extra_float_digits 3 and synchronize_seqscans off (pg_dump.c,
# setup_connection, in 15 and 18 alike); TimeZone, bytea_output and lc_monetary it leaves to the
# server's defaults, so the backup passes them to pg_dump too. synchronize_seqscans off: a scan
# starts at the table's first page, so a restored table reads back in the order it was loaded.
# search_path empty: pg_dump empties it (ALWAYS_SECURE_SEARCH_PATH_SQL), so a regclass, regtype,
# regproc ... value naming an object outside pg_catalog is written schema-qualified. The timeouts
# off, as pg_dump sets them: a role's statement_timeout must not cut a large table's read short.
COPY_SETTINGS = {"TimeZone": "UTC", "DateStyle": "ISO", "IntervalStyle": "postgres", "extra_float_digits": "3",
                 "bytea_output": "hex", "lc_monetary": "C", "synchronize_seqscans": "off", "row_security": "off",
                 "search_path": "", "statement_timeout": "0", "lock_timeout": "0",
                 "idle_in_transaction_session_timeout": "0"}
DUMP_OPTIONS = " ".join(f"-c {k}={v}" for k, v in COPY_SETTINGS.items() if k in ("TimeZone", "bytea_output", "lc_monetary"))

# The tables whose data pg_dump writes, per listed table: a plain table itself, a partitioned
# table its leaf partitions that are plain tables (foreign partitions hold no dumped data).
LEAVES = """
SELECT format('%%I.%%I', n.nspname, c.relname), ln.nspname, l.relname, format('%%I.%%I', ln.nspname, l.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN LATERAL pg_partition_tree(c.oid) p ON p.isleaf
JOIN pg_class l ON l.oid = p.relid AND l.relkind = 'r'
JOIN pg_namespace ln ON ln.oid = l.relnamespace
WHERE c.relkind = 'p' AND format('%%I.%%I', n.nspname, c.relname) = ANY(%s)
"""


def data_leaves(conn: psycopg.Connection, tables: list[TableRef]) -> dict[str, list[tuple[str, str, str]]]:
    """Listed table -> [(schema, relname, format('%I.%I'))] of the tables holding its rows."""
    out: dict[str, list[tuple[str, str, str]]] = {t.name: [] for t in tables}
    for t in tables:
        if t.kind == "table":
            out[t.name].append((t.schema, t.relname, t.name))
    parted = [t.name for t in tables if t.kind == "partitioned"]
    if parted:
        for name, nsp, rel, leaf in conn.execute(LEAVES, (parted,)).fetchall():
            out[name].append((nsp, rel, leaf))
    return out


# Every partition below each listed partitioned table (sub-partitions too; foreign ones hold no
# dumped data and are left out): its parent and the plain-table leaves holding its rows (none for
# a partitioned partition without any). The backup records each one's fingerprint, so a partition
# restored on its own (restore --table) is compared like a table.
PARTITIONS = """
SELECT format('%%I.%%I', pn.nspname, p.relname), pn.nspname, p.relname, p.relkind,
       format('%%I.%%I', an.nspname, a.relname), ln.nspname, l.relname,
       CASE WHEN l.oid IS NOT NULL THEN format('%%I.%%I', ln.nspname, l.relname) END  -- none: no plain leaf
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN LATERAL pg_partition_tree(c.oid) t ON t.relid <> c.oid
JOIN pg_class p ON p.oid = t.relid AND p.relkind IN ('r', 'p') JOIN pg_namespace pn ON pn.oid = p.relnamespace
JOIN pg_class a ON a.oid = t.parentrelid JOIN pg_namespace an ON an.oid = a.relnamespace
LEFT JOIN LATERAL (SELECT lt.relid FROM pg_partition_tree(p.oid) lt WHERE lt.isleaf) lv ON true
LEFT JOIN pg_class l ON l.oid = lv.relid AND l.relkind = 'r' LEFT JOIN pg_namespace ln ON ln.oid = l.relnamespace
WHERE c.relkind = 'p' AND format('%%I.%%I', n.nspname, c.relname) = ANY(%s)
ORDER BY 1, 8
"""


@dataclass(frozen=True)
class Partition:
    ref: TableRef                          # the partition (kind "table" or "partitioned")
    parent: str                            # format('%I.%I') of its parent
    leaves: tuple[tuple[str, str, str], ...]  # (schema, relname, format('%I.%I')) holding its rows


def partitions(conn: psycopg.Connection, tables: list[TableRef]) -> list[Partition]:
    """Every partition of the listed partitioned tables, at any depth."""
    parted = [t.name for t in tables if t.kind == "partitioned"]
    if not parted:
        return []
    found: dict[str, tuple[TableRef, str, list]] = {}
    for name, nsp, rel, kind, parent, lnsp, lrel, leaf in conn.execute(PARTITIONS, (parted,)).fetchall():
        ref, _, leaves = found.setdefault(name, (TableRef(name, nsp, rel, _KINDS[kind]), parent, []))
        if lrel is not None:
            leaves.append((lnsp, lrel, leaf))
    return [Partition(ref, parent, tuple(leaves)) for ref, parent, leaves in found.values()]


def combine_leaves(leaves: Iterable[tuple[str, int, str]]) -> tuple[int, str]:
    """Rows and sha256 of a table from its leaves' (name, rows, sha256 hex), in any order: a
    plain table's own digest; a partitioned table's, sha256 over its leaves' lines by name."""
    leaves = sorted(leaves)
    lines = "".join(f"{name}\t{rows}\t{digest}\n" for name, rows, digest in leaves)
    return sum(r for _, r, _ in leaves), hashlib.sha256(lines.encode()).hexdigest()


# Fingerprints 3 hash the COPY text with these five bytes before each row: in pg_dump's archive
# each row is a chunk behind a 5-byte header, so the backup hashes the rows where they lie with
# the headers zeroed (no copy that leaves them out: 24-32 % less CPU than fingerprints 2), and a
# restored copy's text is framed the same way (frame_rows) as it is read back.
ROW_MARK = bytes(5)


def copy_hash(method: str):
    """A fresh hash object for a COPY method's digest: BLAKE3 for fingerprints 4 (4× less CPU
    than sha256 here, with the GIL released: docs/BENCHMARKS.md), sha256 for 2 and 3."""
    from bvh_ops.stream import plain_hash

    return plain_hash("blake3" if method == BLAKE3 else "sha256")


def frame_rows(text: bytes, row_start: bool) -> bytes:
    """``text`` (a piece of COPY text) with ROW_MARK before each row that begins in it;
    ``row_start``: whether its first byte begins a row (the previous piece ended in a newline)."""
    if not text:
        return text
    framed = text[:-1].replace(b"\n", b"\n" + ROW_MARK) + text[-1:]
    return ROW_MARK + framed if row_start else framed


class RowFramer:
    """Feeds COPY text, in pieces with any boundaries, to ``sha`` framed as ``frame_rows`` frames
    it, with one copy per piece instead of four: every newline followed by the next row's mark in
    one pass, the mark after a piece's last newline held back until a row follows (a restored
    table's text, read back by the drill: 2.1 → 0.65 s of Python CPU per 513 MB with BLAKE3)."""

    _NEWLINE_MARK = b"\n" + ROW_MARK

    def __init__(self, sha) -> None:
        self.sha, self.rows, self._row_start = sha, 0, True

    def update(self, text: bytes) -> None:
        if not text:
            return
        if self._row_start:
            self.sha.update(ROW_MARK)
        body = text.replace(b"\n", self._NEWLINE_MARK)
        self.rows += (len(body) - len(text)) // len(ROW_MARK)
        self._row_start = text[-1] == 10
        self.sha.update(memoryview(body)[:-len(ROW_MARK)] if self._row_start else body)


def copy_stat(table: TableRef, leaves: Iterable[tuple[str, int, str]], method: str = COPY) -> TableStat:
    leaves = list(leaves)
    if table.kind == "table":
        rows, digest = leaves[0][1:] if leaves else (0, copy_hash(method).hexdigest())
    else:
        rows, digest = combine_leaves(leaves)
    return TableStat(table.name, rows, f"{rows}:{digest}:{method}", table.kind)


COPY_COLUMNS = """
SELECT a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
ORDER BY a.attnum
"""


def copy_statement(conn: psycopg.Connection, schema: str, relname: str, *, into: str | None = None,
                   encoding: str | None = None) -> sql.Composed:
    """The COPY pg_dump runs for a table: its stored columns by name, in order (generated columns
    are not dumped). ``into``: a file on the server's host instead of STDOUT, written in
    ``encoding`` (as STDOUT is in the client encoding)."""
    cols = [r[0] for r in conn.execute(COPY_COLUMNS, (schema, relname)).fetchall()]
    to = sql.SQL("STDOUT") if into is None else sql.SQL("{} WITH (ENCODING {})").format(
        sql.Literal(into), sql.Literal(encoding))
    if not cols:  # no columns (or only generated ones): pg_dump writes no list, "()" is a syntax error
        return sql.SQL("COPY {} TO {}").format(sql.Identifier(schema, relname), to)
    return sql.SQL("COPY {} ({}) TO {}").format(
        sql.Identifier(schema, relname), sql.SQL(", ").join(map(sql.Identifier, cols)), to)


def _copy_digest(conn: psycopg.Connection, schema: str, relname: str, env: dict[str, str], bin_dir,
                 on_backend=None, *, method: str = COPY) -> tuple[int, str]:
    """(rows, digest) of one table's COPY text, hashed as ``method`` says, read by
    psql in large buffers (psycopg hands COPY data over row by row, too slow for a large table).
    ``on_backend(psql pid, backend pid, client port or 0)``: called before the COPY's data is read
    (psql prints its backend first)."""
    stmt = _client_text(copy_statement(conn, schema, relname).as_string(conn), env, conn)
    return _psql_digest(stmt, schema, relname, env, bin_dir, on_backend, method=method)


def _client_text(text: str, env: dict[str, str], conn: psycopg.Connection) -> bytes | str:
    """``text`` as psql must be handed it: in the client encoding it runs with (PGCLIENTENCODING,
    else the database's, as ``conn`` has it), not the UTF-8 of our arguments: "café" in a
    LATIN1 session is 'cafÃ©' else. As it is where Python has no codec for the encoding."""
    from psycopg._encodings import pg2pyenc

    name = env.get("PGCLIENTENCODING")
    try:
        return text.encode(pg2pyenc(name.encode()) if name else conn.info.encoding)
    except (psycopg.NotSupportedError, LookupError, UnicodeError):
        return text


def _psql_digest(stmt: bytes | str, schema: str, relname: str, env: dict[str, str], bin_dir, on_backend=None, *,
                 method: str = COPY) -> tuple[int, str]:
    """(rows, digest) of the COPY ``stmt``'s text, read by psql (see _copy_digest)."""
    from bvh_ops.errors import DatabaseError
    from bvh_ops.pg.tools import StderrTail, spawn_tool

    first = ["-A", "-t", "-c", "SELECT pg_backend_pid(), coalesce(inet_client_port(), 0)"] if on_backend else []
    proc = spawn_tool("psql", ["-X", "-q", "-v", "ON_ERROR_STOP=1", *first, "-c", stmt], env=env, bin_dir=bin_dir,
                      stdin=subprocess.DEVNULL)
    tail = StderrTail(proc.stderr)
    tail.start()
    if on_backend and (line := proc.stdout.readline()):
        backend, _, port = line.decode().strip().partition("|")
        on_backend(proc.pid, int(backend), int(port or 0))
    rows, digest = _hash_copy_text(iter(lambda: proc.stdout.read(1 << 20), b""), method)
    if proc.wait() != 0:
        raise DatabaseError(f"table {schema}.{relname}: COPY failed: {tail.text().strip()[-300:]}")
    return rows, digest


def _hash_copy_text(pieces: Iterable[bytes], method: str) -> tuple[int, str]:
    """(rows, digest) of COPY text arriving in ``pieces`` (any boundaries), hashed as ``method`` says."""
    sha, rows = copy_hash(method), 0
    framer = RowFramer(sha) if method in FRAMED_METHODS else None
    for chunk in pieces:
        if framer is not None:
            framer.update(chunk)
        else:
            sha.update(chunk)
            rows += chunk.count(b"\n")
    return rows + (framer.rows if framer is not None else 0), sha.hexdigest()


@dataclass(frozen=True)
class LocalServer:
    """A server on this host (the drill's scratch cluster), where a table's COPY text can go
    straight from its backend into a FIFO we read: ``COPY ... TO '<fifo>'``, no psql, no
    protocol — half the CPU of the same read through psql (the server's and ours together:
    docs/BENCHMARKS.md, goal 3). ``fifo_dir``: a directory the server can reach; ``uid``: the
    OS user the server runs as (the FIFO is handed to it), None: ours."""

    fifo_dir: str
    uid: int | None = None

    @classmethod
    def of_cluster(cls, root, data_dir) -> LocalServer | None:
        """The cluster in ``root`` (its data directory ``data_dir``), or None where a FIFO cannot
        be made there for it (a filesystem without FIFOs; a server run as another user, when we
        may not hand a file to that user): psql reads its tables then."""
        import os

        uid = os.stat(data_dir).st_uid
        if uid != os.geteuid() and os.geteuid() != 0:
            return None
        probe = os.path.join(str(root), f".bvh-copy-probe-{os.getpid()}")
        try:
            os.mkfifo(probe, 0o600)
            os.unlink(probe)
        except OSError:
            return None
        return cls(str(root), None if uid == os.geteuid() else uid)


def may_write_server_files(conn: psycopg.Connection) -> bool:
    """COPY ... TO a file needs a superuser or pg_write_server_files."""
    try:
        return bool(conn.execute("SELECT pg_has_role('pg_write_server_files', 'USAGE')").fetchone()[0])
    except psycopg.Error:
        return False


_fifo_seq = iter(range(1 << 62))


def fifo_path(server: LocalServer) -> str:
    """A fresh FIFO name in the server's reach (made by fifo_read)."""
    import os

    return os.path.join(server.fifo_dir, f".bvh-copy-{os.getpid()}-{next(_fifo_seq)}")


def fifo_digest(conn: psycopg.Connection, schema: str, relname: str, server: LocalServer, *,
                encoding: str, method: str = COPY) -> tuple[int, str]:
    """copy_digest's (rows, digest), the text written by the server's backend into a FIFO
    (``LocalServer``) in ``encoding``, as pg_dump's session writes it; ``conn``: copy_settings
    applied, and may write server files (may_write_server_files)."""
    path = fifo_path(server)
    try:
        stmt = copy_statement(conn, schema, relname, into=path, encoding=encoding)
    except psycopg.Error as exc:
        raise translate(exc, f"table {schema}.{relname}") from None
    return fifo_read(conn, stmt, path, server.uid, method=method, what=f"table {schema}.{relname}")


def fifo_read(conn: psycopg.Connection, stmt, path: str, uid: int | None, *, method: str,
              what: str) -> tuple[int, str]:
    """Make the FIFO ``path`` (handed to ``uid``), run ``stmt`` (a COPY into it) on ``conn`` and
    hash what arrives: (rows, digest). Our read end (and a write end we hold until the COPY has
    returned: the reader then sees the end of the text, not of a writer that has not opened the
    FIFO yet) is open before the server opens it, so its open never waits; if we stop reading,
    its writes fail (a closed pipe) and the COPY with them. The FIFO is removed either way."""
    import os
    import threading
    import time

    from bvh_ops.stream import widen_pipe

    os.mkfifo(path, 0o600)
    rfd = hold = -1
    done: list = []
    try:
        if uid is not None:
            os.chown(path, uid, -1)
        rfd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        hold = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        os.set_blocking(rfd, True)
        full = widen_pipe(rfd) >= 1 << 20

        def run(fd: int) -> None:
            try:
                conn.execute(stmt)
            except BaseException as exc:  # noqa: BLE001 - raised on the reading thread below
                done.append(exc)
            finally:
                os.close(fd)  # the server has closed its end: the reader meets the text's end

        copier = threading.Thread(target=run, args=(hold,), name="bvh-copy-to-fifo", daemon=True)
        copier.start()
        hold = -1  # the copier's to close

        def pieces() -> Iterable[bytes]:
            while chunk := os.read(rfd, 1 << 20):
                yield chunk
                if full and len(chunk) < 1 << 19:
                    time.sleep(0.002)  # let the wide pipe fill: a few large reads, not one per write

        try:
            rows, digest = _hash_copy_text(pieces(), method)
        finally:
            os.close(rfd)  # (a reader gone: the server's next write fails, and the COPY ends)
            rfd = -1
            copier.join()
    finally:
        for fd in (rfd, hold):
            if fd >= 0:
                os.close(fd)
        os.unlink(path)
    if done:
        exc = done[0]
        if isinstance(exc, psycopg.Error):
            raise translate(exc, what) from None
        raise exc
    return rows, digest


def copy_env(dsn: str, encoding: str | None) -> dict[str, str]:
    """psql's environment for COPY text as pg_dump wrote it (its session settings, its encoding)."""
    from bvh_ops.pg.tools import pg_env

    env = pg_env(dsn)
    # After the DSN's own options (a role, say), which the inline path's connection keeps too.
    ours = " ".join(f"-c {k}={v}" for k, v in COPY_SETTINGS.items())
    env["PGOPTIONS"] = f"{env['PGOPTIONS']} {ours}" if env.get("PGOPTIONS") else ours
    if encoding:
        env["PGCLIENTENCODING"] = encoding
    return env


def copy_digest(conn: psycopg.Connection, schema: str, relname: str, env: dict[str, str],
                bin_dir=None, on_backend=None, *, method: str = COPY) -> tuple[int, str]:
    """(rows, digest) of one plain table's COPY text (``env``: copy_env of the same database;
    ``on_backend``: see _copy_digest; ``method``: one of COPY_METHODS, as the backup recorded)."""
    return _copy_digest(conn, schema, relname, env, bin_dir, on_backend, method=method)


def copy_digest_apart(conn: psycopg.Connection, schema: str, relname: str, env: dict[str, str], bin_dir=None, *,
                      started=None, on_backend=None, method: str = COPY,
                      server: LocalServer | None = None, encoding: str | None = None) -> tuple[int, str]:
    """copy_digest's (rows, digest), read and hashed by a child process in a session of its own
    (bvh_ops.pg.copy_child), so that its priority can be lowered as a whole: ``started(pid)`` is
    called as soon as it runs (lower it there: priority.lower_group), ``on_backend`` as for
    copy_digest (psql's pid is the child's child, in the same session; None where the child
    connects itself). ``server`` (and the text's ``encoding``): a server of this host where the
    role may write files — the child has the backend write the text into a FIFO it reads
    (fifo_read), no psql."""
    import sys

    from bvh_ops.children import die_with_parent
    from bvh_ops.errors import DatabaseError
    from bvh_ops.pg.tools import StderrTail

    if server is not None:
        path = fifo_path(server)
        stmt = _client_text(copy_statement(conn, schema, relname, into=path, encoding=encoding).as_string(conn),
                            env, conn)
        how = ["--fifo", path, "" if server.uid is None else str(server.uid)]
    else:
        stmt = _client_text(copy_statement(conn, schema, relname).as_string(conn), env, conn)
        how = [str(bin_dir or "")]
    proc = subprocess.Popen([sys.executable, "-m", "bvh_ops.pg.copy_child", method, schema, relname, *how],
                            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True, preexec_fn=die_with_parent())
    tail = StderrTail(proc.stderr)
    tail.start()
    result = None
    try:
        if started is not None:
            started(proc.pid)
        try:
            proc.stdin.write(stmt if isinstance(stmt, bytes) else stmt.encode())
            proc.stdin.close()
        except BrokenPipeError:  # it ended before reading it: its stderr says why (below)
            pass
        for line in proc.stdout:
            kind, _, rest = line.decode().strip().partition(" ")
            if kind == "backend" and on_backend is not None:
                child, backend, port = (int(x) for x in rest.split())
                on_backend(child or None, backend, port)
            elif kind == "digest":
                rows, digest = rest.split()
                result = int(rows), digest
    finally:
        if proc.poll() is None and result is None:
            proc.kill()
        proc.wait()
        tail.join(timeout=10)
    if proc.returncode != 0 or result is None:
        raise DatabaseError(tail.text().strip()[-300:] or f"table {schema}.{relname}: its reader exited with "
                            f"status {proc.returncode}")
    return result


# A table this small on disk is read on the worker's own connection (psycopg's COPY, a row per
# message) instead of by a psql child: a child and its connection cost 50-200 ms of start-up
# at any size (13 tables of the sample: 7 under 4 MiB), and psql pays off only where its large
# buffers save more than that (drill checks: docs/BENCHMARKS.md).
INLINE_BELOW = 4 << 20

LEAF_BYTES = """
SELECT format('%%I.%%I', n.nspname, c.relname), pg_table_size(c.oid)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE format('%%I.%%I', n.nspname, c.relname) = ANY(%s)
"""


def text_encoding(conn: psycopg.Connection, encoding: str | None) -> str:
    """The encoding a table's COPY text is read back in: the dump's, else (none recorded) the
    database's own, which a psql that sends none gets."""
    if encoding:
        return encoding
    return conn.execute("SELECT pg_encoding_to_char(encoding) FROM pg_database "
                        "WHERE datname = current_database()").fetchone()[0]


def copy_settings(conn: psycopg.Connection, encoding: str | None) -> str:
    """Put ``conn``'s session where copy_env puts psql's: pg_dump's settings and its encoding (none
    recorded: the database's own, which a psql that sends none gets); returns that encoding.
    SQL_ASCII is set only around each COPY (copy_digest_inline): under it psycopg returns the
    catalog's names as bytes, and under any other the server checks the text it sends against
    that encoding (a SQL_ASCII database's bytes need not be valid in any)."""
    for name, value in COPY_SETTINGS.items():
        conn.execute("SELECT set_config(%s, %s, false)", (name, value))
    encoding = text_encoding(conn, encoding)
    if encoding != "SQL_ASCII":
        conn.execute("SELECT set_config('client_encoding', %s, false)", (encoding,))
    return encoding


def copy_digest_inline(conn: psycopg.Connection, schema: str, relname: str, *,
                       method: str = COPY, encoding: str | None = None) -> tuple[int, str]:
    """copy_digest's (rows, digest) read through ``conn`` (copy_settings applied) rather than
    a psql child: for small tables. The rows are gathered into 1 MiB pieces before hashing."""
    sha, rows, framed = copy_hash(method), 0, method in FRAMED_METHODS
    framer = RowFramer(sha)
    piece = bytearray()

    def flush() -> None:
        nonlocal rows
        if framed:
            framer.update(piece)
        else:
            sha.update(piece)
            rows += piece.count(b"\n")
        piece.clear()

    try:
        stmt = copy_statement(conn, schema, relname).as_bytes(conn)
        raw = encoding == "SQL_ASCII"  # the database's bytes as they are (see copy_settings)
        if raw:
            conn.execute("SET client_encoding = 'SQL_ASCII'")
        try:
            with conn.cursor() as cur, cur.copy(stmt) as copy:
                for data in copy:
                    piece += data
                    if len(piece) >= 1 << 20:
                        flush()
        finally:
            if raw and not conn.closed:
                conn.execute("SET client_encoding = 'UTF8'")
    except psycopg.Error as exc:
        raise translate(exc, f"table {schema}.{relname}") from None
    flush()
    return rows + framer.rows, sha.hexdigest()


def copy_fingerprints(conn: psycopg.Connection, dsn: str, tables: list[TableRef], *, encoding: str | None,
                      bin_dir=None, jobs: int = 2,
                      known: dict[tuple[str, str], tuple[int, str]] | None = None,
                      method: str = COPY, inline_below: int = INLINE_BELOW,
                      server: LocalServer | None = None) -> list[TableStat]:
    """COPY fingerprints (``method``: COPY, fingerprints 2, FRAMED, 3, or BLAKE3, 4) of ``tables``
    as the database behind ``conn``/``dsn`` holds them. ``known``: (schema, table) -> (rows, digest) of
    plain tables already read the same way (and proven unchanged since: ``unchanged_since``);
    those are not read again. ``jobs`` workers, each on one connection of its own, take the
    largest table first (the two finish together); a table under ``inline_below`` bytes is read
    on that connection, a larger one by psql — or, on a ``server`` of this host whose files we
    share and where the role may write them, by the backend into a FIFO (fifo_digest).
    ``conn``'s transaction (if any) is ended after the catalog queries: it would sit idle in it
    for the whole read."""
    import threading

    from bvh_ops.pg.conn import connect

    env = copy_env(dsn, encoding)
    known = known or {}
    leaves = data_leaves(conn, tables)
    work = [leaf for t in tables for leaf in leaves[t.name] if (leaf[0], leaf[1]) not in known]
    sizes = dict(conn.execute(LEAF_BYTES, ([leaf[2] for leaf in work],)).fetchall()) if work else {}
    if not conn.autocommit:  # not "idle in transaction" for the whole read (a server's timeout ends that)
        conn.rollback()
    work.sort(key=lambda leaf: -int(sizes.get(leaf[2]) or 0))
    local, opened = threading.local(), []

    def one(leaf: tuple[str, str, str]) -> tuple[str, int, str]:
        c = getattr(local, "conn", None)
        if c is None:
            c = local.conn = connect(dsn, autocommit=True)
            opened.append(c)
            local.encoding = copy_settings(c, encoding)
            local.fifo = server is not None and may_write_server_files(c)
        if int(sizes.get(leaf[2]) or 0) < inline_below:
            return leaf[2], *copy_digest_inline(c, leaf[0], leaf[1], method=method, encoding=local.encoding)
        if local.fifo:  # the connection is busy with the COPY throughout: not left idle
            return leaf[2], *fifo_digest(c, leaf[0], leaf[1], server, encoding=local.encoding, method=method)
        # psql reads a large table for as long as it takes: the worker's connection is not left
        # idle meanwhile (idle_session_timeout, a pooler or NAT would end it under the next
        # table); the worker's next table opens another.
        try:
            stmt = _client_text(copy_statement(c, leaf[0], leaf[1]).as_string(c), env, c)
        except psycopg.Error as exc:
            raise translate(exc, f"table {leaf[0]}.{leaf[1]}") from None
        finally:
            local.conn = None
            c.close()
        return leaf[2], *_psql_digest(stmt, leaf[0], leaf[1], env, bin_dir, method=method)

    try:
        with ThreadPoolExecutor(max(1, jobs)) as pool:
            done = dict((leaf[2], r) for leaf, r in zip(work, pool.map(one, work), strict=True))
    finally:
        for c in opened:
            c.close()
    done.update((leaf[2], (leaf[2], *known[(leaf[0], leaf[1])])) for t in tables for leaf in leaves[t.name]
                if (leaf[0], leaf[1]) in known)
    return [copy_stat(t, [done[leaf[2]] for leaf in leaves[t.name]], method) for t in tables]


# -- reading a table early, proving later that it has not changed since ----------------------
# A row that was not visible to a snapshot was written by a transaction still running when the
# snapshot was taken or begun after it: its xmin is at or after the snapshot's xmin (a
# subtransaction's xid too: it is newer than its parent's). So if, later, a table holds as many
# rows as were read after the mark, and none of them has an xmin at or after the mark's xmin
# other than the loader's (a transaction committed before the mark, seen in it), the table holds
# exactly the rows read. xmin is the raw xid (freezing keeps it, PostgreSQL 9.4+); age() compares
# xids modulo 2**32 against the current one, as PostgreSQL does.
MARK = """
SELECT mod(pg_snapshot_xmin(pg_current_snapshot())::text::bigint, 4294967296)::text,
       (SELECT xmin FROM ONLY {tbl} LIMIT 1)::text
"""
CHANGED = """
SELECT count(*), count(*) FILTER (WHERE (%(loader)s::xid IS NULL OR xmin <> %(loader)s::xid)
                                   AND age(xmin) <= age(%(xmin)s::xid))
FROM ONLY {tbl}
"""


@dataclass(frozen=True)
class Mark:
    """Where a table stood before it was read: the snapshot's xmin and one visible row's xmin."""

    xmin: str
    loader: str | None


def mark(conn: psycopg.Connection, schema: str, relname: str) -> Mark:
    """Take before reading the table (in its own statement, so its snapshot is the older)."""
    xmin, loader = conn.execute(sql.SQL(MARK).format(tbl=sql.Identifier(schema, relname))).fetchone()
    return Mark(xmin, loader)


def unchanged_since(conn: psycopg.Connection, schema: str, relname: str, since: Mark, rows: int) -> bool:
    """True when the table holds exactly the ``rows`` rows that reads taken after ``since`` saw."""
    count, newer = conn.execute(sql.SQL(CHANGED).format(tbl=sql.Identifier(schema, relname)),
                                {"loader": since.loader, "xmin": since.xmin}).fetchone()
    return count == rows and newer == 0


def large_object_digest(conn: psycopg.Connection) -> TableStat:
    """Version-2 large objects: count and sum (mod 2**64) of the first 8 bytes of
    sha256("<oid>:" + data), read 1 MiB at a time."""
    count, total = 0, 0
    try:
        oids = [r[0] for r in conn.execute("SELECT oid FROM pg_largeobject_metadata ORDER BY oid").fetchall()]
        for oid in oids:
            sha, off = hashlib.sha256(b"%d:" % oid), 0
            while True:
                piece = conn.execute("SELECT lo_get(%s, %s, %s)", (oid, off, 1 << 20)).fetchone()[0]
                sha.update(piece)
                off += len(piece)
                if len(piece) < 1 << 20:
                    break
            count += 1
            total = (total + int.from_bytes(sha.digest()[:8], "big")) % (1 << 64)
    except psycopg.Error as exc:
        raise translate(exc, "large objects") from None
    return TableStat(LARGE_OBJECTS, count, f"{count}:{total}:{LO}", "large_objects")


def table_fingerprint(conn: psycopg.Connection, table: TableRef, method: str | None = None) -> TableStat:
    """Fingerprint one table; ``method`` None = record hash where the server and types allow."""
    ident = sql.Identifier(table.schema, table.relname)
    # ONLY: a plain table's own rows (inheritance children are tables of their own);
    # a partitioned table is read whole (its partitions are not listed separately).
    only = sql.SQL("") if table.kind == "partitioned" else sql.SQL("ONLY ")
    if method:
        methods = [method]
    elif table.record_safe and conn.info.server_version >= 140000:
        methods = [RECORD, TEXT]
    else:
        methods = [TEXT]
    for i, m in enumerate(methods):
        query = sql.SQL("SELECT count(*), coalesce(sum({expr}), 0)::text FROM {only}{ident} AS t").format(
            expr=sql.SQL(_EXPR[m]), only=only, ident=ident)
        try:
            with conn.transaction():  # a savepoint: a type without a hash function must not abort the snapshot
                rows, total = conn.execute(query).fetchone()
            suffix = ":rec" if m == RECORD else ""
            return TableStat(table.name, int(rows), f"{rows}:{total}{suffix}", table.kind)
        except psycopg.errors.UndefinedFunction:
            if i == len(methods) - 1:
                raise translate_missing(table) from None
        except psycopg.Error as exc:
            raise translate(exc, f"table {table.name}") from None
    raise AssertionError("unreachable")


def tables_with_column(conn: psycopg.Connection, column: str) -> set[str]:
    """format('%I.%I') of every user table with a live column named ``column``."""
    return {r[0] for r in conn.execute(
        "SELECT format('%%I.%%I', n.nspname, c.relname) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE a.attname = %s AND a.attnum > 0 AND NOT a.attisdropped "
        "AND c.relkind IN ('r', 'p', 'm', 'f')", (column,))}


def translate_missing(table: TableRef) -> Exception:
    from bvh_ops.errors import DatabaseError

    return DatabaseError(f"table {table.name}: no hash function for one of its column types")


def large_object_fingerprint(conn: psycopg.Connection) -> TableStat:
    query = (
        "SELECT count(*), coalesce(sum(hashtextextended(m.oid::text || ':' || md5(lo_get(m.oid)), 0)), 0)::text "
        "FROM pg_largeobject_metadata m"
    )
    try:
        rows, total = conn.execute(query).fetchone()
    except psycopg.Error as exc:
        raise translate(exc, "large objects") from None
    return TableStat(LARGE_OBJECTS, int(rows), f"{rows}:{total}", "large_objects")


def fingerprint_database(conn: psycopg.Connection, tables: list[TableRef] | None = None,
                         methods: dict[str, str] | None = None) -> list[TableStat]:
    """Fingerprints of every user table (and large objects) as the connection's snapshot sees
    them; ``methods`` (table -> method) reproduces the methods a backup recorded."""
    tables = list_tables(conn) if tables is None else tables
    methods = methods or {}
    stats = [table_fingerprint(conn, t, methods.get(t.name)) for t in tables]
    stats.append(large_object_fingerprint(conn))
    return stats
