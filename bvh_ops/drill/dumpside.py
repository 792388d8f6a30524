"""The restored side of the drill's PITR comparison, computed from the dump as the deep verify
decrypts it (issue #19, goal 3).

The comparison sums, per append-only table, a hash of every row committed at or before the
cutoff, on the restored copy and on the live source. The restored copy of a logical backup holds
the dump's COPY text, table by table — ``logical_fingerprints`` proves it (every table's row
count and digest of that text equal the backup's). So the restored side can be summed from the
dump's text itself as it passes through the deep verify (which decrypts and walks every byte of
it anyway), instead of scanning the restored tables once more after the restore: that scan was
the one piece of the checks that read data just read (docs/BENCHMARKS.md, seventeenth session).

How the text becomes the server's number: for a row, PostgreSQL's ``hashtextextended(t::text,
0)`` (the PITR "text" method, ``checks.drill_suite.PITR_TEXT``) hashes the row's record text,
which ``record_out`` builds from the very output-function text COPY writes (escaped): so each
COPY line is unescaped, quoted as record_out quotes, and hashed with PostgreSQL's
``hash_bytes_extended`` (``bvh_ops.logical._chunkwalk.rows``, in C). The live source computes
``hashtextextended(t::text, 0)`` in a session with pg_dump's settings (TimeZone UTC, DateStyle
ISO, extra_float_digits 3 …: ``checks.drill_suite.bounded_fingerprint``), so both sides hash the
same text. The commit column's text (a timestamptz in UTC, ``YYYY-MM-DD HH:MM:SS[.ffffff]+00``)
is compared with the cutoff's as text: for that form text order is time order.

Only where that holds for certain is a table summed here; any other is left to the checks after
the restore (which read it on the restored copy, as before): a table the dump holds no data
block for (a partitioned table's rows lie in its partitions), one with inheritance children (the
server's read counts their rows, its data block does not hold them), a commit column that is not
a timestamptz, a table with generated columns (in ``t::text``, not in COPY), a dump not in UTF-8
or taken before fingerprints 2 (pg_dump's TimeZone, bytea_output and lc_monetary not fixed), a
name not plainly schema-qualified, a row it cannot read (a value of another form — infinity, BC,
a year past 9999 — or anything unexpected). And only against a source whose text hashes as this
does (``matches_source``: UTF-8, glibc's ``isspace`` — record_out quotes by it — on a
little-endian CPU, as PostgreSQL's hash reads words in the CPU's byte order). Nothing summed here
counts unless the copy verified whole, and the checks use it only while ``logical_fingerprints``
passes (else they read the restored copy again)."""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime

try:
    from bvh_ops.logical._chunkwalk import rows as _rows
except ImportError:  # pragma: no cover - depends on the install (setup.py builds it where it can)
    _rows = None

_TIMESTAMPTZ = re.compile(r"^timestamp(?:\(\d\))? with time zone$")
# version() of a server whose row text hashes as ours: glibc (its isspace is false for every
# byte >= 0x80 in a UTF-8 locale, as this code takes it) on a little-endian CPU.
_MATCHING_PLATFORM = re.compile(r" on (x86_64|aarch64|i[3-6]86|powerpc64le|ppc64le|riscv64|loongarch64)[-\w]*-linux-gnu")
_PLAIN = re.compile(r"^[a-z_][a-z0-9_$]*$")
# A row longer than this read the plain way (split across buffers) is not held to be summed:
# the table is left to the checks after the restore (memory stays bounded).
MAX_ROW = 64 << 20
ACC = struct.Struct("<6q")


def available() -> bool:
    """Whether this install can sum rows from the dump (the C walker was built)."""
    return _rows is not None


def matches_source(encoding: str | None, platform: str | None) -> bool:
    """Whether a source with this server_encoding and version() hashes a row's text as the
    dump's sums do."""
    return encoding == "UTF8" and bool(platform and _MATCHING_PLATFORM.search(platform))


def cutoff_text(cutoff: datetime) -> bytes:
    """``cutoff`` as PostgreSQL writes a timestamptz with TimeZone UTC and DateStyle ISO: the
    fraction without its trailing zeros, none when zero."""
    u = cutoff.astimezone(UTC)
    text = f"{u.year:04d}-{u.month:02d}-{u.day:02d} {u.hour:02d}:{u.minute:02d}:{u.second:02d}"
    if u.microsecond:
        text += f".{u.microsecond:06d}".rstrip("0")
    return (text + "+00").encode()


