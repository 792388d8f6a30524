"""Physical restore and point-in-time recovery.

    restore(latest|ID, DIR, target) ─ select the base for the target ─ fetch the chain
        ─ extract each part (streamed, path-safe, sha256 against the signed manifest)
        ─ pg_combinebackup (incrementals; hard links where the tools allow)
        ─ pg_verifybackup against the server's backup_manifest
        ─ recovery settings: restore_command = bvh-ops wal-fetch (configured from a file the
          restore writes), the target, recovery_target_action = promote, archive_mode = off
        ─ optionally start it and wait until it has recovered and promoted.

The restored cluster never archives into the source's repository unless asked (``archive``).
When anything fails, the directory we created is removed: no half-restored data directory
is left behind looking usable.
"""

from __future__ import annotations

import codecs
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bvh_ops.children import die_with_parent
from bvh_ops.config import Settings
from bvh_ops.errors import BvhOpsError, ConfigError, IntegrityError, NotFound, ToolError
from bvh_ops.keys import load_identities
from bvh_ops.pg.cluster import (
    PG_OS_USER,
    _as_root,
    chown_to_server,
    chown_tree_to_server,
    free_port,
    grant_traverse,
    postmaster_alive,
    prepare_server_user,
    server_env,
    server_ids,
    wal_command,
)
from bvh_ops.pg.lsn import format_lsn, parse_lsn
from bvh_ops.pg.physinfo import PhysicalInfo
from bvh_ops.pg.tarscan import MANIFEST_NAME, TarGuard, TarScanner, crc32c_combine, parse_backup_manifest
from bvh_ops.pg.tools import StderrTail, embedded_bin_dir, matching_bin_dir, raise_for_tool, tool_path
from bvh_ops.physical.backup import BASE_OBJECT, chain_of
from bvh_ops.physical.target import RecoveryTarget, parse_time, select_backup
from bvh_ops.repository.manifest import Manifest
from bvh_ops.repository.open import open_repository
from bvh_ops.repository.repo import Repository, object_key
from bvh_ops.repository.verify import preflight
from bvh_ops.results import StepTimer
from bvh_ops.stream import DecryptingReader, HashingReader, ReadAhead, envelopes_from_json, widen_pipe

log = logging.getLogger("bvh_ops.physical.restore")

RECOVERY_DIR = "bvh_ops_recovery"  # inside the data directory; removed after promotion
PREFETCH_DIR = "prefetch"  # in RECOVERY_DIR: segments read ahead (bvh_ops.walcmd)
_SAFE_PATH = re.compile(r"^[A-Za-z0-9_./+-]+$")


class RecoveryError(IntegrityError):
    """Recovery did not reach its target (an integrity failure: exit code 8)."""


def _extract(repo: Repository, m: Manifest, dest: Path, identities, steps: StepTimer | None = None) -> None:
    """Fetch, decrypt and extract one part of a chain into ``dest`` (``steps``: busy seconds of
    each stage: store_read, decrypt (and decompress), tar_feed (the guard and the pipe to GNU
    tar), tar_finish; the first two run on a thread of their own, the others on this one)."""
    steps = steps if steps is not None else StepTimer()
    entry = next((o for o in m.objects if o.name == BASE_OBJECT), None)
    if entry is None:
        raise NotFound(f"backup {m.backup_id} has no {BASE_OBJECT}")
    # Before any byte lands in ``dest``: size (and sha256 when small) against the signed
    # manifest; then every segment is authenticated before it is used, and every tar header is
    # checked (files and directories only, inside ``dest``) before GNU tar sees it.
    preflight(repo, m.backup_id, entry)
    tar = gnu_tar()
    dest.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = object_key(m.backup_id, entry)
    body = repo.store.open_reader(key)
    try:
        timed = _TimedReader(body, steps, "store_read")
        hashing = HashingReader(_TimedReader(DecryptingReader(timed, identities, bind=key,
                                                              envelopes=envelopes_from_json(entry.envelopes)),
                                             steps, "decrypt", minus=timed), threaded=True,
                                alg=entry.plaintext_digest[0])
        _untar_with_gnu_tar(tar, hashing, dest, TarGuard(), steps)
        hashing.drain()
    except BvhOpsError as exc:
        raise type(exc)(f"backup {m.backup_id}, object {BASE_OBJECT}: {exc}") from None
    finally:
        body.close()
    if hashing.sha.hexdigest() != entry.plaintext_digest[1]:
        raise IntegrityError(f"backup {m.backup_id}: restored tar differs from the manifest (tampered?)")
    _empty_dirs(dest)


def _empty_dirs(dest: Path) -> None:
    """The directories pg_basebackup leaves out of the tar (or empty) that a server needs."""
    for sub in ("pg_replslot", "pg_tblspc", "pg_notify", "pg_serial", "pg_snapshots", "pg_stat_tmp", "pg_subtrans"):
        (dest / sub).mkdir(exist_ok=True, mode=0o700)


def gnu_tar() -> str:
    """GNU tar (restores extract in it); one clear line when it is missing."""
    tar = shutil.which("tar")
    if tar:
        proc = subprocess.run([tar, "--version"], capture_output=True)
        if b"GNU tar" in proc.stdout:
            return tar
    raise ToolError("GNU tar is needed to restore a physical backup and was not found on PATH: install it "
                    "(Debian: apt install tar)")


def _untar_with_gnu_tar(tar: str, source, dest: Path, guard: TarScanner, steps: StepTimer) -> None:
    """Read and decrypt on a thread (ReadAhead, a few MiB ahead), extract in GNU tar (C, its own
    process): the two cores both work. Each chunk goes through ``guard`` first, so a link or a
    path leaving ``dest`` is refused before GNU tar sees its header; GNU tar itself also refuses
    '..' members and strips leading '/'."""
    proc, err = _spawn_tar(tar, dest)
    ahead = ReadAhead(source, chunk=1 << 20, depth=4)
    chunks = iter(ahead)
    try:
        for chunk in chunks:
            with steps("tar_feed"):
                guard.feed(chunk)
                proc.stdin.write(chunk)
        proc.stdin.close()
    except BrokenPipeError:
        for _ in chunks:  # GNU tar stopped at the end-of-archive blocks: the rest is still read (hashed)
            pass
    except BaseException:
        ahead.close()
        proc.kill()
        proc.wait()
        raise
    with steps("tar_finish"):
        rc = proc.wait()
    if rc != 0:
        raise_for_tool("tar", rc, err.text())


