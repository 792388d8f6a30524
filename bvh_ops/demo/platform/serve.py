"""Run the sample platform as its own process: ``serve_platform(dsn, host, port, log_path)``.

A subprocess rather than a thread: its memory and CPU are its own (the metrics it reports, and
the memory-growth fault, measure the platform, not the test runner or the demo), stopping it is
what stopping a service is (SIGTERM, uvicorn drains), and it cannot share locks or an event loop
with its caller. The listening socket is bound here and handed over by file descriptor, so port 0
means "any free port" without a race, and connections made before uvicorn is up simply wait in the
backlog. The DSN travels in the environment, never on the command line (``ps`` shows argv)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bvh_ops.children import die_with_parent
from bvh_ops.demo.platform.cache import DEFAULT_REDIS_URL
from bvh_ops.tls import default_context

DSN_ENV = "BVH_PLATFORM_DSN"


@dataclass
class PlatformHandle:
    url: str  # http://host:port
    process: subprocess.Popen
    log_path: Path  # the JSON log lines
    output_path: Path  # the process's own stdout/stderr
    _client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30, verify=default_context()), repr=False)

    def get(self, path: str) -> httpx.Response:
        return self._client.get(self.url + path)

    def set_faults(self, **faults: object) -> dict:
        """POST /admin/faults; no arguments clears every fault."""
        r = self._client.post(self.url + "/admin/faults", json=faults)
        r.raise_for_status()
        return r.json()

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        self._client.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __enter__(self) -> PlatformHandle:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def pid_file_of(log_path: str | Path) -> Path:
    """Where a platform serving ``log_path`` writes its pid (SIGUSR1 to it reopens the log):
    beside it, a dot file (platform.jsonl -> .platform.jsonl.writer), matched neither by a
    ``<log>*`` glob nor by the demo's own ``run/*.pid`` bookkeeping."""
    log_path = Path(log_path).resolve()
    return log_path.with_name(f".{log_path.name}.writer")


def serve_platform(dsn: str, host: str = "127.0.0.1", port: int = 0, log_path: str | Path = "platform.log", *,
                   cache_url: str | None = DEFAULT_REDIS_URL, window_s: float = 60.0,
                   slow_request_ms: float = 1000.0, ready_timeout: float = 120.0) -> PlatformHandle:
    """Start the platform and return once it answers ``/api/health`` (with any status: a platform
    whose database is down is up, and says so). Call it from a thread that outlives the platform
    (the main thread, a fixture): the kernel kills the child when its starting thread ends."""
    log_path = Path(log_path).resolve()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    output_path = log_path.with_name(log_path.name + ".out")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    bound_port = sock.getsockname()[1]
    argv = [sys.executable, "-m", "bvh_ops.demo.platform", "--fd", str(sock.fileno()),
            "--log-path", str(log_path), "--cache", cache_url or "memory", "--window", str(window_s),
            "--slow-request-ms", str(slow_request_ms), "--pid-file", str(pid_file_of(log_path))]
    env = {**os.environ, DSN_ENV: dsn}
    with open(output_path, "ab") as out:
        # The kernel kills the platform if the thread starting it dies (bvh_ops.children).
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   pass_fds=(sock.fileno(),), preexec_fn=die_with_parent())
    sock.close()
    url = f"http://{'[' + host + ']' if family == socket.AF_INET6 else host}:{bound_port}"
    handle = PlatformHandle(url, process, log_path, output_path)
    deadline = time.monotonic() + ready_timeout
    while True:
        if process.poll() is not None:
            tail = output_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the sample platform exited with {process.returncode}: {tail}")
        try:
            handle.get("/api/health")
            return handle
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            handle.stop()
            raise RuntimeError(f"the sample platform did not answer within {ready_timeout:.0f} s")
        time.sleep(0.05)
