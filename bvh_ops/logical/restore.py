"""Logical restore: decrypt and stream a dump into ``pg_restore`` (never a local copy), then
compare every restored table's fingerprint with the one the backup recorded."""

from __future__ import annotations

import logging
import os
import queue
import re
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

from bvh_ops import progress
from bvh_ops.config import Settings
from bvh_ops.errors import BvhOpsError, ConfigError, IntegrityError, NotFound
from bvh_ops.keys import load_identities
from bvh_ops.logical.archive import (
    SECTION_POST_DATA,
    DumpFingerprinter,
    NeedMore,
    codec_of,
    read_toc,
    set_data_offsets,
)
from bvh_ops.logical.backup import DUMP_OBJECT
from bvh_ops.logical.toc import (
    INDEX_TABLE,
    balance,
    described,
    left_out,
    parse_entry,
    partition_tree,
    selective_lists,
    split_name,
    unset_sequences,
    with_partitions,
)
from bvh_ops.pg.conn import connect
from bvh_ops.pg.fingerprint import (
    COPY_METHODS,
    LARGE_OBJECTS,
    LO,
    copy_fingerprints,
    large_object_digest,
    large_object_fingerprint,
    list_tables,
    method_of,
    table_fingerprint,
    tables_with_column,
)
from bvh_ops.pg.ident import qualified
from bvh_ops.pg.tools import EMBEDDED_MAJOR, StderrTail, pg_env, raise_for_tool, restore_bin_dir, spawn_tool
from bvh_ops.repository.manifest import Manifest, TableStat
from bvh_ops.repository.open import open_repository
from bvh_ops.repository.repo import object_key
from bvh_ops.repository.verify import preflight
from bvh_ops.stream import DecryptingReader, envelopes_from_json, plain_hash

CHUNK = 1 << 20
log = logging.getLogger("bvh_ops.logical.restore")


@dataclass(frozen=True)
class TableComparison:
    name: str
    expected_rows: int
    actual_rows: int | None
    expected: str
    actual: str | None
    not_verified: str | None = None   # why this table's copy cannot be proven from this backup

    @property
    def ok(self) -> bool:
        return self.not_verified is None and self.expected == self.actual

    @property
    def differs(self) -> bool:
        """Compared, and not equal (a table that could not be compared is not_verified instead)."""
        return self.not_verified is None and self.expected != self.actual


@dataclass(frozen=True)
class RestoreResult:
    backup_id: str
    target: str
    seconds: float
    bytes_in: int
    comparisons: list[TableComparison]
    # --table: what hangs off the restored tables and was not restored (triggers, row security,
    # policies, rules, statistics, comments, grants), named; and the sequences they draw from but
    # do not own that were moved forward to the backup's value.
    left_out: tuple[str, ...] = ()
    sequences_advanced: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.comparisons)

    def to_json(self) -> dict[str, object]:
        return {
            "backup_id": self.backup_id, "target": self.target, "seconds": round(self.seconds, 3),
            "bytes_in": self.bytes_in, "ok": self.ok,
            "tables": {c.name: {"expected": c.expected, "actual": c.actual, "ok": c.ok,
                                **({"not_verified": c.not_verified} if c.not_verified else {})}
                       for c in self.comparisons},
            **({"left_out": list(self.left_out)} if self.left_out else {}),
            **({"sequences_advanced": list(self.sequences_advanced)} if self.sequences_advanced else {}),
        }


def _decrypted(settings: Settings, repo, backup_id: str, identities) -> DecryptingReader:
    # The signed manifest names where the dump is stored and holds its data-key envelopes
    # (format 3); re-read for every reader so a key rotation in between is seen whole.
    entry = next(o for o in repo.trusted_manifest(backup_id).objects if o.name == DUMP_OBJECT)
    key = object_key(backup_id, entry)
    body = repo.store.open_reader(key)
    return DecryptingReader(body, identities, bind=key, envelopes=envelopes_from_json(entry.envelopes))


def _feed(reader, proc: subprocess.Popen, expected: tuple[str, str] | None, size: int | None = None) -> int:
    """Stream ``reader`` into pg_restore's stdin, checked against ``expected`` (the entry's
    plaintext_digest) where given; with ``size`` (the dump's plaintext size), report progress
    as "restore". A reader that verifies nothing hashes nothing."""
    sha = plain_hash(expected[0]) if expected else None
    total = 0
    try:
        while chunk := reader.read(CHUNK):
            if sha is not None:
                sha.update(chunk)
            total += len(chunk)
            proc.stdin.write(chunk)
            if size:
                progress.report("restore", total, size)
    except BrokenPipeError:
        # pg_restore stopped reading (done with its list, or failed; its exit code tells
        # which). When this reader verifies the object, read the rest so all of it is
        # authenticated and hashed; otherwise stop here.
        if sha is not None:
            while chunk := reader.read(CHUNK):
                sha.update(chunk)
                total += len(chunk)
    except BvhOpsError:
        proc.kill()
        raise
    finally:
        try:
            proc.stdin.close()
        except BrokenPipeError:
            pass
    if sha is not None and sha.hexdigest() != expected[1]:
        raise IntegrityError(f"restored dump's {expected[0]} differs from the manifest (tampered backup?)")
    return total


