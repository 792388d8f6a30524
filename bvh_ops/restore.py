"""Logical restore: decrypt and stream a dump into ``pg_restore`` (never a local copy), then
compare every restored table's fingerprint with the one the backup recorded."""

from __future__ import annotations

import hashlib
import subprocess
import time
from dataclasses import dataclass

from psycopg.conninfo import conninfo_to_dict

from bvh_ops.backup import DUMP_OBJECT, _StderrTail, open_repository
from bvh_ops.config import Settings
from bvh_ops.errors import BvhOpsError, CryptoError, IntegrityError, NotFound
from bvh_ops.keys import load_identities
from bvh_ops.pg.conn import connect
from bvh_ops.pg.fingerprint import (
    LARGE_OBJECTS,
    fingerprint_database,
    large_object_fingerprint,
    list_tables,
    method_of,
)
from bvh_ops.pg.tools import pg_env, raise_for_tool, restore_bin_dir, run_tool, spawn_tool
from bvh_ops.repository.manifest import Manifest
from bvh_ops.repository.repo import backup_prefix
from bvh_ops.stream import DecryptingReader

CHUNK = 1 << 20
# TOC entry kinds restored (tolerating "already exists") before a selected table.
_PREREQ = ("SCHEMA", "EXTENSION", "TYPE", "DOMAIN", "FUNCTION", "COLLATION", "SEQUENCE")
# Entry kinds that belong to a selected table (tag starts with the table's name).
_TABLE_ENTRIES = ("TABLE", "SEQUENCE OWNED BY", "DEFAULT", "TABLE DATA", "SEQUENCE SET", "CONSTRAINT")


@dataclass(frozen=True)
class TableComparison:
    name: str
    expected_rows: int
    actual_rows: int | None
    expected: str
    actual: str | None

    @property
    def ok(self) -> bool:
        return self.expected == self.actual


@dataclass(frozen=True)
class RestoreResult:
    backup_id: str
    target: str
    seconds: float
    bytes_in: int
    comparisons: list[TableComparison]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.comparisons)

    def to_json(self) -> dict[str, object]:
        return {
            "backup_id": self.backup_id, "target": self.target, "seconds": round(self.seconds, 3),
            "bytes_in": self.bytes_in, "ok": self.ok,
            "tables": {c.name: {"expected": c.expected, "actual": c.actual, "ok": c.ok} for c in self.comparisons},
        }


def _decrypted(settings: Settings, repo, backup_id: str, identities) -> DecryptingReader:
    body = repo.store.open_reader(backup_prefix(backup_id) + DUMP_OBJECT)
    return DecryptingReader(body, identities)


def _feed(reader, proc: subprocess.Popen, expected_sha: str | None) -> int:
    sha = hashlib.sha256()
    total = 0
    try:
        while chunk := reader.read(CHUNK):
            sha.update(chunk)
            total += len(chunk)
            proc.stdin.write(chunk)
    except BrokenPipeError:
        # pg_restore stopped reading (done with a selective list, or failed; its exit code
        # tells which). Read the rest anyway so the whole object is authenticated and hashed.
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
    if expected_sha is not None and sha.hexdigest() != expected_sha:
        raise IntegrityError("restored dump's sha256 differs from the manifest (tampered backup?)")
    return total


def _toc(settings, repo, backup_id, identities) -> list[str]:
    reader = _decrypted(settings, repo, backup_id, identities)
    proc = spawn_tool("pg_restore", ["-l"], env=pg_env("postgresql://"), bin_dir=settings.pg_bin_dir,
                      stdin=subprocess.PIPE)
    err = _StderrTail(proc.stderr)
    err.start()
    out_lines: list[str] = []
    import threading

    t = threading.Thread(target=lambda: out_lines.extend(proc.stdout.read().decode().splitlines()), daemon=True)
    t.start()
    _feed(reader, proc, None)
    rc = proc.wait()
    t.join()
    if rc != 0:
        raise_for_tool("pg_restore -l", rc, err.text())
    return out_lines


def _entry(line: str) -> tuple[str, str, str] | None:
    """(desc, schema, tag) of a TOC line: '<id>; <cat> <oid> <DESC...> <schema> <tag...> <owner>'."""
    if not line or line.startswith(";"):
        return None
    parts = line.split(";", 1)[1].split()
    words = parts[2:]
    for desc in sorted(_TABLE_ENTRIES + _PREREQ + ("FK CONSTRAINT", "INDEX", "ACL", "COMMENT"), key=len, reverse=True):
        d = desc.split()
        if words[: len(d)] == d:
            rest = words[len(d):]
            return desc, (rest[0] if rest else "-"), " ".join(rest[1:-1]) if len(rest) > 2 else (rest[1] if len(rest) > 1 else "")
    return words[0] if words else "", "", ""