def prepared_part(directory: Path, backup_id: str) -> Path:
    """Where a drill's deep verify leaves backup ``backup_id``'s base extracted (PreparedExtract)
    in its scratch directory, for ``restore_physical(prepared=directory)``."""
    return Path(directory) / f"bvh-base-{backup_id}"


class PreparedExtract:
    """A deep verify's sink (bvh_ops.repository.verify, ``keep``) for a physical backup's
    base.tar: the plaintext, as the verify decrypts and checks it, extracted the way the
    restore's own fetch does (every tar header through TarGuard before GNU tar sees it) into
    ``<part>.partial``, renamed to ``prepared_part(directory, backup_id)`` only at ``commit()``
    — called once the object verified (stored sha256, every segment authenticated and bound to
    its name, plaintext digest and size). ``restore_physical(prepared=directory)`` takes that
    part as it is: a drill decrypts each base once, not twice. A local failure (tar, a member
    the guard refuses, the disk) only drops the extraction: the restore then fetches that
    object itself (and refuses what the guard refuses there), and the verification never
    depends on it. The plaintext goes to GNU tar through a feeder thread (``DEPTH`` chunks
    queued): the verify decrypts and hashes the next chunk while tar writes the last."""

    DEPTH = 4

    def __init__(self, directory: Path, backup_id: str, *, flush: bool = False) -> None:
        import queue
        import threading

        self.path = prepared_part(directory, backup_id)
        self._tmp = self.path.with_name(self.path.name + ".partial")
        self.dropped: str | None = None
        self._guard = TarGuard()
        self._proc: subprocess.Popen | None = None
        self._q: queue.Queue = queue.Queue(maxsize=self.DEPTH)
        self._feeder = threading.Thread(target=self._feed, name="bvh-extract", daemon=True)
        self._lock = threading.Lock()
        self._flusher: Flusher | None = None
        try:
            for stale in (self._tmp, self.path):  # an earlier attempt's (or a link: removed, not followed)
                _discard(stale)
            self._tmp.mkdir(parents=True, mode=0o700)
            self._proc, self._err = _spawn_tar(gnu_tar(), self._tmp)
        except (OSError, BvhOpsError) as exc:
            self._fail(f"cannot extract: {exc}")
            self._remove()
            return
        self._feeder.start()
        if flush:  # as the restore's own extraction of a lone full: written out behind the work
            self._flusher = Flusher(self._tmp).start()

    def write(self, chunk: bytes) -> None:
        if self.dropped is None:
            self._q.put(chunk)

    def _feed(self) -> None:
        ended = False  # GNU tar stopped reading at the end-of-archive blocks: the rest is not its
        while (chunk := self._q.get()) is not None:
            if ended or self.dropped is not None:
                continue
            try:
                self._guard.feed(chunk)
                self._proc.stdin.write(chunk)
            except BrokenPipeError:
                ended = True
            except Exception as exc:  # noqa: BLE001 - the extraction only saves time: whatever fails drops it
                self._fail(exc)

    def commit(self) -> None:
        rc = self._finish()
        try:
            if self.dropped is None and rc:
                raise_for_tool("tar", rc, self._err.text())
            if self.dropped is None:
                _empty_dirs(self._tmp)
                os.replace(self._tmp, self.path)
                return
        except Exception as exc:  # noqa: BLE001 - the extraction only saves time: whatever fails drops it
            self._fail(exc)
        self._remove()

    def abort(self) -> None:
        self._fail("the object did not verify")
        self._finish()
        self._remove()

    def _fail(self, why) -> None:
        """Drop the extraction (from either thread): the first reason is kept, tar is stopped."""
        with self._lock:
            self.dropped = self.dropped or str(why)
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()  # a feeder blocked on the pipe gets BrokenPipeError

    def _finish(self) -> int | None:
        """The feeder done with what was queued, tar's input closed: tar's exit code."""
        if self._feeder.is_alive():
            self._q.put(None)
            self._feeder.join()
        rc = None
        if self._proc is not None:
            try:
                self._proc.stdin.close()
            except OSError:
                pass
            rc = self._proc.wait()
        if self._flusher is not None:  # what is left, the restore's writes out (the part is renamed)
            self._flusher.stop()
        return rc

    def _remove(self) -> None:
        _discard(self._tmp)
        _discard(self.path)


def _discard(path: Path) -> None:
    """Remove ``path`` whatever it is; a symbolic link itself, never what it points to."""
    try:
        if path.is_symlink() or not path.is_dir():
            path.unlink(missing_ok=True)
            return
    except OSError:
        return
    shutil.rmtree(path, ignore_errors=True)


def _taken_part(path: Path) -> bool:
    """Is ``path`` a part PreparedExtract left: a real directory (not a link to one), ours?"""
    import stat

    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid()


