"""Application recovery (#18 item 4): restore a file-set snapshot in place, run the set's restart
commands in order, then probe the platform until healthy; each step timed, the total judged
against the runbook's application RTO (30 minutes).

A failing step stops the recovery. What the restore overwrote stays beside it as
``NAME.bvh-replaced-<time>`` and is named in the report, so a failed recovery can be undone by hand.
``previous`` is the snapshot before the newest of the set: the rollback option.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bvh_ops.config import Settings
from bvh_ops.errors import ConfigError, NotFound

# Characters of a restart command's stdout/stderr kept in the report.
TAIL_CHARS = 2000
POLL_SECONDS = 2.0


@dataclass
class Step:
    name: str
    status: str          # ok | failed
    seconds: float
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "seconds": round(self.seconds, 3), "detail": self.detail}


@dataclass
class RecoveryReport:
    set: str
    requested: str
    started_at: datetime
    rto_objective_seconds: float
    snapshot_id: str | None = None
    steps: list[Step] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    total_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(s.status == "ok" for s in self.steps)

    @property
    def rto_met(self) -> bool:
        return self.ok and self.total_seconds <= self.rto_objective_seconds

    def to_json(self) -> dict[str, Any]:
        return {"set": self.set, "requested": self.requested, "snapshot_id": self.snapshot_id,
                "started_at": self.started_at.isoformat(), "status": "recovered" if self.ok else "failed",
                "steps": [s.to_json() for s in self.steps], "replaced": self.replaced,
                "total_seconds": round(self.total_seconds, 3),
                "rto": {"objective_seconds": self.rto_objective_seconds, "seconds": round(self.total_seconds, 3),
                        "result": "pass" if self.rto_met else "fail"}}


def resolve_snapshot(store, trusted: dict[str, str], set_name: str, wanted: str) -> str:
    """A snapshot id of ``set_name``: ``latest``, ``previous`` (the one before the newest), or an id
    (which must belong to the set)."""
    from bvh_ops.files.catalog import list_snapshots, trusted_index

    if wanted not in ("latest", "previous"):
        index = trusted_index(store, trusted, wanted)
        if index.set != set_name:
            raise ConfigError(f"snapshot {wanted} belongs to file set '{index.set}', not '{set_name}'")
        return index.snapshot_id
    done = sorted((s for s in list_snapshots(store, trusted, set_name) if s.index is not None and s.signature_ok),
                  key=lambda s: (s.index.finished_at, s.snapshot_id))
    need = 1 if wanted == "latest" else 2
    if len(done) < need:
        raise NotFound(f"file set '{set_name}' has {len(done)} trusted snapshot(s): no {wanted} one to recover "
                       "from (see `bvh-ops files list`)")
    return done[-need].snapshot_id


def run_command(argv: list[str], timeout: float) -> tuple[bool, str]:
    """Run ``argv`` (no shell) in a process group of its own; output goes to files, not pipes, so a
    daemon it leaves behind cannot hold us. Killed with its group after ``timeout``."""
    with tempfile.TemporaryFile() as out:
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        except OSError as exc:
            return False, f"cannot run {argv[0]!r}: {exc}"
        try:
            rc = proc.wait(timeout=timeout)
            verdict = f"exit {rc}"
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
            rc, verdict = None, f"killed after {timeout:g} s"
        out.seek(0, os.SEEK_END)
        out.seek(max(0, out.tell() - TAIL_CHARS))
        tail = out.read().decode(errors="replace").strip()
    return rc == 0, verdict + (f"; output: {tail}" if tail else "")


def health_settings(settings: Settings, service: str | None) -> Settings:
    """The settings a health probe cycle needs: the endpoints (of ``service``) only."""
    endpoints = [e for e in settings.endpoints if service is None or e.service == service]
    return settings.model_copy(update={"endpoints": endpoints, "database_url": None, "cache_url": None,
                                       "repository": None})


def _endpoint_checks(checks, names: set[str]) -> list:
    return [c for c in checks if c.name in names or any(c.name.startswith(n + ".") for n in names)]


def wait_healthy(settings: Settings, service: str | None, timeout: float,
                 probe: Callable[[Settings], Any]) -> tuple[bool, str]:
    """Probe cycles until every endpoint check is ok, or ``timeout``; the last cycle's verdict."""
    hs = health_settings(settings, service)
    names = {e.name for e in hs.endpoints}
    if not names:
        where = f" of service '{service}'" if service else ""
        return False, f"no [[endpoints]]{where} configured: health cannot be verified"
    deadline = time.monotonic() + timeout
    cycles = 0
    while True:
        cycles += 1
        checks = _endpoint_checks(probe(hs).checks, names)
        bad = [c for c in checks if str(c.status) != "ok"]
        if checks and not bad:
            return True, f"{len(checks)} endpoint check(s) ok after {cycles} cycle(s)"
        left = deadline - time.monotonic()
        if left <= 0:
            why = "; ".join(f"{c.name}: {c.status} {c.detail}".strip() for c in bad) or "no endpoint check ran"
            return False, f"not healthy after {timeout:g} s ({cycles} cycles): {why}"
        time.sleep(min(POLL_SECONDS, left))


