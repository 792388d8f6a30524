"""Checks of the physical drill: the chain deep-verified and the WAL reaching the target
(before anything is restored), and pg_amcheck over the running restored cluster."""

from __future__ import annotations

import os
from pathlib import Path

from bvh_ops.config import Settings
from bvh_ops.errors import BvhOpsError, ToolError
from bvh_ops.keys import load_identities
from bvh_ops.pg.tools import pg_env, raise_for_tool, tool_path
from bvh_ops.physical.backup import BASE_OBJECT, chain_of
from bvh_ops.physical.restore import PreparedExtract, validate_target
from bvh_ops.physical.target import RecoveryTarget
from bvh_ops.repository.manifest import Manifest
from bvh_ops.repository.open import open_repository
from bvh_ops.repository.verify import verify_backup
from bvh_ops.results import CheckResult, CheckStatus

ROOM_MARGIN = 1.1  # directories, inodes, extents on top of what _extracted counts


def _free(directory: Path) -> tuple[int, int]:
    """(bytes free, the file system's block size) of ``directory``; (0, 0) when unreadable."""
    try:
        st = os.statvfs(directory)
    except OSError:
        return 0, 0
    block = st.f_frsize or st.f_bsize
    return st.f_bavail * block, block  # as shutil.disk_usage counts free (one statvfs, not two)


def _extracted(m: Manifest, block: int) -> int:
    """What the base extracts to, at most: its tar, plus for each file the tail of a block a tar
    does not spend (a member is a 512-byte header and its data in 512-byte records; a file on
    disk takes whole blocks). An incremental's thousands of INCREMENTAL.* files of a few hundred
    bytes are 1 KiB each in the tar, a block each on disk (3000 tables: 25.5 MB of tar, 37.5 MB
    extracted): its tar's size alone is short by up to half. ``files_checked``: the files in
    the base's backup_manifest (recorded since the physical backup checks them)."""
    tar = next((o.plaintext_size for o in m.objects if o.name == BASE_OBJECT), 0)
    files = int(m.extra.get("files_checked") or 0)
    return tar + files * max(0, block - 1024)


def verify_chain_and_wal(settings: Settings, manifest: Manifest, target: RecoveryTarget,
                         extract_into: Path | None = None) -> list[CheckResult]:
    """Deep verify of every backup in the chain, and whether the archived WAL reaches the target.
    ``extract_into`` (the drill's throw-away scratch directory): each base, as it is decrypted
    and checked, is also extracted there for the restore (PreparedExtract: kept only once it
    verified; one decryption per base, not two). The checks are the deep verify's either way."""
    repo, _ = open_repository(settings)
    identities = load_identities(settings.require_identity())
    chain = chain_of(repo, manifest)
    bad, count, kept, dropped = [], 0, 0, []
    room, block = _free(extract_into) if extract_into else (0, 0)
    needed = 0
    for m in chain:
        # Nothing is restored from a chain with a bad part: its later bases only verified. A base
        # the scratch has no room for (with those before it) is not extracted here: the restore
        # fetches it itself, so a disk too small fills once, not twice.
        needed += _extracted(m, block)
        fits = needed * ROOM_MARGIN <= room
        if extract_into and not bad and not fits:
            dropped.append(f"{m.backup_id}: no room in {extract_into} ({room >> 20} MiB free, the bases need "
                           f"{needed >> 20} MiB)")
        keep = ({BASE_OBJECT: PreparedExtract(extract_into, m.backup_id, flush=len(chain) == 1)}
                if extract_into and not bad and fits else None)
        try:
            results = verify_backup(repo, m.backup_id, identities=identities, keep=keep)
        except BaseException:
            for sink in (keep or {}).values():
                sink.abort()  # tar stopped; what it extracted goes
            raise
        for r in results:
            count += 1
            if not r.ok:
                bad.append(f"{r.backup_id}/{r.object}: {r.status} ({r.detail})")
        for sink in (keep or {}).values():
            if sink.dropped is None:
                kept += 1
            elif not bad:
                dropped.append(f"{m.backup_id}: {sink.dropped}")
    extracted = f"; {kept} of {len(chain)} bases extracted for the restore as they were verified" if kept else ""
    if dropped:  # a local failure: the restore fetches those bases itself; the verification is not touched
        extracted += f"; not kept, fetched again by the restore: {'; '.join(dropped)}"
    out = [CheckResult("physical_deep_verify", CheckStatus.FAILED, "; ".join(bad[:5])) if bad else
           CheckResult("physical_deep_verify", CheckStatus.PASSED,
                       f"chain {' + '.join(m.backup_id for m in chain)}: {count} objects decrypted and hashed"
                       + extracted)]
    doc = validate_target(settings, manifest.backup_id, target)
    wal = doc.get("wal") or {}
    gaps = doc.get("gaps")
    if not doc["reachable"]:
        out.append(CheckResult("wal_continuity", CheckStatus.FAILED,
                               f"{target.describe()} is not reachable: {doc.get('reason')}" + (f"; {gaps}" if gaps else "")))
    else:
        detail = (f"{target.describe()} reachable: WAL from {wal.get('start_segment')} to "
                  f"{wal.get('contiguous_until') or '(inside the backup)'}")
        out.append(CheckResult("wal_continuity", CheckStatus.PASSED, detail + (f"; later: {gaps}" if gaps else "")))
    return out