def copy_columns(copy_stmt: str) -> list[str] | None:
    """The column names of pg_dump's ``COPY schema.table (a, "B c") FROM stdin;``, unquoted;
    None where the statement is not of that form."""
    head, sep, rest = copy_stmt.partition(" (")
    if not sep or not head.startswith("COPY ") or not rest.rstrip().endswith(") FROM stdin;"):
        return None
    body = rest.rstrip()[:-len(") FROM stdin;")]
    names, cur, quoted, i = [], [], False, 0
    while i < len(body):
        ch = body[i]
        if quoted:
            if ch == '"' and body[i + 1:i + 2] == '"':
                cur.append('"')
                i += 1
            elif ch == '"':
                quoted = False
            else:
                cur.append(ch)
        elif ch == '"':
            quoted = True
        elif ch == ",":
            names.append("".join(cur))
            cur = []
            if body[i + 1:i + 2] == " ":
                i += 1
        else:
            cur.append(ch)
        i += 1
    if quoted:
        return None
    names.append("".join(cur))
    return names if all(names) else None


@dataclass
class RowSink:
    """One table's sums as its data block passes: ``chunks`` for the one-row chunks the C walk
    took, ``piece`` for text read the plain way (any boundaries), ``finish`` at the block's end."""

    ncols: int
    col: int
    cutoff: bytes
    acc: bytearray = field(default_factory=lambda: bytearray(ACC.size))
    _pending: bytearray = field(default_factory=bytearray)
    _ended: bool = False  # COPY's end marker seen: what follows is not rows
    spoiled: str | None = None

    def chunks(self, buf, start: int, end: int) -> None:
        if self.spoiled is None and not self._ended:
            if self._pending:  # a row begun the plain way cannot continue in a whole chunk
                self.spoiled = "a row split unexpectedly"
                return
            _rows(buf, start, end, True, self.ncols, self.col, self.cutoff, self.acc)

    def piece(self, data) -> None:
        if self.spoiled is not None or self._ended:
            return
        before = len(self._pending)
        self._pending += data
        found = bytes(data).rfind(b"\n")  # in the new bytes only: a long row is not searched again and again
        last = before + found if found >= 0 else -1
        if last < 0:
            if len(self._pending) > MAX_ROW:
                self.spoiled, self._pending = "a row too long to hold", bytearray()
            return
        lines = bytes(self._pending[:last + 1])
        del self._pending[:last + 1]
        marker = lines.find(b"\\.\n")
        if marker >= 0 and (marker == 0 or lines[marker - 1] == 10):
            lines, self._ended = lines[:marker], True
            self._pending.clear()
        if lines:
            _rows(lines, 0, len(lines), False, self.ncols, self.col, self.cutoff, self.acc)

    def finish(self) -> None:
        if self._pending and self.spoiled is None:
            self.spoiled = "the data block ended inside a row"
        self._pending = bytearray()

    def result(self) -> tuple[int, str] | None:
        """(rows at or before the cutoff, sum of their hashes as text), as
        ``checks.drill_suite.bounded_fingerprint`` gives it with the text method; None: not
        summed for certain."""
        le, lo, hi, _total, bad, _ = ACC.unpack(self.acc)
        if self.spoiled is not None or bad:
            return None
        total = (hi << 64) + (lo & ((1 << 64) - 1))
        return le, str(total)