def _spawn_tar(tar: str, dest: Path) -> tuple[subprocess.Popen, StderrTail]:
    """GNU tar extracting its stdin (a widened pipe) into ``dest``, and its stderr drained on a
    thread (a tar that complains per file, e.g. on a full disk, must not block on a full pipe
    while we block writing to it)."""
    # 1 MiB records read whole from the pipe (-b 2048 -B), not GNU tar's default 10 KiB reads: a
    # hundred times fewer system calls on each side of the pipe (1.6 GB: 5.4 s -> 4.0 s here).
    proc = subprocess.Popen([tar, "-x", "-f", "-", "-b", "2048", "-B", "-C", str(dest), "--no-same-owner",
                             "--delay-directory-restore"],
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/", preexec_fn=die_with_parent())
    widen_pipe(proc.stdin.fileno())
    err = StderrTail(proc.stderr)
    err.start()
    return proc, err


def _write_recovery_files(settings: Settings, data: Path, identity_copy: bool, segment_size: int,
                          system_identifier: str, standby: bool = False) -> str:
    """The configuration wal-fetch reads when PostgreSQL runs it; returns restore_command."""
    rdir = data / RECOVERY_DIR
    rdir.mkdir(mode=0o700, exist_ok=True)
    identity = Path(settings.require_identity()).resolve()
    if identity_copy:
        # The server's OS user cannot read our identity file: a copy only it can read, removed
        # after promotion (or with the directory).
        copy = rdir / "identity.key"
        shutil.copyfile(identity, copy)
        copy.chmod(0o600)
        identity = copy
    toml = write_wal_config(settings, rdir / "bvh-ops.toml", rdir / "state", [f'identity = "{identity}"'])
    env = [f"BVH_OPS_CONFIG={toml}"]
    creds = write_aws_credentials(settings, rdir / "aws-credentials")
    if creds is not None:
        env.append(f"AWS_SHARED_CREDENTIALS_FILE={creds}")
    for path in (str(rdir), *(e.split("=", 1)[1] for e in env)):
        if not _SAFE_PATH.match(path):
            raise ConfigError(f"{path!r} has characters a restore_command cannot carry safely: restore into a plain path")
    spool = rdir / PREFETCH_DIR
    spool.mkdir(mode=0o700, exist_ok=True)
    (spool / "prefetch.json").write_text(json.dumps({"segment_size": segment_size, "depth": 8, "workers": 2,
                                                        "system_identifier": system_identifier,
                                                        "standby": standby}))
    return " ".join(env)


def write_wal_config(settings: Settings, path: Path, state_dir: Path, extra: list[str]) -> Path:
    """A 0600 bvh-ops.toml for a server-run wal command (fetch or push): the repository of
    ``settings`` with its S3 region and endpoint, ``state_dir``, plus the ``extra`` lines."""
    lines = [f'repository = "{settings.require_repository()}"', *extra,
             f'state_dir = "{state_dir}"', f's3_region = "{settings.s3_region}"']
    if settings.s3_endpoint_url:
        lines.append(f's3_endpoint_url = "{settings.s3_endpoint_url}"')
    if settings.aws_profile:  # e.g. the replica's (restore --from replica): the wal command must use it too
        lines.append(f'aws_profile = "{settings.aws_profile}"')
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


def write_aws_credentials(settings: Settings, path: Path) -> Path | None:
    """For an s3:// repository, the caller's AWS credentials (environment) in a 0600 shared-
    credentials file at ``path`` that a server-run command names (never in the command itself);
    None when there is nothing to write."""
    key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if not (settings.require_repository().startswith("s3://") and key and secret) or settings.aws_profile:
        return None  # a named profile is read from the usual AWS files
    text = f"[default]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n"
    if os.environ.get("AWS_SESSION_TOKEN"):
        text += f"aws_session_token = {os.environ['AWS_SESSION_TOKEN']}\n"
    path.write_text(text)
    path.chmod(0o600)
    return path


@dataclass
class RestoreReport:
    backup_id: str
    chain: list[str]
    data_dir: str
    target: str
    seconds: dict[str, float] = field(default_factory=dict)
    verified: str | None = None  # pg_verifybackup's verdict
    started: bool = False
    port: int | None = None
    recovered_to: dict[str, str | None] = field(default_factory=dict)
    os_user: str | None = None  # the restored server's OS user (when we run as root)
    wal_prefetched: list[str] = field(default_factory=list)  # segments read ahead before the start
    fetch_stages: dict[str, float] = field(default_factory=dict)  # busy seconds inside "fetch" (overlapping)
    recovery: dict[str, float | int | None] = field(default_factory=dict)  # recovery's phases (its log)
    prepared: list[str] = field(default_factory=list)  # parts the deep verify extracted (PreparedExtract)
    pg_ctl: str | None = None  # the pg_ctl of the server's major version (the one to start it with)

    def to_json(self) -> dict:
        return {"backup_id": self.backup_id, "chain": self.chain, "data_dir": self.data_dir, "target": self.target,
                "seconds": {k: round(v, 3) for k, v in self.seconds.items()}, "verified": self.verified,
                "started": self.started, "port": self.port, "recovered_to": self.recovered_to,
                "os_user": self.os_user, "wal_prefetched": len(self.wal_prefetched), "fetch_stages": self.fetch_stages,
                "recovery": self.recovery, "prepared": self.prepared, "pg_ctl": self.pg_ctl}


def restore_physical(settings: Settings, backup_id: str, target_dir: Path, *,
                     target: RecoveryTarget | None = None, start: bool = False, port: int | None = None,
                     archive: bool = False, verify: bool = True, conf_overrides: dict[str, str] | None = None,
                     recovery_timeout: float = 3600.0, os_user: str | None = None,
                     standby: bool = False, prepared: Path | None = None) -> RestoreReport:
    """Restore a physical backup (with its chain) into ``target_dir`` set up to recover to
    ``target``; with ``start`` also start it and wait until it has promoted. Read like its
    runbook: select, fetch, combine, verify, configure recovery, hand over, recover.

    ``standby``: a warm standby instead (standby.signal, no target, no promotion): it keeps
    fetching segments as they are archived until `bvh-ops failover` promotes it; with ``start``
    it is started and waited for until it has reached a consistent state.

    ``prepared`` (a drill's scratch directory, never a production host's): a part of the chain
    its deep verify already extracted there (PreparedExtract: ``prepared_part``, present only
    once the object verified whole) is taken as it is instead of fetched and decrypted again;
    parts not there are fetched as always. Those parts are gone when this returns."""
    target = target or RecoveryTarget()
    if standby and target.kind is not None:
        raise ConfigError("a standby follows the archive to its end: it takes no recovery target")
    repo, _ = open_repository(settings, check=False)
    # Select: the newest base the target can start from, and the chain it builds on.
    chosen = select_backup(repo, backup_id, target)
    chain = chain_of(repo, chosen)
    data = Path(target_dir).resolve()
    if data.exists() and any(data.iterdir()):
        raise BvhOpsError(f"{data} is not empty: restore into a new directory")
    identities = load_identities(settings.require_identity())
    bin_dir = matching_bin_dir(chosen.server_version_num // 10000, settings.pg_bin_dir) or embedded_bin_dir()
    report = RestoreReport(chosen.backup_id, [m.backup_id for m in chain], str(data), target.describe(),
                           pg_ctl=str(tool_path("pg_ctl", bin_dir)))
    created = not data.exists()
    work = data.parent / f".{data.name}.bvh-chain"
    early = WalPrefill(settings, chosen, data.parent / f".{data.name}.bvh-wal") if start else None
    flusher = Flusher(data)
    try:
        # Read ahead: the first WAL segments recovery will ask for, fetched and checked on two
        # threads while the base is extracted and verified (each would otherwise cost recovery a
        # restore_command process that downloads, decrypts and checks it).
        if early is not None:
            early.begin()
        # Fetch and combine: every part checked before it lands; incrementals combined by
        # PostgreSQL's own tool (hard links where it can: no second copy on disk).
        _fetch_and_combine(repo, chain, data, work, identities, bin_dir, report, flusher, prepared)
        data.chmod(0o700)
        # Verify: pg_verifybackup against the server's own backup_manifest.
        if verify:
            _verifybackup(data, bin_dir, report)
        # Configure recovery: restore_command through wal-fetch, the target, promote; the
        # recovery directory removes itself when recovery ends.
        _configure_recovery(settings, chosen, data, target, archive=archive, port=port, start=start,
                            overrides=conf_overrides, report=report, standby=standby)
        if early is not None:  # the segments read ahead go where wal-fetch looks first
            report.seconds["wal_prefetch_wait"] = early.hand_over(data / RECOVERY_DIR / PREFETCH_DIR)
            report.wal_prefetched = early.delivered
        # Hand over: the server's OS user owns the directory (the archive's owner when we are root).
        if _as_root():
            report.os_user = os_user or archive_owner(settings)
            prepare_server_user(data.parent, user=report.os_user)
            grant_traverse(data)  # o+x on each parent: the server's OS user must reach it
            chown_tree_to_server(data, user=report.os_user)
        # Recover: start, wait for promotion, and check it replayed as far as the archive goes.
        if start and standby:
            t3 = time.monotonic()
            start_standby(data, bin_dir, timeout=recovery_timeout)
            report.started = True
            report.seconds["start"] = time.monotonic() - t3
        elif start:
            _recover(repo, chosen, target, data, bin_dir, recovery_timeout, report)
        return report
    except BaseException:
        flusher.stop()
        # Nothing half-restored that looks usable stays behind.
        if start:
            stop_server(data, bin_dir)
        if created:
            shutil.rmtree(data, ignore_errors=True)
        elif data.exists():
            for child in data.iterdir():
                shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink()
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
        for m in chain if prepared is not None else ():
            _discard(prepared_part(prepared, m.backup_id))
        if early is not None:
            early.discard()
        flusher.stop()  # long done after a recovery; else the final pass ends here
        report.fetch_stages["flush_fsync"] = round(flusher.seconds, 3)


class Flusher:
    """Write the restored files to disk while the CPU-bound work goes on (decrypting, extracting,
    pg_verifybackup): a thread that every ``PERIOD`` fsyncs the files under ``root`` that grew
    since it last did (a file being written is written out in steps, not all at the end), and,
    once ``finish()`` is called, every file not synced at its final size, and the directories. A
    restored server starts with a crash recovery, whose first act is to fsync the whole data
    directory (PostgreSQL's SyncDataDirectory): with the data already on disk that is quick,
    instead of the whole base's write-out after the start. Durability is PostgreSQL's either way."""

    PERIOD = 0.5

    def __init__(self, root: Path) -> None:
        import threading

        self.root = root
        self._synced: dict[str, int] = {}  # path -> size when it was last fsynced
        self._finishing = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bvh-flush", daemon=True)
        self.seconds = 0.0  # time spent in fsync

    def start(self) -> Flusher:
        self._thread.start()
        return self

    def finish(self) -> None:
        """Extraction is over: sync everything left (still on the thread)."""
        self._finishing.set()

    def stop(self) -> None:
        """Abandon what is left (a failed restore) and wait for the thread; a no-op once it is done."""
        if self._thread.is_alive():
            self._stop.set()
            self._finishing.set()
            self._thread.join(timeout=60)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                last = self._finishing.wait(self.PERIOD)
                self._pass(final=last)
                if last:
                    return
        except OSError:
            return  # PostgreSQL's own sync at start-up still covers everything

    def _pass(self, *, final: bool) -> None:
        for dirpath, _dirs, filenames in os.walk(self.root):
            for name in filenames:
                if self._stop.is_set():
                    return
                path = os.path.join(dirpath, name)
                try:
                    size = os.stat(path).st_size
                except FileNotFoundError:
                    continue
                if self._synced.get(path) != size:
                    self._fsync(path)
                    self._synced[path] = size
            if final:
                self._fsync(dirpath)

    def _fsync(self, path: str) -> None:
        t0 = time.monotonic()
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
            self.seconds += time.monotonic() - t0


class _TimedReader:
    """``read`` of ``inner``, its seconds added to ``steps[name]`` (less those of ``minus``, a
    _TimedReader it reads through: decrypt's own time without the store's)."""

    def __init__(self, inner, steps: StepTimer, name: str, minus: _TimedReader | None = None) -> None:
        self.inner, self.steps, self.name, self.minus = inner, steps, name, minus
        self.seconds = 0.0

    def read(self, n: int = -1) -> bytes:
        t0 = time.monotonic()
        before = self.minus.seconds if self.minus is not None else 0.0
        data = self.inner.read(n)
        spent = time.monotonic() - t0
        self.seconds += spent
        self.steps.add(self.name, spent - ((self.minus.seconds - before) if self.minus is not None else 0.0))
        return data


class WalPrefill:
    """The first ``DEPTH`` WAL segments from a base's start segment (its timeline), fetched and
    checked by wal_fetch (bound name, plaintext digest, first page, cluster) on two threads into
    a directory beside the data directory (pg_verifybackup must not see it), then moved into the
    recovery directory's read-ahead spool, where the restore_command takes them first."""

    DEPTH, WORKERS = 8, 2

    def __init__(self, settings: Settings, base: Manifest, spool: Path) -> None:
        self.settings, self.base, self.spool = settings, base, spool
        self.delivered: list[str] = []
        self._pool = None
        self._futures: list = []

    def begin(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        from bvh_ops.pg.lsn import segment_name

        info = PhysicalInfo.of(self.base)
        shutil.rmtree(self.spool, ignore_errors=True)
        self.spool.mkdir(mode=0o700)
        names = [segment_name(info.timeline, info.start_segno + i, info.segment_size) for i in range(self.DEPTH)]
        self._pool = ThreadPoolExecutor(max_workers=self.WORKERS, thread_name_prefix="bvh-wal-prefill")
        self._futures = [(n, self._pool.submit(self._one, n)) for n in names]

    def _one(self, name: str) -> bool:
        from bvh_ops.wal.store import wal_fetch

        try:
            wal_fetch(self.settings, name, str(self.spool / name), system_identifier=self.base.system_identifier)
            return True
        except BvhOpsError:
            return False  # not archived or damaged: recovery's own fetch says which

    def hand_over(self, dest: Path) -> float:
        """Wait for the fetches still running, move what arrived into ``dest``; the seconds waited."""
        t0 = time.monotonic()
        for name, fut in self._futures:
            if fut.result() and (self.spool / name).is_file():
                os.replace(self.spool / name, dest / name)
                self.delivered.append(name)
        return time.monotonic() - t0

    def discard(self) -> None:
        if self._pool is not None:
            for _, fut in self._futures:
                fut.cancel()
            self._pool.shutdown(wait=True)
        shutil.rmtree(self.spool, ignore_errors=True)


def _fetch_and_combine(repo: Repository, chain: list[Manifest], data: Path, work: Path, identities,
                       bin_dir: Path, report: RestoreReport, flusher: Flusher, prepared: Path | None = None) -> None:
    """Extract the chain's parts (into ``data`` when it is one full backup), combine them, and
    have ``flusher`` write the data directory to disk behind the work (finished on its thread).
    A part found extracted and verified in ``prepared`` is used as it is (``report.prepared``)."""
    t0 = time.monotonic()
    steps = StepTimer()
    ready = [prepared_part(prepared, m.backup_id) if prepared is not None else None for m in chain]
    ready = [p if p is not None and _taken_part(p) else None for p in ready]  # what the verify's rename left
    report.prepared = [m.backup_id for m, p in zip(chain, ready, strict=True) if p is not None]
    if len(chain) == 1:
        if ready[0] is not None:  # the verify's extraction becomes the data directory
            if data.exists():
                data.rmdir()  # empty: checked above
            os.replace(ready[0], data)
            flusher.start().finish()
        else:
            flusher.start()
            _extract(repo, chain[0], data, identities, steps)
            flusher.finish()
        report.seconds["fetch"] = time.monotonic() - t0
        report.fetch_stages = steps.seconds
        return
    shutil.rmtree(work, ignore_errors=True)
    parts = []
    for i, (m, part) in enumerate(zip(chain, ready, strict=True)):
        if part is None:
            part = work / f"{i:02d}"
            _extract(repo, m, part, identities, steps)
        parts.append(str(part))
    report.seconds["fetch"] = time.monotonic() - t0
    report.fetch_stages = steps.seconds
    t1 = time.monotonic()
    if data.exists():
        data.rmdir()
    args = ["-o", str(data), "--no-sync"]
    if chain[-1].server_version_num // 10000 >= 18:
        args.append("--link")  # hard links: no second copy of the data on disk
    proc = subprocess.run([tool_path("pg_combinebackup", bin_dir), *args, *parts], capture_output=True,
                          preexec_fn=die_with_parent())
    if proc.returncode != 0:
        raise_for_tool("pg_combinebackup", proc.returncode, proc.stderr.decode(errors="replace"))
    flusher.start().finish()
    report.seconds["combine"] = time.monotonic() - t1


def _verifybackup(data: Path, bin_dir: Path, report: RestoreReport) -> None:
    """pg_verifybackup's checks of the restored directory. Where every file's checksum is
    CRC32C (pg_basebackup's default), its checksum pass — every byte read back and checked
    against the backup_manifest, one thread — runs here on two threads (CRC32C and reads
    release the GIL) while ``pg_verifybackup --skip-checksums`` makes the rest of its checks
    (the manifest's own checksum, every file present at its size and none extra, the WAL)."""
    t2 = time.monotonic()
    files = _crc32c_files(data)
    cmd = [tool_path("pg_verifybackup", bin_dir), "--quiet", *(["--skip-checksums"] if files else []), str(data)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=die_with_parent())
    try:
        damaged = check_crc32c(data, files) if files else []
    finally:
        stderr = proc.communicate()[1]
    if proc.returncode != 0:
        lines = stderr.decode(errors="replace").strip().splitlines()
        raise IntegrityError(f"pg_verifybackup: {' '.join(lines[-3:])}")
    if damaged:
        raise IntegrityError(f"restored files differ from the backup_manifest: {'; '.join(damaged[:5])}"
                             f"{' …' if len(damaged) > 5 else ''}")
    report.verified = "pg_verifybackup: backup successfully verified" + (
        " (its CRC32C pass here, on two threads)" if files else "")
    report.seconds["verify"] = time.monotonic() - t2


def _crc32c_files(data: Path) -> list[tuple[str, int, str]]:
    """(path, size, CRC32C hex) of every file in ``data``'s backup_manifest, or [] when the
    manifest cannot be read here or any file has another checksum (pg_verifybackup checks all)."""
    try:
        doc = parse_backup_manifest((data / MANIFEST_NAME).read_bytes())
        files = [(f["Path"], int(f["Size"]), str(f["Checksum"])) for f in doc["Files"]
                 if f.get("Checksum-Algorithm") == "CRC32C"]
        return files if len(files) == len(doc["Files"]) else []
    except (OSError, IntegrityError, KeyError, TypeError, ValueError):
        return []  # pg_verifybackup reports it


CRC_PIECE = 64 << 20  # a file larger than this is checked in pieces, on both threads


def check_crc32c(root: Path, files: list[tuple[str, int, str]], threads: int = 2) -> list[str]:
    """Read every file back and compare its size and CRC32C with ``files`` (a backup_manifest's):
    what pg_verifybackup's checksum pass does, on ``threads`` threads (a large file in pieces,
    their checksums combined: a 1 GiB relation segment is most of a base). Returns the problems."""
    from concurrent.futures import ThreadPoolExecutor

    import crc32c

    problems: list[str] = []
    pieces: list[tuple[str, int, int]] = []  # (path, offset, length)
    for path, size, _ in files:
        try:
            on_disk = os.stat(root / path).st_size
        except OSError as exc:
            problems.append(f"{path}: {exc.strerror}")
            continue
        if on_disk != size:
            problems.append(f"{path}: {on_disk} bytes, the manifest says {size}")
            continue
        pieces += [(path, off, min(CRC_PIECE, size - off)) for off in range(0, size, CRC_PIECE)] or [(path, 0, 0)]

    def piece_crc(piece: tuple[str, int, int]) -> int | str:
        path, off, length = piece
        buf = bytearray(min(length, 1 << 20) or 1)
        crc = got = 0
        try:
            with open(root / path, "rb", buffering=0) as fh:
                fh.seek(off)
                while got < length and (n := fh.readinto(buf)):
                    n = min(n, length - got)
                    with memoryview(buf)[:n] as view:
                        crc = crc32c.crc32c(view, crc)
                    got += n
        except OSError as exc:
            return f"{path}: {exc.strerror}"
        return crc if got == length else f"{path}: shorter than the manifest says (changed while read)"

    largest_first = sorted(pieces, key=lambda p: -p[2])
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="bvh-crc32c") as pool:
        results = dict(zip(largest_first, pool.map(piece_crc, largest_first), strict=True))
    expected = {path: crc for path, _, crc in files}
    whole: dict[str, int | str] = {}
    for (path, _off, length), crc in sorted(results.items()):  # each file's pieces in order
        prev = whole.get(path, 0)  # the CRC32C of nothing is 0
        if not isinstance(prev, str):  # a piece that failed decides the file
            whole[path] = crc if isinstance(crc, str) else crc32c_combine(prev, crc, length)
    for path, crc in whole.items():
        if isinstance(crc, str):
            problems.append(crc)
        elif crc.to_bytes(4, "little").hex() != expected[path]:
            problems.append(f"{path}: CRC32C differs from the manifest")
    return sorted(problems)


def _configure_recovery(settings: Settings, chosen: Manifest, data: Path, target: RecoveryTarget, *,
                        archive: bool, port: int | None, start: bool, overrides: dict[str, str] | None,
                        report: RestoreReport, standby: bool = False) -> None:
    env = _write_recovery_files(settings, data, identity_copy=_as_root(),
                                segment_size=PhysicalInfo.of(chosen).segment_size,
                                system_identifier=chosen.system_identifier, standby=standby)
    conf = {"restore_command": f"'{env} {wal_command()} fetch %f %p'",
            # The recovery directory (config, identity copy, credentials) goes the moment
            # recovery ends, whoever starts the server (a standby's: at its promotion, not before).
            "recovery_end_command": f"'{env} {wal_command()} cleanup'",
            # Nobody connects while the identity copy exists: no read-only sessions during
            # recovery (a superuser could read any file the server's OS user can).
            "hot_standby": "'off'",
            "recovery_target_action": "'promote'",
            "recovery_target_timeline": "'latest'", **target.conf()}
    if chosen.server_version_num >= 140000 and sys.platform == "linux":
        # The restored server starts with a crash recovery that first syncs the data directory;
        # the Flusher has written it out behind the extraction, and one syncfs() confirms that
        # instead of an fsync() per file (1,459 files: 2.1 s on this machine, clean or not).
        conf["recovery_init_sync_method"] = "'syncfs'"
    if standby:
        del conf["recovery_target_action"]  # a standby waits for more WAL; failover promotes it
    if not archive:
        conf["archive_mode"] = "'off'"  # never archive into the source's repository
    if start or port:
        report.port = port or free_port()
        # TCP on 127.0.0.1 only, no Unix socket (nothing world-writable left in /tmp).
        conf.update({"port": str(report.port), "listen_addresses": "'127.0.0.1'", "unix_socket_directories": "''"})
    conf.update(overrides or {})
    with open(data / "postgresql.auto.conf", "a") as fh:
        fh.write(f"\n# bvh-ops restore of {chosen.backup_id} to {target.describe()}\n")
        for key, value in conf.items():
            fh.write(f"{key} = {value}\n")
    (data / ("standby.signal" if standby else "recovery.signal")).touch()


def _recover(repo: Repository, chosen: Manifest, target: RecoveryTarget, data: Path, bin_dir: Path,
             timeout: float, report: RestoreReport) -> None:
    from bvh_ops.wal.archive import wal_continuity

    # Where the archive ends, taken before the start (to the end of the archive only).
    archive_end = wal_continuity(repo.store, chosen) if target.kind is None else None
    t3, wall = time.monotonic(), time.time()
    text = _start_and_wait(data, bin_dir, timeout, _promoted(data), "recovery did not finish")
    report.recovered_to = _recovered_to(text)
    report.started = True
    report.seconds["recover"] = time.monotonic() - t3
    report.recovery = recovery_phases(text, wall, time.time())
    shutil.rmtree(data / RECOVERY_DIR, ignore_errors=True)
    if archive_end is not None:
        problem = ended_early(report.recovered_to.get("redo_done_at"), archive_end,
                              PhysicalInfo.of(chosen).segment_size)
        if problem:
            raise RecoveryError(f"{problem} (log: {recovery_log(data)})")


def archive_owner(settings: Settings) -> str:
    """The OS user a restored server runs as (when we are root): the owner of a file://
    repository's wal/ directory — the source server's OS user, who archived it with files only it
    can read — else the embedded server's user."""
    import pwd

    repo = settings.require_repository()
    if repo.startswith("file://"):
        wal = Path(repo[len("file://"):]) / "wal"
        try:
            uid = wal.stat().st_uid
            if uid != 0:
                return pwd.getpwuid(uid).pw_name
        except (OSError, KeyError):
            pass
    return PG_OS_USER


def ended_early(redo_done_at: str | None, archive, seg_size: int) -> str | None:
    """A recovery to the end of the archive must replay into its last (or next-to-last: a record
    may span into a segment not yet archived) contiguous segment. Ending before that means a
    segment could not be replayed (swapped, damaged in a way its checksums did not show): named."""
    if archive.end_lsn is None or archive.contiguous_until is None:
        return None
    if redo_done_at is None:
        return (f"recovery did not report where redo ended; the archive reaches {archive.contiguous_until}: "
                "cannot confirm it replayed the archived WAL")
    done = parse_lsn(redo_done_at)
    if done >= archive.end_lsn - 2 * seg_size:
        return None
    from bvh_ops.pg.lsn import segment_name

    tl = archive.timelines[-1] if archive.timelines else 1
    stuck = segment_name(tl, done // seg_size + 1, seg_size)
    return (f"recovery ended early at {redo_done_at}, but the archive continues to {archive.contiguous_until}: "
            f"segment {stuck} could not be replayed (swapped or damaged in the archive)")


def _server_user(data: Path) -> str:
    import pwd

    try:
        return pwd.getpwuid(Path(data).stat().st_uid).pw_name
    except (OSError, KeyError):
        return PG_OS_USER


def recovery_log(data: Path) -> Path:
    return data.parent / f"{data.name}.recovery.log"


def start_and_recover(data: Path, bin_dir: Path, *, timeout: float = 3600.0) -> dict[str, str | None]:
    """Start the restored server and wait until recovery has reached its target and promoted
    (PostgreSQL removes recovery.signal then). Raises RecoveryError with the server's reason."""
    return _recovered_to(_start_and_wait(data, bin_dir, timeout, _promoted(data), "recovery did not finish"))


def _promoted(data: Path):
    return lambda log: "database system is ready to accept connections" in log and \
        not (data / "recovery.signal").exists()


_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) ([A-Z]{2,5})\b.*?(?:LOG|FATAL):  (.*)$", re.M)
_PHASES = (("redo_start", "redo starts at"), ("consistent", "consistent recovery state reached"),
           ("redo_done", "redo done at"), ("ready", "database system is ready to accept connections"))


def recovery_phases(text: str, started: float, noticed: float) -> dict[str, float | int | None]:
    """Where a recovery's seconds went, from the server's log (its default ``%m`` line prefix,
    times in the log's zone as the epoch ``started``/``noticed`` of our clock on the same host):
    ``to_redo`` start until redo begins (server start, the first WAL fetch), ``redo`` WAL fetched
    through restore_command and replayed up to the target (``redo_cpu``: the replaying process's
    own CPU, the rest is waiting for restore_command), ``promote`` end of recovery, new timeline
    and checkpoint until ready, ``noticed`` until we saw it; ``segments_restored`` and
    ``fetch_misses`` (asked, not in the archive). Pure; a phase the log does not show is None."""
    from datetime import UTC, datetime

    at: dict[str, float] = {}
    for stamp, zone, message in _LOG_LINE.findall(text):
        for key, marker in _PHASES:
            if key not in at and message.startswith(marker):
                try:
                    when = datetime.fromisoformat(stamp)
                except ValueError:
                    continue
                # UTC as written; another zone name is taken to be this host's (the server's).
                at[key] = (when.replace(tzinfo=UTC) if zone in ("UTC", "GMT") else when).timestamp()
    cpu = re.findall(r"redo done at .*?CPU: user: ([0-9.]+) s, system: ([0-9.]+) s", text)

    def span(a: float | None, b: float | None) -> float | None:
        return round(b - a, 3) if a is not None and b is not None else None

    return {"to_redo": span(started, at.get("redo_start")), "redo": span(at.get("redo_start"), at.get("redo_done")),
            "redo_cpu": round(float(cpu[-1][0]) + float(cpu[-1][1]), 3) if cpu else None,
            "promote": span(at.get("redo_done"), at.get("ready")), "noticed": span(at.get("ready"), noticed),
            "segments_restored": len(re.findall(r"restored log file \"[0-9A-F]{24}\" from archive", text)),
            "fetch_misses": text.count("is not in the archive")}


def start_standby(data: Path, bin_dir: Path, *, timeout: float = 3600.0) -> None:
    """Start a restored standby and wait until it has replayed to a consistent state (the base
    backup's end): from then on it only follows the archive. Raises RecoveryError with the
    server's reason when it stops instead."""
    _start_and_wait(data, bin_dir, timeout, lambda log: "entering standby mode" in log
                    and "consistent recovery state reached" in log, "the standby did not reach a consistent state")


def _start_and_wait(data: Path, bin_dir: Path, timeout: float, done, late: str) -> str:
    """pg_ctl start (as the data directory's owner, logging to recovery_log) and poll the log
    until ``done(log text)``; returns the log text."""
    logfile = recovery_log(data)
    logfile.write_text("")
    user = _server_user(data)
    chown_to_server(logfile, user)
    proc = subprocess.run([str(Path(bin_dir) / "pg_ctl"), "-D", str(data), "-l", str(logfile), "-W", "start"],
                          capture_output=True, cwd="/", env=server_env(), **server_ids(user))
    if proc.returncode != 0:
        raise RecoveryError(f"pg_ctl start failed: {proc.stderr.decode(errors='replace').strip()[-300:]}")
    started = time.monotonic()
    deadline = started + timeout
    seen_alive = False
    text, interval = "", POLL_MIN
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    with open(logfile, "rb") as fh:
        while True:
            text += decoder.decode(fh.read())  # what the server appended since the last look
            if done(text):
                return text
            alive = postmaster_alive(data)
            seen_alive = seen_alive or alive
            # Down after having run, or never up within 60 s: recovery failed; the log says why.
            if not alive and (seen_alive or "database system is shut down" in text or time.monotonic() - started > 60):
                text += decoder.decode(fh.read(), final=True)
                raise RecoveryError(_failure_reason(text, logfile))
            if time.monotonic() > deadline:
                stop_server(data, bin_dir)
                raise RecoveryError(f"{late} within {timeout:.0f} s (log: {logfile})")
            # Short looks first (promotion of a small recovery takes well under a second), then
            # at most every POLL_MAX: a long recovery is not read hundreds of times a second.
            time.sleep(interval)
            interval = min(interval * 1.5, POLL_MAX)


POLL_MIN, POLL_MAX = 0.02, 0.25  # seconds between two looks at the recovering server's log


def stop_server(data: Path, bin_dir: Path) -> None:
    if postmaster_alive(data):
        subprocess.run([str(Path(bin_dir) / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True, cwd="/", env=server_env(), **server_ids(_server_user(data)))


def _recovered_to(text: str) -> dict[str, str | None]:
    def last(pattern: str) -> str | None:
        found = re.findall(pattern, text)
        return found[-1] if found else None

    return {
        "stopped_at": last(r"recovery stopping (?:before|after) [^\n]*?time ([0-9-]+ [0-9:.+\- A-Z]+)"),
        "last_transaction_at": last(r"last completed transaction was at log time ([0-9-]+ [0-9:.+]+)"),
        "redo_done_at": last(r"redo done at ([0-9A-F]+/[0-9A-F]+)"),
        "timeline": last(r"selected new timeline ID: (\d+)"),
    }


def _failure_reason(text: str, logfile: Path) -> str:
    fatal = [ln.split("FATAL:", 1)[1].strip() for ln in text.splitlines() if "FATAL:" in ln]
    fetch_errors = [ln.strip() for ln in text.splitlines()
                    if ln.startswith("error:") and "is not in the archive" not in ln]
    reason = fatal[-1] if fatal else "the server stopped during recovery"
    detail = f"; wal-fetch: {fetch_errors[-1][6:].strip()}" if fetch_errors else ""
    if "recovery ended before configured recovery target was reached" in reason:
        named = re.findall(r'starting point-in-time recovery to "([^"]*)"', text)
        reason = ("recovery ended before the target was reached: the WAL it needs is missing or damaged in the "
                  "archive" + (f", or restore point {named[-1]!r} is older than this backup or does not exist "
                               "(give an older backup id)" if named else ""))
    return f"{reason}{detail} (log: {logfile})"


def validate_target(settings: Settings, backup_id: str, target: RecoveryTarget) -> dict:
    """Is ``target`` reachable with the base backups and the WAL in the repository? If not,
    the latest reachable point. Time targets are judged by when PostgreSQL last wrote each
    archived segment (approximate); name targets only by the WAL's extent."""
    from bvh_ops.wal.archive import wal_continuity

    repo, _ = open_repository(settings, check=False)
    try:
        base = select_backup(repo, backup_id, target)
    except NotFound as exc:
        return {"reachable": False, "target": target.describe(), "reason": str(exc)}
    report = wal_continuity(repo.store, base)
    stop_lsn = PhysicalInfo.of(base).required_stop_lsn()
    end_lsn = max(stop_lsn, report.end_lsn or 0)
    latest = {"lsn": format_lsn(end_lsn), "time": report.end_time or base.finished_at}
    doc = {"target": target.describe(), "backup_id": base.backup_id, "chain": [m.backup_id for m in chain_of(repo, base)],
           "latest_reachable": latest, "wal": report.to_json()}
    if target.kind == "lsn":
        wanted = parse_lsn(target.value)
        reachable = stop_lsn <= wanted <= end_lsn
        reason = None if reachable else (
            f"backup {base.backup_id} is consistent only from {format_lsn(stop_lsn)}: an earlier point needs an "
            "earlier backup" if wanted < stop_lsn else f"WAL in the archive reaches {format_lsn(end_lsn)} only")
    elif target.kind == "time":
        reachable = parse_time(target.value) <= parse_time(latest["time"])
        reason = None if reachable else f"the archived WAL ends around {latest['time']}"
    elif target.kind == "name":
        # A restore point is a WAL record: whether it exists (and where) is known only by replaying
        # the WAL. Not judged, so not called reachable (the CLI exits 1, as for a check that could
        # not run).
        reachable = None
        reason = (f"restore point {target.value!r} cannot be judged without replaying the WAL (a name is found "
                  f"only during recovery; one that does not exist ends it at the end of the archive, LSN "
                  f"{latest['lsn']}): restore with --start to try it")
    else:
        reachable = True
        reason = None
    if report.missing or report.damaged:
        doc["gaps"] = report.summary()
    doc.update({"reachable": reachable, "reason": reason})
    return doc


__all__ = ["RecoveryTarget", "RecoveryError", "RestoreReport", "restore_physical", "validate_target",
           "select_backup", "start_and_recover", "start_standby", "stop_server", "PG_OS_USER", "PreparedExtract",
           "prepared_part"]