def _free_connections(dsn: str) -> int:
    """Connections the cluster still takes from an ordinary client (pg_amcheck opens one per job;
    a restored cluster keeps the source's max_connections). Large when it cannot be read."""
    from bvh_ops.pg.conn import connect

    try:
        with connect(dsn) as conn:
            return int(conn.execute(
                "SELECT current_setting('max_connections')::int"
                " - current_setting('superuser_reserved_connections')::int"
                " - coalesce(current_setting('reserved_connections', true)::int, 0)"
                " - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')").fetchone()[0])
    except Exception:  # noqa: BLE001 - pg_amcheck then reports the connection problem itself
        return 1 << 16


def check_amcheck(dsn: str, bin_dir: str, jobs: int = 1) -> CheckResult:
    """pg_amcheck over every database of the restored cluster: heap and B-tree structure,
    ``jobs`` relations at a time. Corruption (exit 2, or exit 1 when a connection ended after
    something was reported) fails the check naming what pg_amcheck reports on its standard
    output (the relation, block and problem); a tool error with nothing reported (a permission,
    a connection) is not_verified, with the tool's message."""
    import subprocess

    # Two connections for the PITR comparison and the invariants beside it; of the rest, half:
    # with --all a slot moves to the next database by closing its connection and opening a new
    # one at once, and the old backend holds its slot until it has exited — every slot doing so
    # together needs twice the slots (a sound cluster failed "too many clients already" so).
    jobs = min(jobs, (_free_connections(dsn) - 2) // 2)
    cmd = [tool_path("pg_amcheck", Path(bin_dir)), "--all", "--install-missing", "--jobs", str(max(1, jobs))]
    proc = None
    try:
        proc, count, lines = _run_amcheck(cmd, pg_env(dsn), timeout=AMCHECK_TIMEOUT)
        if proc.returncode != 0 and count:
            # Exit 1 after a report: a slot's connection ended (FATAL, a backend crash) and it
            # stopped early. What it found is the detail either way, and the check fails.
            what = "corruption found" if proc.returncode == 2 else f"pg_amcheck stopped early (exit {proc.returncode})"
            return CheckResult("pg_amcheck", CheckStatus.FAILED,
                               f"{what} ({count} lines of report): " + " | ".join(lines))
        if proc.returncode != 0:
            raise_for_tool("pg_amcheck", proc.returncode, proc.stderr_text)
    except ToolError as exc:
        if proc is not None and proc.returncode == 2:  # its exit status for corruption found
            return CheckResult("pg_amcheck", CheckStatus.FAILED, str(exc))
        # Nothing reported: the tool could not check (a role that may not install amcheck, a
        # connection refused), which is not corruption found — no "data corruption" alert for it.
        return CheckResult("pg_amcheck", CheckStatus.NOT_VERIFIED, f"could not check: {exc}")
    except BvhOpsError as exc:
        return CheckResult("pg_amcheck", CheckStatus.NOT_VERIFIED, str(exc))
    except (OSError, subprocess.TimeoutExpired) as exc:
        return CheckResult("pg_amcheck", CheckStatus.NOT_VERIFIED, f"pg_amcheck could not run: {exc}")
    return CheckResult("pg_amcheck", CheckStatus.PASSED, "heap and B-tree checks of every database: no corruption")


AMCHECK_TIMEOUT = 6 * 3600


def _run_amcheck(cmd: list[str], env: dict[str, str], *, timeout: float, keep: int = 4):
    """Run pg_amcheck reading its report as it comes: the number of non-empty lines and the
    first ``keep`` (a badly damaged cluster reports a line per bad page or tuple: never all in
    memory), stderr's last 64 KiB on ``proc.stderr_text``. Killed after ``timeout`` seconds
    (subprocess.TimeoutExpired)."""
    import subprocess
    import threading

    from bvh_ops.children import die_with_parent
    from bvh_ops.pg.tools import StderrTail

    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=die_with_parent())
    tail = StderrTail(proc.stderr)
    tail.start()
    expired = threading.Event()

    def kill() -> None:
        expired.set()
        proc.kill()

    timer = threading.Timer(timeout, kill)
    timer.daemon = True
    timer.start()
    count, lines = 0, []
    try:
        for raw in proc.stdout:
            line = raw.decode(errors="replace").strip()
            if line:
                count += 1
                if len(lines) < keep:
                    lines.append(line[:500])
        proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    proc.stderr_text = tail.text()
    if expired.is_set():
        raise subprocess.TimeoutExpired(cmd[0], timeout)
    return proc, count, lines
