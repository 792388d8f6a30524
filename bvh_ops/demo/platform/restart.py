"""``python -m bvh_ops.demo.platform.restart CONFIG RUN_DIR``: the sample platform's restart
procedure, what ``systemctl restart lottery-api`` is in production (the restart command of the
demo's and the tests' application file set). Stops the platform named in RUN_DIR/platform.pid,
starts a new one from the JSON config file ({"dsn", "port", "cache"} and optionally "passfile", a
libpq password file, so the config itself holds no password), exits 0 once it answers
(with any status: a bad config makes it answer 503, which health verification must catch), and
1 when it cannot start. The DSN reaches the platform through its environment, never argv."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

START_SECONDS = 120.0


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 0.5).close()
        return True
    except OSError:
        return False


def stop(run_dir: Path, port: int | None = None, timeout: float = 60.0) -> None:
    """Stop the platform of ``run_dir`` (if any) and, given its port, wait until it is free."""
    try:
        os.kill(int((Path(run_dir) / "platform.pid").read_text()), signal.SIGTERM)
    except (FileNotFoundError, ProcessLookupError, ValueError):
        pass
    deadline = time.monotonic() + timeout
    while port is not None and _listening(port):
        if time.monotonic() > deadline:
            raise SystemExit(f"the old platform still listens on {port}")
        time.sleep(0.05)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m bvh_ops.demo.platform.restart CONFIG RUN_DIR", file=sys.stderr)
        return 2
    conf, run_dir = Path(argv[0]), Path(argv[1])
    try:
        cfg = json.loads(conf.read_text())
        port = int(cfg["port"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"config {conf} is unusable: {exc}", file=sys.stderr)
        return 1
    stop(run_dir, port)
    env = dict(os.environ, BVH_PLATFORM_DSN=str(cfg.get("dsn", "")))
    if cfg.get("passfile"):
        env["PGPASSFILE"] = str(cfg["passfile"])
    with open(run_dir / "platform.out", "ab") as out:
        p = subprocess.Popen([sys.executable, "-m", "bvh_ops.demo.platform", "--port", str(port),
                              "--log-path", str(run_dir / "platform.jsonl"), "--cache", str(cfg.get("cache", "memory")),
                              "--window", "3"], env=env, stdin=subprocess.DEVNULL, stdout=out,
                             stderr=subprocess.STDOUT, start_new_session=True)
    (run_dir / "platform.pid").write_text(str(p.pid))
    deadline = time.monotonic() + START_SECONDS
    while True:
        if p.poll() is not None:
            print(f"the platform exited with {p.returncode}", file=sys.stderr)
            return 1
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=5)
            break
        except urllib.error.HTTPError:
            break   # it answers: unhealthy is for health verification to judge
        except OSError:
            pass
        if time.monotonic() > deadline:
            print(f"the platform did not answer within {START_SECONDS:g} s", file=sys.stderr)
            return 1
        time.sleep(0.1)
    print(f"platform pid {p.pid} on port {port}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
