"""The demo's application-recovery step (#18): the sample platform as the application whose
configuration is a file set.

- the demo's config carries a ``[[file_sets]]`` ``platform_config`` (class application: the
  platform's JSON config file, its restart command, health through the platform's endpoint), so
  the daily-backup flow at the start of the demo has already snapshotted it;
- the platform is started from that config (its restart command) and answers healthy;
- ``files snapshot platform_config`` again: the unchanged file is not even read (the cache);
- a bad deploy: the config names a database that does not exist, the platform is restarted and
  answers 503; the next nightly snapshot captures it, and ``files diff`` shows the changed line;
- ``recover-application --snapshot previous``: the previous snapshot restored in place (the bad
  file kept beside it), the restart command run, health probed until healthy; each step's
  duration and the total against the runbook's 30-minute application objective.

The config file holds no password: the platform's DSN is passwordless and a libpq password file
(outside the file set, 0600) carries it, so the diff and the snapshot show nothing secret.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from bvh_ops.config import Endpoint, Settings
from bvh_ops.demo.parts import run_part, say

SET = "platform_config"
MISSING_DB = "lottery_missing"
HEALTH_SECONDS = 120.0


@dataclass(frozen=True)
class PlatformFiles:
    conf_dir: Path   # the file set: /etc/lottery in production
    run_dir: Path    # pid file, the platform's logs
    passfile: Path

    @property
    def conf(self) -> Path:
        return self.conf_dir / "platform.json"

    def restart_argv(self) -> list[str]:
        return [sys.executable, "-m", "bvh_ops.demo.platform.restart", str(self.conf), str(self.run_dir)]


def platform_files(state: Path) -> PlatformFiles:
    base = Path(state) / "platform-app"
    return PlatformFiles(base / "etc" / "lottery", base / "run", base / "pgpass")


def _config(dsn: str, files: PlatformFiles, port: int, *, dbname: str | None = None) -> tuple[bytes, str]:
    """(the platform's config file without the password, the libpq password-file line)."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(dsn)
    password = params.pop("password", None)
    if dbname:
        params["dbname"] = dbname
    body = json.dumps({"dsn": make_conninfo(**params), "passfile": str(files.passfile), "port": port,
                       "cache": "memory"}, indent=2).encode() + b"\n"
    esc = str(password or "").replace("\\", "\\\\").replace(":", "\\:")
    line = f"{params.get('host', '127.0.0.1')}:{params.get('port', 5432)}:*:{params.get('user', '')}:{esc}\n"
    return body, line


def write_platform_app(state: Path, dsn: str, port: int) -> str:
    """Write the platform's good config (and its password file); the ``[[file_sets]]`` TOML the
    demo config carries for it."""
    files = platform_files(state)
    for d in (files.conf_dir, files.run_dir):
        d.mkdir(parents=True, exist_ok=True)
    body, line = _config(dsn, files, port)
    files.passfile.write_text(line)
    files.passfile.chmod(0o600)
    files.conf.write_bytes(body)
    return ("\n# The sample platform's configuration: snapshotted by the daily backup, restored by\n"
            "# `bvh-ops files recover platform_config` (health through its [[endpoints]] of service platform).\n"
            "[[file_sets]]\n"
            f'name = "{SET}"\n'
            'class = "application"\n'
            f"paths = [{json.dumps(str(files.conf_dir))}]\n"
            f"restart_commands = [{json.dumps(files.restart_argv())}]\n"
            'health_service = "platform"\n'
            f"health_timeout_seconds = {HEALTH_SECONDS:g}\n")


def platform_endpoint(port: int) -> dict[str, Any]:
    return {"name": "platform-health", "service": "platform", "url": f"http://127.0.0.1:{port}/api/health",
            "conditions": ["[STATUS] == 200", "[BODY].status == healthy"]}


@dataclass
class FilesDemo:
    """What the step did (returned for the test; the demo prints it)."""

    snapshots: list[dict[str, Any]] = field(default_factory=list)
    broken_status: int | None = None
    diff: dict[str, Any] = field(default_factory=dict)
    recovery: dict[str, Any] = field(default_factory=dict)
    healthy_after: bool = False
    failures: list[str] = field(default_factory=list)


def _status(port: int) -> int | None:
    import httpx

    try:
        return httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=5).status_code
    except httpx.HTTPError:
        return None


def _wait_status(port: int, want: int, limit: float = 60.0) -> int | None:
    deadline = time.monotonic() + limit
    while (got := _status(port)) != want and time.monotonic() < deadline:
        time.sleep(0.2)
    return got