def recover_application(settings: Settings, set_name: str, snapshot: str = "latest", *,
                        now: datetime | None = None, probe: Callable[[Settings], Any] | None = None,
                        health_timeout: float | None = None) -> RecoveryReport:
    """Restore ``snapshot`` (an id, ``latest`` or ``previous``) of ``set_name`` in place, run its
    restart commands, wait until healthy. Never raises for a failed step: the report says."""
    from bvh_ops.files.restore import restore_snapshot
    from bvh_ops.keys import load_identities
    from bvh_ops.repository.open import open_repository

    if probe is None:
        from bvh_ops.monitoring.cycle import run_cycle as probe
    fs = settings.file_set(set_name)
    report = RecoveryReport(set_name, snapshot, now or datetime.now(UTC), settings.application_rto_objective_seconds)
    t_start = time.monotonic()

    def step(name: str, fn: Callable[[], tuple[bool, str]]) -> bool:
        t0 = time.monotonic()
        try:
            ok, detail = fn()
        except Exception as exc:  # noqa: BLE001 - a failed step is reported, not raised
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        report.steps.append(Step(name, "ok" if ok else "failed", time.monotonic() - t0, detail))
        return ok

    ctx: dict[str, Any] = {}

    def select() -> tuple[bool, str]:
        repo, _host_key = open_repository(settings)
        ctx["store"], ctx["trusted"] = repo.store, repo.trusted_keys
        ctx["identities"] = load_identities(settings.require_identity())
        report.snapshot_id = resolve_snapshot(repo.store, repo.trusted_keys, set_name, snapshot)
        return True, f"{snapshot} -> {report.snapshot_id}"

    def restore() -> tuple[bool, str]:
        r = restore_snapshot(ctx["store"], ctx["trusted"], ctx["identities"], report.snapshot_id, [], None,
                             in_place=True, set_name=set_name, replaced=report.replaced)
        return True, (f"{r.files} files, {r.dirs} dirs, {r.symlinks} symlinks, {r.bytes} bytes restored in place; "
                      f"{len(r.replaced)} replaced kept as *.bvh-replaced-*")

    ok = step("select snapshot", select) and step("restore in place", restore)
    for i, argv in enumerate(fs.restart_commands, 1):
        if not ok:
            break
        ok = step(f"restart {i}: {' '.join(argv)[:120]}", lambda argv=argv: run_command(argv, fs.restart_timeout_seconds))
    if ok:
        timeout = health_timeout if health_timeout is not None else fs.health_timeout_seconds
        step("verify health", lambda: wait_healthy(settings, fs.health_service, timeout, probe))
    report.total_seconds = time.monotonic() - t_start
    return report


def render_markdown(report: dict[str, Any]) -> str:
    """The report as markdown (the flow's artifact)."""
    rto = report["rto"]
    lines = [f"# Application recovery of `{report['set']}`: {report['status']}", "",
             f"Snapshot `{report['snapshot_id'] or '–'}` (asked: `{report['requested']}`), started "
             f"{report['started_at']}.", "",
             f"**RTO {rto['seconds']:.1f} s against the {rto['objective_seconds']:.0f} s objective: "
             f"{rto['result'].upper()}**", "", "| step | status | seconds | detail |", "|---|---|---|---|"]
    for s in report["steps"]:
        detail = s["detail"].replace("|", "\\|").replace("\n", " ")
        name = s["name"].replace("|", "\\|")
        lines.append(f"| {name} | {s['status']} | {s['seconds']:.2f} | {detail} |")
    if report["replaced"]:
        lines += ["", "Replaced files kept (rename back to undo):", ""]
        lines += [f"- `{p}`" for p in report["replaced"]]
    return "\n".join(lines) + "\n"
