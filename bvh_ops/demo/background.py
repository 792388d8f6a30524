"""What ``bvh-ops demo --keep-running`` leaves running after the demo: the sample platform, a
``bvh-ops monitor`` loop and the dashboard, each its own process in its own session (it outlives
the demo), tracked by a pid file under ``state_dir/run`` (``<name>.pid``: the pid and the
process's start time, so a pid the kernel has since given to another process is never signalled)
with its output in ``<name>.log``. ``bvh-ops demo --stop`` (and ``make clean``) stops them.

Without ``--keep-running`` nothing here is started: the demo's own platform is a child that dies
with it (bvh_ops.demo.platform.serve)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from bvh_ops.demo.platform.serve import DSN_ENV, pid_file_of

RUN_DIR = "run"
STOP_TIMEOUT = 15.0


@dataclass(frozen=True)
class Background:
    name: str
    pid: int
    url: str | None  # where it answers, when it serves HTTP


def run_dir(state: Path) -> Path:
    return state / RUN_DIR


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat, field 22); None when
    there is no such process (or no /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()[19]


def _alive(pid: int, started: str | None) -> bool:
    if started is not None and Path("/proc").is_dir():
        return _start_time(pid) == started and not _zombie(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2:].split()[0] == "Z"


def start(state: Path, name: str, argv: list[str], *, env: dict[str, str] | None = None,
          pass_fds: tuple[int, ...] = (), url: str | None = None) -> Background:
    """Start ``argv`` detached (a new session, stdin from /dev/null, output to ``<name>.log``) and
    record its pid file; one already running under ``name`` is stopped first."""
    stop(state, name)
    where = run_dir(state)
    where.mkdir(parents=True, exist_ok=True)
    with open(where / f"{name}.log", "ab") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                pass_fds=pass_fds, start_new_session=True, close_fds=True)
    pid_file = where / f"{name}.pid"
    pid_file.write_text(json.dumps({"pid": proc.pid, "started": _start_time(proc.pid), "url": url,
                                    "argv0": argv[:4]}) + "\n")
    # Not waited for here: it outlives this process (stop() reaps it where it is still our child).
    # Marked as handled so dropping the Popen object does not warn that it still runs.
    proc.returncode = 0
    return Background(name, proc.pid, url)


def tracked(state: Path) -> list[Background]:
    """The background processes recorded under ``state`` that still run."""
    out = []
    for pid_file in sorted(run_dir(state).glob("*.pid")):
        rec = _read(pid_file)
        if rec is not None and _alive(rec["pid"], rec.get("started")):
            out.append(Background(pid_file.stem, rec["pid"], rec.get("url")))
    return out


def _read(pid_file: Path) -> dict | None:
    try:
        rec = json.loads(pid_file.read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) and isinstance(rec.get("pid"), int) and rec["pid"] > 1 else None


def stop(state: Path, name: str | None = None, timeout: float = STOP_TIMEOUT) -> list[str]:
    """SIGTERM the recorded process(es) (``name``, or all), SIGKILL after ``timeout``; remove their
    pid files. Returns the names that were running and are stopped now."""
    stopped = []
    files = [run_dir(state) / f"{name}.pid"] if name else sorted(run_dir(state).glob("*.pid"))
    for pid_file in files:
        if not pid_file.exists():
            continue
        rec = _read(pid_file)
        if rec is not None and _alive(rec["pid"], rec.get("started")):
            _terminate(rec["pid"], rec.get("started"), timeout)
            stopped.append(pid_file.stem)
        pid_file.unlink(missing_ok=True)
    return stopped


def _terminate(pid: int, started: str | None, timeout: float) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pid)
        if not _alive(pid, started):
            return
        time.sleep(0.05)
    if _alive(pid, started):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        for _ in range(100):
            _reap(pid)
            if not _alive(pid, started):
                return
            time.sleep(0.05)


def _reap(pid: int) -> None:
    """Collect the exit status where the process is our own child (the test, or the demo
    stopping what it started a moment ago); otherwise init does."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def wait_http(url: str, *, timeout: float = 120.0, pid: int | None = None) -> None:
    """Return once ``url`` answers HTTP (any status); raise when it does not within ``timeout``
    or the process ``pid`` is gone."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(url, timeout=5)
            return
        except httpx.TransportError:
            pass
        if pid is not None:
            _reap(pid)
            if not _alive(pid, None):
                raise RuntimeError(f"{url}: the process {pid} exited before answering")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")
        time.sleep(0.1)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def start_platform(state: Path, dsn: str, *, host: str = "127.0.0.1", port: int = 0,
                   cache_url: str = "memory") -> Background:
    """The sample platform on ``host:port`` (0: a free port; the socket is bound here and handed
    over, so there is no race); the DSN travels in the environment, never in argv."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    url = f"http://{host}:{sock.getsockname()[1]}"
    try:
        bg = start(state, "platform", [sys.executable, "-m", "bvh_ops.demo.platform", "--fd", str(sock.fileno()),
                                       "--log-path", str(run_dir(state) / "platform.jsonl"), "--cache", cache_url,
                                       "--window", "60", "--pid-file", str(pid_file_of(run_dir(state) / "platform.jsonl"))],
                   env={**os.environ, DSN_ENV: dsn}, pass_fds=(sock.fileno(),), url=url)
    finally:
        sock.close()
    wait_http(url + "/api/health", pid=bg.pid)
    return bg


def platform_endpoints(platform_url: str) -> list[dict]:
    """The endpoints the kept-running monitor and dashboard probe (as the demo's own)."""
    return [{"name": "api-health", "service": "api", "url": platform_url + "/api/health",
             "conditions": ["[STATUS] == 200", "[BODY].status == healthy", "[RESPONSE_TIME] < 1000"]},
            {"name": "api-metrics", "service": "api", "url": platform_url + "/api/metrics",
             "conditions": ["[STATUS] == 200", "[BODY].system.errorRate < 1"]}]


def _cli_env(config: Path | None, platform_url: str, interval: float) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "BVH_OPS_ENDPOINTS"}
    if config is not None:
        env["BVH_OPS_CONFIG"] = str(config)
    env["BVH_OPS_ENDPOINTS"] = json.dumps(platform_endpoints(platform_url))
    env["BVH_OPS_MONITOR_INTERVAL_SECONDS"] = f"{interval:g}"
    return env


def start_monitor(state: Path, config: Path | None, platform_url: str, *, interval: float = 10.0) -> Background:
    return start(state, "monitor", [sys.executable, "-m", "bvh_ops.cli", "monitor"],
                 env=_cli_env(config, platform_url, interval))


def start_dashboard(state: Path, config: Path | None, platform_url: str, *, port: int | None = None,
                    interval: float = 10.0) -> Background:
    port = port or free_port()
    url = f"http://127.0.0.1:{port}/"
    bg = start(state, "dashboard", [sys.executable, "-m", "bvh_ops.cli", "dashboard", "--port", str(port)],
               env=_cli_env(config, platform_url, interval), url=url)
    wait_http(url + "api/health", pid=bg.pid)
    return bg