def toc_codec(manifest: Manifest) -> str:
    """The codec ``pg_restore -l`` lines are read (and list files written) in: the dump's own
    encoding, in which its TOC names its objects (a LATIN1 dump's "café" is b"caf\\xe9"); with
    surrogateescape, bytes that are not text in it (SQL_ASCII) pass through unchanged."""
    return codec_of(manifest.extra.get("dump_encoding"))


def _toc(settings, repo, backup_id, identities, section: str | None = None, codec: str = "utf-8") -> list[str]:
    """The archive's table of contents (``pg_restore -l``), optionally one section only."""
    reader = _decrypted(settings, repo, backup_id, identities)
    args = ["-l"] + ([f"--section={section}"] if section else [])
    proc = spawn_tool("pg_restore", args, env=pg_env("postgresql://"), bin_dir=settings.pg_bin_dir,
                      stdin=subprocess.PIPE)
    err = StderrTail(proc.stderr)
    err.start()
    out: list[bytes] = []
    t = threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True)
    t.start()
    _feed(reader, proc, None)
    rc = proc.wait()
    t.join()
    if rc != 0:
        raise_for_tool("pg_restore -l", rc, err.text())
    return b"".join(out).decode(codec, "surrogateescape").splitlines()


def _write_list(lines: list[str], paths: list[str], codec: str = "utf-8") -> str:
    """A ``pg_restore -L`` list file of TOC ``lines`` (as _toc read them: the same bytes back)."""
    fd, path = tempfile.mkstemp(prefix=f"bvh-toc-{os.getpid()}-", suffix=".list")
    paths.append(path)
    with os.fdopen(fd, "w", encoding=codec, errors="surrogateescape") as fh:
        fh.write("\n".join(lines) + "\n")
    return path