def selective_lists(toc: list[str], tables: list[str]) -> tuple[list[str], list[str]]:
    """Split a TOC into prerequisites (tolerant) and the selected tables' own entries (strict)."""
    wanted = []
    for t in tables:
        schema, _, name = t.rpartition(".")
        wanted.append((schema.strip('"') or None, name.strip('"')))
    prereq, own = [], []
    for line in toc:
        e = _entry(line)
        if e is None:
            continue
        desc, schema, tag = e
        for wschema, wname in wanted:
            if wschema and schema != wschema:
                continue
            first = tag.split(" ")[0] if tag else ""
            if desc in ("TABLE", "TABLE DATA") and tag == wname:
                own.append(line)
                break
            if desc in ("DEFAULT", "CONSTRAINT") and first == wname:
                own.append(line)
                break
            if desc in ("SEQUENCE OWNED BY", "SEQUENCE SET") and tag.startswith(wname + "_"):
                own.append(line)
                break
            if desc == "SEQUENCE" and tag.startswith(wname + "_"):
                prereq.append(line)
                break
        else:
            if desc in _PREREQ and desc != "SEQUENCE":
                prereq.append(line)
    # pg_restore -L restores in list order: table, owned-by, defaults, data, setval, constraints.
    order = {d: i for i, d in enumerate(_TABLE_ENTRIES)}
    own.sort(key=lambda ln: order.get(_entry(ln)[0], 99))
    return prereq, own


def restore_logical(settings: Settings, backup_id: str, into_dsn: str, *, tables: list[str] | None = None,
                    no_owner: bool = False, compare: bool = True) -> RestoreResult:
    repo, _ = open_repository(settings, check=False)
    backup_id = repo.resolve(backup_id)
    loaded = repo.load_manifest(backup_id)
    if not loaded.signature_ok:
        raise IntegrityError(f"backup {backup_id}: manifest {loaded.signature_detail}; refusing to restore from it")
    manifest = loaded.manifest
    entry = next((o for o in manifest.objects if o.name == DUMP_OBJECT), None)
    if entry is None:
        raise NotFound(f"backup {backup_id} has no logical dump")
    identities = load_identities(settings.require_identity())
    dbname = conninfo_to_dict(into_dsn).get("dbname")
    if not dbname:
        raise BvhOpsError("--into needs a database name in the DSN (…/dbname)")
    env = pg_env(into_dsn)
    with connect(into_dsn, autocommit=True) as conn:
        target_major = int(conn.execute("SHOW server_version_num").fetchone()[0]) // 10000
    bin_dir = restore_bin_dir(target_major, settings.pg_bin_dir)
    owner_args = ["--no-owner", "--no-privileges"] if no_owner else []
    base_args = ["--exit-on-error", "-d", dbname, *owner_args]
    t0 = time.monotonic()
    import os
    import tempfile

    list_files: list[str] = []
    try:
        if tables:
            toc = _toc(settings, repo, backup_id, identities)
            prereq, own = selective_lists(toc, tables)
            missing = [t for t in tables if not any(_entry(ln)[0] == "TABLE" for ln in own
                                                    if _entry(ln)[2] == t.rpartition(".")[2].strip('"'))]
            if missing:
                raise NotFound(f"table {', '.join(missing)} is not in backup {backup_id}")
            for lines in (prereq, own):
                fd, path = tempfile.mkstemp(prefix="bvh-toc-", suffix=".list")
                with os.fdopen(fd, "w") as fh:
                    fh.write("\n".join(lines) + "\n")
                list_files.append(path)
            # Prerequisites may already exist in the target: errors there are tolerated.
            reader = _decrypted(settings, repo, backup_id, identities)
            proc = spawn_tool("pg_restore", ["-d", dbname, "-L", list_files[0], *owner_args], env=env,
                              bin_dir=bin_dir, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
            err = _StderrTail(proc.stderr)
            err.start()
            _feed(reader, proc, None)
            proc.wait()
            err.text()
            run_args = base_args + ["--single-transaction", "-L", list_files[1]]
        else:
            run_args = base_args
        reader = _decrypted(settings, repo, backup_id, identities)
        proc = spawn_tool("pg_restore", run_args, env=env, bin_dir=bin_dir,
                          stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        err = _StderrTail(proc.stderr)
        err.start()
        try:
            total = _feed(reader, proc, entry.plaintext_sha256)
        except CryptoError as exc:
            proc.wait()
            raise CryptoError(f"{exc}; the target database {dbname} is partially restored: drop it") from None
        rc = proc.wait()
        if rc != 0:
            raise_for_tool("pg_restore", rc, err.text())
    finally:
        for path in list_files:
            os.unlink(path)
    seconds = time.monotonic() - t0
    comparisons = compare_tables(into_dsn, manifest, tables) if compare else []
    return RestoreResult(backup_id, dbname, seconds, total, comparisons)


def compare_tables(dsn: str, manifest: Manifest, tables: list[str] | None = None) -> list[TableComparison]:
    """Fingerprint the restored copy and compare with the backup's; a missing table fails."""
    methods = {t.name: method_of(t.fingerprint) for t in manifest.tables}
    with connect(dsn) as conn:
        if tables:
            wanted = {t if "." in t else f"public.{t}" for t in tables}
            refs = [r for r in list_tables(conn) if r.name in wanted]
            actual = {s.name: s for s in fingerprint_database(conn, refs, methods)[:-1]}
            expected = [t for t in manifest.tables if t.name in wanted]
        else:
            actual = {s.name: s for s in fingerprint_database(conn, None, methods)}
            expected = list(manifest.tables)
        if not tables and LARGE_OBJECTS not in actual:
            actual[LARGE_OBJECTS] = large_object_fingerprint(conn)
        conn.rollback()
    out = []
    for t in expected:
        got = actual.get(t.name)
        out.append(TableComparison(t.name, t.rows, got.rows if got else None, t.fingerprint,
                                   got.fingerprint if got else None))
    return out


__all__ = ["restore_logical", "compare_tables", "RestoreResult", "TableComparison", "run_tool"]