def run_files_step(settings: Settings, state: Path, console: Console) -> tuple[bool, str, FilesDemo]:
    """(ok, the summary row, what happened). ``settings`` carries the ``platform_config`` set
    (write_platform_app's TOML); the platform's endpoint is added here for the health check."""
    from bvh_ops.demo.platform.restart import stop
    from bvh_ops.files.recover import recover_application, run_command
    from bvh_ops.files.snapshot import take_snapshot

    files = platform_files(state)
    port = int(json.loads(files.conf.read_text())["port"])
    settings = settings.model_copy(update={"endpoints": [*settings.endpoints, Endpoint(**platform_endpoint(port))]})
    good = files.conf.read_bytes()
    good_dsn = json.loads(good)["dsn"]   # passwordless: the password file has the password
    res = FilesDemo()
    fail = res.failures

    def snap(label: str) -> dict[str, Any]:
        r = take_snapshot(settings, SET).to_json()
        res.snapshots.append(r)
        say(console, f"{label}: {r['snapshot_id']}: {r['files']} entries ({r['files_unchanged']} unchanged, "
                     f"not read), {r['bytes_in']} bytes read, {r['bytes_stored']} bytes stored"
                     + (" PARTIAL" if r["partial"] else ""))
        return r

    def start() -> None:
        ok, detail = run_command(files.restart_argv(), HEALTH_SECONDS)
        if not ok:
            raise RuntimeError(f"the restart command failed: {detail}")
        if (got := _wait_status(port, 200)) != 200:
            raise RuntimeError(f"the platform answers {got} on its good config")
        say(console, f"platform on port {port}: /api/health 200 (config {files.conf})")

    def bad_deploy() -> None:
        body, _ = _config(good_dsn, files, port, dbname=MISSING_DB)
        files.conf.write_bytes(body)
        run_command(files.restart_argv(), HEALTH_SECONDS)
        res.broken_status = _wait_status(port, 503)
        say(console, f"config now names database '{MISSING_DB}': restarted, /api/health {res.broken_status}")
        if res.broken_status != 503:
            raise RuntimeError(f"the broken platform answers {res.broken_status}, not 503")

    def diff() -> None:
        from bvh_ops.files.diff import diff_snapshots
        from bvh_ops.keys import load_identities
        from bvh_ops.repository.open import open_repository

        a, b = res.snapshots[-2]["snapshot_id"], res.snapshots[-1]["snapshot_id"]
        repo, _ = open_repository(settings)
        d = diff_snapshots(repo.store, repo.trusted_keys, load_identities(settings.require_identity()), a, b).to_json()
        res.diff = d
        for c in d["changed"]:
            say(console, f"changed: /{c['path']} ({', '.join(c['what'])})")
            for line in (c["diff"] or "").splitlines():
                if line.startswith(("+", "-")) and not line.startswith(("+++", "---")):
                    say(console, line, indent=6)

    def recover() -> None:
        doc = recover_application(settings, SET, "previous").to_json()
        res.recovery = doc
        for s in doc["steps"]:
            say(console, f"{s['name'][:70]:<70} {s['status']:<6} {s['seconds']:6.1f} s  {s['detail'][:90]}")
        rto = doc["rto"]
        say(console, f"total {doc['total_seconds']:.1f} s against the {rto['objective_seconds'] // 60:.0f}-minute "
                     f"application objective: {rto['result'].upper()}; replaced file kept: "
                     f"{', '.join(doc['replaced']) or 'none'}")
        res.healthy_after = _status(port) == 200 and files.conf.read_bytes() == good
        if doc["status"] != "recovered" or not res.healthy_after:
            raise RuntimeError(f"recovery {doc['status']}; platform healthy afterwards: {res.healthy_after}")

    try:
        run_part(console, fail, "start", "starting the sample platform from its config file (its restart command)",
                 start)
        run_part(console, fail, "snapshot", f"bvh-ops files snapshot {SET} (the daily backup took one already)",
                 lambda: snap("snapshot"))
        if not fail:
            run_part(console, fail, "break", "a bad deploy: the platform's config points at a database that does "
                                             "not exist; restart", bad_deploy)
        if not fail:
            run_part(console, fail, "nightly", "the next nightly snapshot captures it; bvh-ops files diff",
                     lambda: (snap("snapshot"), diff()))
        if not fail:
            run_part(console, fail, "recover", f"bvh-ops files recover {SET} --snapshot previous: restore in place, "
                                               "restart, verify health", recover)
    finally:
        stop(files.run_dir, port)
    ok = not fail
    doc = res.recovery
    if ok:
        row = (f"OK: bad config rolled back to {doc['snapshot_id']}, platform healthy again; RTO "
               f"{doc['total_seconds']:.1f} s against 1800 s: {doc['rto']['result'].upper()}")
    else:
        row = "FAILED: " + "; ".join(fail)
    return ok, row, res