class DumpPitr:
    """The plan: ``append_only`` entries (``schema.table:column``), the cutoff and the backup's
    recorded schema; ``sink_for(entry)`` hands the dump walk (``DumpFingerprinter``, ``rows``)
    a RowSink for a data block of one of those tables, and ``results()`` the sums once the copy
    verified (``verified()``)."""

    def __init__(self, append_only: list[str], cutoff: datetime, schema: dict | None) -> None:
        self.cutoff = cutoff
        self._cut = cutoff_text(cutoff)
        self._columns = (schema or {}).get("tables", {})
        self._items: dict[tuple[str, str], tuple[str, str]] = {}  # (schema, table) -> (item, column)
        self._unplain: list[str] = []  # quoted, unqualified or mixed-case names: left to the server
        for item in append_only:
            table, _, column = item.partition(":")
            schema_name, dot, name = table.partition(".")
            if dot and _PLAIN.match(schema_name) and _PLAIN.match(name):
                self._items[(schema_name, name)] = (item, column)
            else:
                self._unplain.append(item)
        self.reset()

    def reset(self) -> None:
        """A fresh walk (the verify's task retried): nothing summed yet."""
        self._sinks: dict[str, RowSink] = {}
        self._seen: set[str] = set()
        self._verified = False
        # item -> why it is left to the checks after the restore
        self.skipped: dict[str, str] = {item: "not a plain schema.table name" for item in self._unplain}

    def sink_for(self, entry, entries: dict, encoding: str | None) -> RowSink | None:
        """``entry``: a TABLE DATA TocEntry; ``entries``: the dump's TOC (dumpId -> TocEntry)."""
        namespace, tag, copy_stmt = entry.namespace, entry.tag, entry.copy_stmt
        found = self._items.get((namespace, tag))
        if found is None or not available():
            return None
        item, column = found
        if any(e.desc in ("TABLE", "FOREIGN TABLE") and "\nINHERITS (" in e.defn and tag in e.defn.partition("\nINHERITS (")[2]
               for e in entries.values()):
            self._seen.add(item)
            self.skipped[item] = "it has inheritance children (their rows are not in its data block)"
            return None
        if item in self._seen:  # two data blocks for one table: not a plain table's dump
            self._sinks.pop(item, None)
            self.skipped[item] = "more than one data block"
            return None
        self._seen.add(item)
        why = self._unsupported(namespace, tag, column, copy_stmt, encoding)
        if why:
            self.skipped[item] = why
            return None
        cols = copy_columns(copy_stmt)
        sink = RowSink(len(cols), cols.index(column), self._cut)
        self._sinks[item] = sink
        return sink

    def _unsupported(self, namespace: str, tag: str, column: str, copy_stmt: str, encoding: str | None) -> str | None:
        if (encoding or "").upper() not in ("UTF8", "UTF-8"):
            return f"the dump is in {encoding or 'an unknown encoding'}, not UTF-8"
        cols = copy_columns(copy_stmt)
        if cols is None:
            return "its COPY statement is not of the usual form"
        recorded = self._columns.get(f"{namespace}.{tag}")
        if not recorded:
            return "the backup recorded no columns for it"
        if [c[0] for c in recorded] != cols:
            return "its columns are not all in the dump (generated columns?)"
        if column not in cols:
            return f"no column {column}"
        typ = next(c[1] for c in recorded if c[0] == column)
        if not _TIMESTAMPTZ.match(typ):
            return f"{column} is {typ}, not a timestamptz"
        return None

    def candidates(self) -> set[str]:
        """The entries the walk may sum, judged before it from the backup's recorded schema
        alone (a plain name, the column recorded, a timestamptz): only these need the live
        source hashed by the text method; the rest keep the cheaper usual one. A superset of
        what ends up summed (inheritance, a second data block, generated columns and odd rows
        are seen only in the dump)."""
        out = set()
        for (namespace, tag), (item, column) in self._items.items():
            recorded = self._columns.get(f"{namespace}.{tag}") or []
            typ = next((c[1] for c in recorded if c[0] == column), None)
            if typ is not None and _TIMESTAMPTZ.match(typ):
                out.add(item)
        return out

    def verified(self) -> None:
        """The copy the sums were read from verified whole (its digest equals the manifest's)."""
        self._verified = True

    def results(self) -> dict[str, tuple[int, str]]:
        """append_only entry -> (rows, hash sum) of the dump's rows at or before the cutoff, for
        each table summed for certain; {} before the copy verified."""
        if not self._verified:
            return {}
        out = {}
        for item, _column in self._items.values():
            if item not in self._seen:
                self.skipped.setdefault(item, "no data block of its own in the dump (a partitioned table?)")
        for item, sink in self._sinks.items():
            value = sink.result()
            if value is None:
                self.skipped.setdefault(item, sink.spoiled or "a row of another form (infinity, BC …)")
            else:
                out[item] = value
        return out