def _run_parallel(lists: list[str], *, settings, repo, backup_id, identities, env, bin_dir, base_args,
                  verify_digest: tuple[str, str] | None = None, size: int | None = None) -> int:
    """One pg_restore per list file, each fed by its own decrypting reader of the object (so
    they progress independently with bounded memory); the first list's reader verifies the
    plaintext digest (``verify_digest``); the others hash nothing. Returns the bytes that reader fed; raises the first failure."""
    procs, errors, fed = [], [], [0]
    threads = []
    for i, path in enumerate(lists):
        proc = spawn_tool("pg_restore", [*base_args, "-L", path], env=env, bin_dir=bin_dir,
                          stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        tail = StderrTail(proc.stderr)
        tail.start()
        procs.append((proc, tail))

        def feed(proc=proc, first=(i == 0)) -> None:
            try:
                n = _feed(_decrypted(settings, repo, backup_id, identities), proc, verify_digest if first else None,
                          size if first else None)
                if first:
                    fed[0] = n
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                errors.append(exc)

        t = threading.Thread(target=feed, daemon=True)
        t.start()
        threads.append(t)
    for t in threads:
        t.join()
    failed = None
    for proc, tail in procs:
        rc = proc.wait()
        if rc != 0 and failed is None:
            failed = (rc, tail.text())
    if errors:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.kill()
        raise errors[0]
    if failed is not None:
        raise_for_tool("pg_restore", *failed)
    return fed[0]


# A local copy is made only where the disk keeps room for it and for the restored data (about
# twice the dump: tables plus their indexes) after it.
COPY_ROOM = 3


def _room_for_copy(directory: Path, size: int) -> bool:
    try:
        return shutil.disk_usage(directory).free >= COPY_ROOM * size
    except OSError:
        return False


def copy_path(directory: Path, backup_id: str) -> Path:
    """Where a drill's decrypted copy of backup ``backup_id``'s dump lies in its scratch directory."""
    return Path(directory) / f"bvh-restore-{backup_id}.pgcustom"


# The copy's pages are handed to the disk as it is written (asynchronously, every 32 MiB), so
# that the drill's restore does not share the disk with the kernel flushing a whole dump it
# left dirty in memory (bare pg_restore of a just-written 1 GB dump: 3 % slower than of the same
# file flushed, docs/BENCHMARKS.md).
WRITEBACK_EVERY = 32 << 20


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing ``length`` bytes of ``fd`` from ``offset`` to disk, without waiting
    (sync_file_range SYNC_FILE_RANGE_WRITE; Linux only, nothing elsewhere)."""
    global _sync_file_range
    if _sync_file_range is None:
        import ctypes

        try:
            fn = ctypes.CDLL(None, use_errno=True).sync_file_range  # this process's libc
            fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
            _sync_file_range = fn
        except (OSError, AttributeError):
            _sync_file_range = False
    if _sync_file_range:
        _sync_file_range(fd, offset, length, 2)  # SYNC_FILE_RANGE_WRITE; a failure only leaves it to the kernel


_sync_file_range = None


class Writeback:
    """Hands what has been written to ``fh`` (from offset 0) to the disk every WRITEBACK_EVERY
    bytes: call ``wrote(total)`` after each write with the bytes written so far."""

    def __init__(self, fh) -> None:
        self._fh, self._flushed = fh, 0

    def wrote(self, total: int) -> None:
        if total - self._flushed >= WRITEBACK_EVERY:
            self._fh.flush()
            start_writeback(self._fh.fileno(), self._flushed, total - self._flushed)
            self._flushed = total


class PreparedCopy:
    """A deep verify's sink (bvh_ops.repository.verify, ``keep``) for the dump object: the
    plaintext as it is decrypted and checked, written to ``path`` (0600, ``.partial`` until the
    object verified), its data blocks' offsets then written into its TOC — the copy
    ``_restore_from_copy`` restores from, so a drill decrypts its dump once, not twice. A local
    failure (no room, a write error, a dump it cannot walk) only drops the copy: the restore then
    decrypts on its own, and the backup's verification is not touched by it. ``pitr``
    (bvh_ops.drill.dumpside.DumpPitr): the append-only tables' PITR sums taken from the rows as
    they pass, told once the copy verified whole.

    The archive is walked (its blocks' offsets, those sums) on a thread of its own, a few chunks
    behind the decryption (WALK_AHEAD: memory stays bounded), so the walk takes the second core
    instead of lengthening the verify (the sums are most of it: ~0.5 µs a row)."""

    WALK_AHEAD = 8  # chunks (of ~1 MiB) queued for the walk at most

    def __init__(self, path: Path, size: int, pitr=None) -> None:
        self.path = Path(path)
        self._tmp = self.path.with_name(self.path.name + ".partial")
        self._pitr = pitr
        self._blocks = DumpFingerprinter(digests=False, rows=pitr.sink_for if pitr is not None else None)
        self._queue: queue.Queue | None = None
        self._walker: threading.Thread | None = None
        self._walk_error: BaseException | None = None
        self._fh = None
        self._written, self._writeback = 0, None
        self.dropped: str | None = None
        if not _room_for_copy(self.path.parent, size):
            self.dropped = "no room for the copy"
            return
        try:
            self._tmp.unlink(missing_ok=True)
            self._fh = os.fdopen(os.open(self._tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600), "w+b")
            self._writeback = Writeback(self._fh)
        except OSError as exc:
            self.dropped = f"cannot write the copy: {exc}"

    def write(self, chunk: bytes) -> None:
        if self._fh is None:
            return
        try:
            self._fh.write(chunk)
            if self._walker is None:
                self._queue = queue.Queue(self.WALK_AHEAD)
                self._walker = threading.Thread(target=self._walk, name="bvh-dump-walk", daemon=True)
                self._walker.start()
            self._queue.put(bytes(chunk))
            self._written += len(chunk)
            self._writeback.wrote(self._written)
        except Exception as exc:  # noqa: BLE001 - the copy only saves time: whatever fails drops it
            self._drop(exc)

    def _walk(self) -> None:
        """Feed the walk until the end (None); after a failure only drain the queue (the writer
        must never wait on a walk that stopped)."""
        while (chunk := self._queue.get()) is not None:
            if self._walk_error is None:
                try:
                    self._blocks.feed(chunk)
                except BaseException as exc:  # noqa: BLE001 - told by commit(): the copy is dropped
                    self._walk_error = exc

    def _stop_walk(self) -> None:
        if self._walker is not None:
            self._queue.put(None)
            self._walker.join()
            self._walker = None

    def commit(self) -> None:
        if self._fh is None:
            return
        try:
            self._stop_walk()
            if self._walk_error is not None:
                raise self._walk_error
            self._blocks.finish()
            set_data_offsets(self._fh, self._blocks)
            self._fh.close()
            self._fh = None
            os.replace(self._tmp, self.path)
            if self._pitr is not None:
                self._pitr.verified()
        except Exception as exc:  # noqa: BLE001 - the copy only saves time: whatever fails drops it
            self._drop(exc)

    def abort(self) -> None:
        self._drop("the object did not verify")

    def _drop(self, why) -> None:
        self.dropped = self.dropped or str(why)
        self._walk_error = self._walk_error or RuntimeError(str(why))  # the walker only drains from now on
        self._stop_walk()
        fh, self._fh = self._fh, None
        try:
            if fh is not None:
                fh.close()  # flushes what a short write left buffered: fails again on a full disk
        except OSError:
            pass  # the copy is dropped anyway; the object's verification must not see it
        finally:
            self._tmp.unlink(missing_ok=True)


def _read_toc_entries(read, where: str) -> list:
    """The archive's TOC entries, from its header and TOC alone: ``read(n)`` is called only until
    they are whole (the table data after them is never read)."""
    head = bytearray()
    while True:
        more = read(max(CHUNK, len(head)))  # the buffer doubles: a large TOC is parsed a few times, not once per MiB
        head += more
        try:
            return read_toc(bytes(head))[1]
        except NeedMore:
            if not more:
                raise IntegrityError(f"{where}: the dump ends inside its table of contents") from None


def _toc_entries(path: Path) -> dict:
    """dumpId -> TocEntry of the archive file at ``path``."""
    with open(path, "rb") as fh:
        return {e.dump_id: e for e in _read_toc_entries(fh.read, str(path))}


def _stored_toc_entries(settings, repo, backup_id, identities) -> list:
    """The TOC entries (with their dependencies) of a backup's dump, decrypted as far as its TOC."""
    reader = _decrypted(settings, repo, backup_id, identities)
    try:
        return _read_toc_entries(reader.read, f"backup {backup_id}")
    finally:
        reader.close()


def _restore_from_copy(settings, repo, manifest, entry, identities, env, bin_dir, base_args, jobs,
                       directory: Path, on_loaded=None) -> int:
    """Decrypt the dump into ``directory`` (0600; its digest checked against the manifest before
    pg_restore reads a byte), write the data blocks' offsets into its TOC (pg_dump wrote it to a
    pipe), then ``pg_restore --jobs`` on that seekable file — the same scheduling as bare
    pg_restore (a table's indexes start while others still load). Where the drill's deep verify
    already left that copy (PreparedCopy: decrypted, checked, offsets written), it is used as it
    is. ``on_loaded(schema, table)`` is called as each table's data is loaded and committed
    (pg_restore --verbose says "finished item <id> TABLE DATA"). The copy is removed in any case."""
    path = copy_path(directory, manifest.backup_id)
    try:
        if path.exists():
            entries, total = _toc_entries(path), entry.plaintext_size
        else:
            entries, total = _decrypt_copy(settings, repo, manifest, entry, identities, path), entry.plaintext_size
        verbose = ["--verbose"] if on_loaded is not None else []
        proc = spawn_tool("pg_restore", [*base_args, *verbose, f"--jobs={jobs}", str(path)], env=env,
                          bin_dir=bin_dir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        err = StderrTail(proc.stderr, _loaded_lines(entries, on_loaded) if on_loaded is not None else None)
        err.start()
        rc = proc.wait()
        err.join(timeout=30)  # every line read: each loaded table told before this returns
        if rc != 0:
            raise_for_tool("pg_restore", rc, err.text())
        return total
    finally:
        path.unlink(missing_ok=True)


def _decrypt_copy(settings, repo, manifest, entry, identities, path: Path) -> dict:
    """The dump decrypted into ``path`` (0600), checked against the manifest's digest, with its
    data blocks' offsets written into its TOC; returns its TOC entries (dumpId -> TocEntry)."""
    (alg, expected), total = entry.plaintext_digest, 0
    sha = plain_hash(alg)
    blocks = DumpFingerprinter(digests=False)  # where each table's data block starts
    reader = _decrypted(settings, repo, manifest.backup_id, identities)
    with os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600), "w+b") as fh:
        writeback = Writeback(fh)
        while chunk := reader.read(CHUNK):
            sha.update(chunk)
            fh.write(chunk)
            blocks.feed(chunk)
            total += len(chunk)
            progress.report("decrypt", total, entry.plaintext_size)
            writeback.wrote(total)
        if sha.hexdigest() != expected or total != entry.plaintext_size:
            raise IntegrityError(f"restored dump's {alg} differs from the manifest (tampered backup?)")
        blocks.finish()
        set_data_offsets(fh, blocks)
    return blocks.entries


# pg_restore --jobs --verbose, once a worker's item is done (its transaction committed):
# "pg_restore: finished item <dumpId> <desc> <tag>" (pg_backup_archiver.c, mark_restore_job_done).
_FINISHED = re.compile(rb"^pg_restore: finished item (\d+) ")
# Post-data items on a table whose lock (ACCESS EXCLUSIVE: ALTER TABLE ADD CONSTRAINT, CREATE
# RULE, ENABLE ROW LEVEL SECURITY, CREATE POLICY …) a reader of the table would hold up, and be
# held up by. Indexes (SHARE), foreign keys and triggers (SHARE ROW EXCLUSIVE), index
# attachments, comments and grants let readers be.
_READER_FRIENDLY = ("INDEX", "FK CONSTRAINT", "TRIGGER", "INDEX ATTACH", "COMMENT", "ACL", "STATISTICS",
                    "SEQUENCE SET", "MATERIALIZED VIEW DATA", "SECURITY LABEL")


def _loaded_lines(entries: dict, on_loaded):
    """A StderrTail line handler: ``on_loaded(schema, table)`` once a table's data item is done
    and so are the post-data items that lock it exclusively (a reader would stall them); the
    names from the archive's TOC (``entries``: dumpId -> TocEntry), not from the message.
    Verbose lines are not kept."""
    data_of = {dep: e for e in entries.values() if e.desc == "TABLE DATA" for dep in e.deps}  # TABLE id -> data
    waits: dict[int, set[int]] = {e.dump_id: set() for e in data_of.values()}
    blocking: dict[int, list[int]] = {}  # post-data item -> the data items waiting for it
    for e in entries.values():
        if e.section != SECTION_POST_DATA or e.desc in _READER_FRIENDLY:
            continue
        for dep in e.deps:
            if dep in data_of:
                waits[data_of[dep].dump_id].add(e.dump_id)
                blocking.setdefault(e.dump_id, []).append(data_of[dep].dump_id)
    done: set[int] = set()
    lock = threading.Lock()

    def handle(line: bytes) -> bool:
        m = _FINISHED.match(line)
        if m:
            item = int(m.group(1))
            with lock:
                done.add(item)
                candidates = {d for d in (item, *blocking.get(item, ())) if d in waits}
                ready = [d for d in candidates if d in done and waits[d] <= done]
                for d in ready:
                    waits.pop(d)
            for d in ready:
                te = entries[d]
                try:
                    on_loaded(te.namespace, te.tag)
                except Exception:  # noqa: BLE001 - a watcher's failure must not stop the restore
                    pass
        return line.startswith(b"pg_restore: ") and b"error:" not in line and b"warning:" not in line

    return handle


def _restore_parallel(settings, repo, manifest, identities, env, bin_dir, base_args, jobs, list_files) -> int:
    """pre-data, then data over ``jobs`` processes, then indexes and constraints over ``jobs``,
    then the rest of post-data (foreign keys, index attachments, triggers, matview refreshes)."""
    backup_id = manifest.backup_id
    entry = next(o for o in manifest.objects if o.name == DUMP_OBJECT)
    common = dict(settings=settings, repo=repo, backup_id=backup_id, identities=identities, env=env,
                  bin_dir=bin_dir, base_args=base_args)
    codec = toc_codec(manifest)
    pre, data, post = ([ln for ln in _toc(settings, repo, backup_id, identities, section, codec)
                        if ln and not ln.startswith(";")] for section in ("pre-data", "data", "post-data"))
    sizes = manifest.extra.get("table_bytes", {})
    index_table = {name: m.group(1) for name, d in manifest.extra.get("schema", {}).get("indexes", {}).items()
                   if (m := INDEX_TABLE.match(d))}

    def weight(line: str) -> int:
        desc, schema, tag = parse_entry(line)
        name = f"{schema}.{tag.split(' ')[0]}"
        if desc == "INDEX":
            name = index_table.get(name, name)
        return int(sizes.get(name, 0)) or 1

    if pre:
        _run_parallel([_write_list(pre, list_files, codec)], **common)
    total = 0
    if data:
        # Large objects' metadata and contents (PostgreSQL 17+: both in the data section) must
        # stay in one process, in archive order.
        blobs = [ln for ln in data if parse_entry(ln)[0].startswith(("BLOB", "LARGE OBJECT"))]
        others = [ln for ln in data if ln not in set(blobs)]
        bins = balance([(ln, weight(ln)) for ln in others], jobs) if others else [[]]
        order = {ln: i for i, ln in enumerate(data)}
        bins[-1] = sorted(bins[-1] + blobs, key=order.__getitem__)
        lists = [_write_list(b, list_files, codec) for b in bins if b]
        total = _run_parallel(lists, **common, verify_digest=entry.plaintext_digest, size=entry.plaintext_size)
    # Indexes and constraints first (foreign keys need their referenced keys), then foreign
    # keys spread over the jobs with the other post-data entries, then comments and grants.
    kinds = {ln: parse_entry(ln)[0] for ln in post}
    first = [ln for ln in post if kinds[ln] in ("INDEX", "CONSTRAINT")]
    fks = [ln for ln in post if kinds[ln] == "FK CONSTRAINT"]
    last = [ln for ln in post if kinds[ln] in ("COMMENT", "ACL", "SECURITY LABEL")]
    rest = [ln for ln in post if ln not in set(first) | set(fks) | set(last)]
    if first:
        _run_parallel([_write_list(b, list_files, codec) for b in balance([(ln, weight(ln)) for ln in first], jobs)],
                      **common)
    if fks or rest:
        bins = balance([(ln, weight(ln)) for ln in fks], jobs) if fks else [[]]
        order = {ln: i for i, ln in enumerate(post)}
        bins[-1] = sorted(bins[-1] + rest, key=order.__getitem__)
        _run_parallel([_write_list(b, list_files, codec) for b in bins if b], **common)
    if last:
        _run_parallel([_write_list(last, list_files, codec)], **common)
    return total


def restore_logical(settings: Settings, backup_id: str, into_dsn: str, *, tables: list[str] | None = None,
                    no_owner: bool = False, compare: bool = True, jobs: int = 1,
                    copy_dir: Path | None = None, on_table_loaded=None) -> RestoreResult:
    """Restore a logical backup into ``into_dsn`` and compare every table's fingerprint.

    ``copy_dir`` (a throw-away drill's scratch directory, never a production host): decrypt the
    dump there first, so ``pg_restore -j`` runs on a seekable file like bare pg_restore; used
    only when the disk has room for the copy and the restored data (COPY_ROOM), else the dump
    is streamed as always; a copy the drill's deep verify already left there (PreparedCopy) is
    restored as it is, without reading the object again. The copy is removed before this
    returns. ``on_table_loaded(schema, table)``: told as each table's data is in (only on that
    local-copy path)."""
    repo, _ = open_repository(settings, check=False)
    manifest = repo.trusted_manifest(backup_id, kind="logical")
    backup_id = manifest.backup_id
    entry = next((o for o in manifest.objects if o.name == DUMP_OBJECT), None)
    if entry is None:
        hint = (f": it is a {manifest.kind} backup — restore it with --target-dir DIR (a new data directory)"
                if manifest.kind in ("full", "incremental") else "")
        raise NotFound(f"backup {backup_id} has no logical dump{hint}")
    identities = load_identities(settings.require_identity())
    dbname = conninfo_to_dict(into_dsn).get("dbname")
    if not dbname:
        raise BvhOpsError("--into needs a database name in the DSN (…/dbname)")
    env = pg_env(into_dsn)
    with connect(into_dsn, autocommit=True) as conn:
        target_major = int(conn.execute("SHOW server_version_num").fetchone()[0]) // 10000
    _restorable_into(manifest, target_major)
    bin_dir = restore_bin_dir(target_major, settings.pg_bin_dir)
    owner_args = ["--no-owner", "--no-privileges"] if no_owner else []
    base_args = ["--exit-on-error", "-d", dbname, *owner_args]
    # Before any byte reaches the target: the object's size (and, when small, its sha256)
    # against the signed manifest. Each segment is authenticated before pg_restore sees it.
    # A prepared copy was checked whole (stored and plaintext digests) by the deep verify.
    if not (copy_dir is not None and not tables and jobs > 1 and copy_path(copy_dir, backup_id).exists()):
        preflight(repo, backup_id, entry)
    before = _user_relations(into_dsn)
    t0 = time.monotonic()
    list_files: list[str] = []
    try:
        return _restore_into(settings, repo, manifest, entry, identities, into_dsn, dbname, env, bin_dir,
                             owner_args, base_args, tables, compare, jobs, t0, list_files, copy_dir,
                             on_table_loaded)
    except BvhOpsError as exc:
        if _user_relations(into_dsn) != before:
            raise type(exc)(f"restore of backup {backup_id} into {dbname} failed: {exc}; the target database "
                            f"{dbname} is partially restored: drop it") from None
        raise type(exc)(f"restore of backup {backup_id} into {dbname} failed: {exc}; nothing was written "
                        "to it") from None
    finally:
        for path in list_files:
            os.unlink(path)


def _restorable_into(manifest: Manifest, target_major: int) -> None:
    """A dump restores into its own major version or a newer one, and only a pg_restore as new as
    the pg_dump that wrote it reads it (pg_restore 15 said "unsupported version (1.16) in file
    header" of a dump by pg_dump 18, naming no cause and no fix)."""
    source_major = (manifest.server_version_num or 0) // 10000
    if source_major > target_major:
        raise ConfigError(f"backup {manifest.backup_id} is of PostgreSQL {source_major} and the target server runs "
                          f"{target_major}: a dump restores into the same major version or a newer one: restore "
                          f"into a PostgreSQL {source_major}+ server")
    if manifest.extra.get("pg_dump") == "embedded" and target_major < EMBEDDED_MAJOR:
        raise ConfigError(f"backup {manifest.backup_id} was written by PostgreSQL {EMBEDDED_MAJOR}'s pg_dump (the "
                          f"backup host had no PostgreSQL {source_major} client tools), which PostgreSQL "
                          f"{target_major}'s pg_restore cannot read: restore into a PostgreSQL {EMBEDDED_MAJOR}+ "
                          f"server, and give the backup host PostgreSQL {source_major}'s tools (pg_bin_dir) for the "
                          "next backups")


def _user_relations(dsn: str) -> int | None:
    """How many relations outside the system schemas the database holds (None: cannot tell)."""
    try:
        with connect(dsn, autocommit=True) as conn:
            return conn.execute(
                "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'"
            ).fetchone()[0]
    except BvhOpsError:
        return None


def _restore_into(settings, repo, manifest, entry, identities, into_dsn, dbname, env, bin_dir, owner_args,
                  base_args, tables, compare, jobs, t0, list_files, copy_dir=None,
                  on_table_loaded=None) -> RestoreResult:
    backup_id = manifest.backup_id
    if not tables and jobs > 1:
        if copy_dir is not None and (copy_path(copy_dir, backup_id).exists()
                                     or _room_for_copy(Path(copy_dir), entry.plaintext_size)):
            total = _restore_from_copy(settings, repo, manifest, entry, identities, env, bin_dir, base_args, jobs,
                                       Path(copy_dir), on_table_loaded)
        else:
            total = _restore_parallel(settings, repo, manifest, identities, env, bin_dir, base_args, jobs,
                                      list_files)
        seconds = time.monotonic() - t0
        comparisons = compare_tables(into_dsn, manifest, tables, bin_dir=bin_dir) if compare else []
        return RestoreResult(backup_id, dbname, seconds, total, comparisons)
    borrowed: list = []
    omitted: list[str] = []
    if tables:
        codec = toc_codec(manifest)
        toc = _toc(settings, repo, backup_id, identities, codec=codec)
        # A partitioned table comes back whole: with its partitions (and theirs), attached.
        entries = _stored_toc_entries(settings, repo, backup_id, identities)
        tree = partition_tree(entries)
        asked = tables
        _refuse_partitions_alone(asked, tree, manifest)
        tables = [qualified(*t) for t in with_partitions([split_name(t) for t in asked], tree)]
        # The manifest names them as format('%I.%I') does, the TOC (and selective_lists) unquoted.
        wanted_tables = {split_name(t) for t in tables}
        table_indexes = {".".join(split_name(name)) for name, d in manifest.extra.get("schema", {}).get("indexes", {}).items()
                         if (m := INDEX_TABLE.match(d)) and split_name(m.group(1)) in wanted_tables}
        prereq, own = selective_lists(toc, tables, table_indexes, entries)
        parse = described(entries)
        restored = {parse(ln)[1:] for ln in own if parse(ln)[0] == "TABLE"}  # (schema, table)
        missing = [t for t in asked if split_name(t) not in restored]
        if missing:
            raise NotFound(f"table {', '.join(missing)} is not in backup {backup_id}")
        # Every partition must come back, or the comparison (over the plain-table leaves it finds)
        # could pass without one: a foreign table, or a name not readable in the dump's encoding.
        left = [".".join(split_name(t)) for t in tables if split_name(t) not in restored]
        if left:
            raise ConfigError(f"partition {', '.join(left)} of a table asked for cannot be restored by --table (a "
                              "foreign table, or a name not in the dump's encoding): restore the whole backup instead")
        borrowed = unset_sequences(prereq, own, entries)
        omitted = left_out(own, entries)
        for lines in (prereq, own):
            _write_list(lines, list_files, codec)
        # Prerequisites may already exist in the target: errors there are tolerated. Never with
        # their owners: where one exists (the live database's schema, type or shared sequence),
        # its CREATE fails and the ALTER … OWNER TO that follows would still take it from the
        # role using it. Those it creates belong to the restoring role.
        reader = _decrypted(settings, repo, backup_id, identities)
        proc = spawn_tool("pg_restore", ["-d", dbname, "-L", list_files[0], "--no-owner"], env=env,
                          bin_dir=bin_dir, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        err = StderrTail(proc.stderr)
        err.start()
        _feed(reader, proc, None)
        proc.wait()
        err.text()
        one_transaction = ["--single-transaction"] if _locks_suffice(into_dsn, own, parse) else []
        run_args = base_args + [*one_transaction, "-L", list_files[1]]
    else:
        run_args = base_args
    reader = _decrypted(settings, repo, backup_id, identities)
    proc = spawn_tool("pg_restore", run_args, env=env, bin_dir=bin_dir,
                      stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    err = StderrTail(proc.stderr)
    err.start()
    try:
        total = _feed(reader, proc, entry.plaintext_digest, entry.plaintext_size)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    rc = proc.wait()
    if rc != 0:
        raise_for_tool("pg_restore", rc, err.text())
    advanced = _advance_sequences(into_dsn, borrowed)
    seconds = time.monotonic() - t0
    comparisons = compare_tables(into_dsn, manifest, tables, bin_dir=bin_dir) if compare else []
    return RestoreResult(backup_id, dbname, seconds, total, comparisons, tuple(omitted), tuple(advanced))


def _advance_sequences(dsn: str, borrowed: list[tuple[tuple[str, str], int, bool]]) -> list[str]:
    """Move each sequence the restored tables draw from but do not own (unset_sequences) forward
    to the backup's value where the target's is behind it — one the restore made, or one left
    unused by an earlier attempt, starts at its start — never back: a live one further on keeps its
    value. The names of those moved."""
    moved: list[str] = []
    if not borrowed:
        return moved
    from psycopg import sql

    with connect(dsn, autocommit=True) as conn:
        for (schema, name), value, called in borrowed:
            row = conn.execute(
                "SELECT c.oid, s.seqincrement FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "JOIN pg_sequence s ON s.seqrelid = c.oid WHERE n.nspname = %s AND c.relname = %s",
                (schema, name)).fetchone()
            if row is None:
                continue
            oid, step = row
            # The sequence's own row: last_value with is_called false is where its next nextval
            # starts (a RESTART WITH 1000 not yet used), which pg_sequence_last_value hides.
            last, is_called = conn.execute(sql.SQL("SELECT last_value, is_called FROM {}").format(
                sql.Identifier(schema, name))).fetchone()
            now = (last, is_called)
            behind = now < (value, called) if step > 0 else (-now[0], now[1]) < (-value, called)
            if behind:
                conn.execute("SELECT setval(%s::oid::regclass, %s, %s)", (oid, value, called))
                moved.append(f"{schema}.{name}")
    return moved


LOCKED = ("TABLE", "TABLE ATTACH", "CONSTRAINT", "INDEX", "INDEX ATTACH", "FK CONSTRAINT")


def _locks_suffice(dsn: str, own: list[str], parse) -> bool:
    """Whether the selected entries fit in one transaction: each table, key and index it creates
    (and a table's TOAST table) holds a lock until the end, out of the server's shared lock table
    (max_locks_per_transaction × (max_connections + max_prepared_transactions)); a table with
    thousands of partitions ran out of it ("out of shared memory"). Half the table at most, the
    rest left to the server's other sessions; beyond that the entries are restored one by one (a
    failure then leaves the target partly restored, and says so)."""
    needed = 2 * sum(1 for ln in own if parse(ln)[0] in LOCKED)
    try:
        with connect(dsn, autocommit=True) as conn:
            room = conn.execute("SELECT current_setting('max_locks_per_transaction')::int * (current_setting("
                                "'max_connections')::int + current_setting('max_prepared_transactions')::int)"
                                ).fetchone()[0]
    except BvhOpsError:
        return True  # as before: pg_restore's own error says what is wrong
    if needed <= room // 2:
        return True
    log.warning("restoring %d entries without --single-transaction: they need about %d locks, more than half "
                "the server's lock table (%d)", len(own), needed, room)
    return False


def _refuse_partitions_alone(asked: list[str], tree: dict[tuple[str, str], list[tuple[str, str]]],
                             manifest: Manifest) -> None:
    """A partition asked for without its partitioned table comes back as a table of its own and
    is compared with the fingerprint the backup recorded for it (``extra.partitions``). A backup
    taken before those were recorded proves the partitioned table only as a whole (its leaves'
    digests combined): the partition alone could be restored but not compared — and a restore
    whose comparison cannot run must not report one — so it is refused, naming that table."""
    parent_of = {child: parent for parent, children in tree.items() for child in children}
    recorded = {split_name(name) for name in partition_stats(manifest)}
    wanted = {split_name(t) for t in asked}
    for name in asked:
        table, top = split_name(name), None
        while table in parent_of:
            table = top = parent_of[table]
            if table in wanted:
                break
        else:
            if top is not None and split_name(name) not in recorded:
                whole = next((t.name for t in manifest.tables if split_name(t.name) == top), ".".join(top))
                why = (f"the backup recorded no fingerprint of {name} on its own (a foreign table?)" if recorded else
                       "this backup (taken before bvh-ops recorded each partition's fingerprint) proves "
                       f"{whole} only as a whole")
                raise ConfigError(f"table {name} is a partition of {whole}: {why}, so restore --table {whole} (its "
                                  "partitions come with it, compared)")


def partition_stats(manifest: Manifest) -> dict[str, dict[str, str]]:
    """The backup's partitions: format('%I.%I') -> {parent, kind, fingerprint} ({} before they
    were recorded)."""
    parts = manifest.extra.get("partitions")
    return parts if isinstance(parts, dict) else {}


def _expected(manifest: Manifest, wanted: set[tuple[str, str]] | None) -> list[TableStat]:
    """What the restored tables are compared with: the backup's listed tables asked for, and each
    partition asked for whose parent was not (restored as a table of its own) with the
    fingerprint the backup recorded for it."""
    expected = [t for t in manifest.tables if wanted is None or split_name(t.name) in wanted]
    if wanted is None:
        return expected
    listed = {split_name(t.name) for t in expected}
    parts = partition_stats(manifest)
    parent_of = {split_name(name): split_name(part["parent"]) for name, part in parts.items()}

    def below_wanted(key: tuple[str, str]) -> bool:  # an ancestor asked for too: part of its comparison
        seen = set()
        while (key := parent_of.get(key)) is not None and key not in seen:
            if key in wanted:
                return True
            seen.add(key)
        return False

    for name, part in parts.items():
        key = split_name(name)
        if key in wanted and key not in listed and not below_wanted(key):
            fingerprint = part["fingerprint"]
            expected.append(TableStat(name, int(fingerprint.split(":", 1)[0]), fingerprint, part["kind"]))
    return expected


def compare_tables(dsn: str, manifest: Manifest, tables: list[str] | None = None, *,
                   bin_dir=None, known: dict[tuple[str, str], tuple[int, str]] | None = None,
                   jobs: int = 2, server=None) -> list[TableComparison]:
    """Fingerprint the restored copy and compare with the backup's; a missing table fails. Each
    table is fingerprinted the way its backup recorded (fingerprints 3 and 2: COPY text, framed or
    not; 1: SQL).
    ``known``: COPY digests of plain tables read earlier and proven unchanged since; ``server``:
    the restored copy's server is on this host (fingerprint.LocalServer: large tables are read
    through a FIFO)."""
    wanted = {split_name(t) for t in tables} if tables else None  # --table's spelling, not format('%I.%I')'s
    expected = _expected(manifest, wanted)
    methods = {t.name: method_of(t.fingerprint) for t in (*manifest.tables, *expected)}
    with connect(dsn) as conn:
        present = list_tables(conn)
        refs = [r for r in present if wanted is None or (r.schema, r.relname) in wanted]
        by_copy = [r for r in refs if methods.get(r.name) in COPY_METHODS]
        by_sql = [r for r in refs if methods.get(r.name) not in COPY_METHODS]
        # Fingerprints 1 summed a hash of "t" over "tbl AS t": in a table with a column named t
        # that is the column, not the row, so its other columns were never in the fingerprint.
        blind = {r.name for r in by_sql} & tables_with_column(conn, "t") if by_sql else set()
        actual = {r.name: table_fingerprint(conn, r, methods.get(r.name)) for r in by_sql}
        if wanted is None:  # before the long read below: this connection is not used after it
            lo = methods.get(LARGE_OBJECTS)
            actual[LARGE_OBJECTS] = large_object_digest(conn) if lo == LO else large_object_fingerprint(conn)
        conn.rollback()
        for method in COPY_METHODS:  # one method per backup; each table read as its backup recorded
            if group := [r for r in by_copy if methods.get(r.name) == method]:
                actual.update((s.name, s) for s in copy_fingerprints(
                    conn, dsn, group, encoding=manifest.extra.get("dump_encoding"), bin_dir=bin_dir, jobs=jobs,
                    known=known, method=method, server=server))
    out = []
    for t in expected:
        got = actual.get(t.name)
        # Its fingerprint still covers the row count and the column t: unequal, it differs (a
        # missing or extra row, a changed t); equal, it proves nothing of the other columns.
        blind_why = None if t.name not in blind or got is None or got.fingerprint != t.fingerprint else (
            "it has a column named t, which this backup's fingerprints (version 1, before 2026-11-28) hashed "
            "instead of the whole row: its copy cannot be proven from this backup; verify a newer backup")
        out.append(TableComparison(t.name, t.rows, got.rows if got else None, t.fingerprint,
                                   got.fingerprint if got else None, not_verified=blind_why))
    return out


__all__ = ["restore_logical", "compare_tables", "RestoreResult", "TableComparison"]
