"""`bvh-ops`: the operator's command line. Expected failures print one line and exit non-zero
(exit code per error class, see bvh_ops.errors); tracebacks are for bugs only."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

# Prefect reads these at import time; keep operator-set values.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "60")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
# An expected failure is one `error:` line here; the run's full log (tracebacks included) still
# goes to the Prefect API and shows in the UI's run history.
os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")

import warnings  # noqa: E402

warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")

import typer  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bvh_ops.errors import BvhOpsError, ConfigError  # noqa: E402

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Provable backups and rehearsed recovery for the BrachaVeHatzlacha lottery platform.")
backups_app = typer.Typer(no_args_is_help=True, help="The backup catalog.")
config_app = typer.Typer(no_args_is_help=True, help="Configuration.")
app.add_typer(backups_app, name="backups")
app.add_typer(config_app, name="config")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def _emit_json(data: object) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def _settings():
    from bvh_ops.config import load_settings

    return load_settings()


def _require_prefect_home() -> None:
    """Fail in one line, before Prefect starts, when its home cannot be written: otherwise the
    ephemeral API server dies silently and the CLI waits out its startup timeout."""
    import tempfile

    home = Path(os.environ.get("PREFECT_HOME") or "~/.prefect").expanduser()
    try:
        home.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=home):
            pass
    except OSError as exc:
        raise ConfigError(f"Prefect's home {home} is not writable ({exc.strerror or exc}): set PREFECT_HOME to a "
                          "directory this user can write (e.g. PREFECT_HOME=/var/lib/bvh-ops/prefect)") from None
    # Without PREFECT_API_URL: start the ephemeral API server now, from this main thread, as a
    # child that dies with us even on kill -9 (Prefect would start it from any thread, unguarded).
    from bvh_ops.children import start_prefect_api

    start_prefect_api()


@app.command()
def keygen(
    directory: Annotated[Path, typer.Argument(help="Where to write recipient.pub and identity.key")],
    kem: Annotated[str, typer.Option(help="mlkem768-x25519 (hybrid post-quantum) or x25519")] = "mlkem768-x25519",
) -> None:
    """Generate a key pair: DIR/recipient.pub (for backup hosts) and DIR/identity.key (0600, for restores)."""
    from bvh_ops.keys import load_recipients, write_keypair

    pub, key = write_keypair(directory, kem)
    rid = load_recipients([pub])[0].key_id
    out.print(f"recipient {rid}: {pub}\nidentity  {rid}: {key} (mode 0600; keep it offline, backups need only the .pub)")


@app.command()
def backup(
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON")] = False,
    kind: Annotated[str, typer.Option("--kind", help="logical (daily-backup flow), full or incremental (physical)")]
    = "logical",
) -> None:
    """Run the daily-backup flow (snapshot-consistent pg_dump, checks, retention), or a physical
    --kind full | incremental backup (pg_basebackup; the incremental-backup flow)."""
    settings = _settings()  # fail fast on bad or missing configuration, before Prefect starts
    settings.require_database_url()
    settings.require_repository()
    from bvh_ops.keys import load_recipients

    load_recipients(settings.require_recipients())
    if kind not in ("logical", "full", "incremental"):
        raise BvhOpsError(f"--kind {kind!r}: use logical, full or incremental")
    _require_prefect_home()
    if kind in ("full", "incremental"):
        from flows.incremental_backup import incremental_backup

        doc = incremental_backup(kind=kind)
        if as_json:
            _emit_json(doc)
        else:
            mode = " (WAL-only increment: native incrementals need PostgreSQL 17+)" if doc.get("mode") == "wal-only" else ""
            out.print(f"{doc['kind']} backup {doc['backup_id']} committed and checked{mode}: {doc['bytes_in']} bytes in, "
                      f"{doc['bytes_stored']} stored, LSN {doc['start_lsn']} → {doc['stop_lsn']}"
                      + (f", parent {doc['parent_id']}" if doc.get("parent_id") else ""))
            if doc.get("promoted_from"):
                out.print("  no physical backup of this cluster existed: took a full backup instead of an incremental")
        return
    from flows.daily_backup import daily_backup

    result = daily_backup()
    if as_json:
        _emit_json(result)
    else:
        _print_backup(result)


def _print_backup(result: dict) -> None:
    from flows.artifacts import human_bytes

    out.print(f"backup {result['backup_id']} committed and checked")
    out.print(f"  {len(result['tables'])} tables, {sum(t['rows'] for t in result['tables'].values())} rows, "
              f"{human_bytes(result['bytes_in'])} in, {human_bytes(result['bytes_stored'])} stored, "
              f"{result.get('mb_per_s')} MB/s")


@backups_app.command("list")
def backups_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List the backups in the repository (complete and incomplete)."""
    from bvh_ops.backup import open_repository

    repo, _ = open_repository(_settings())
    records = repo.list_backups()
    rows = [
        {"backup_id": r.backup_id, "kind": r.kind, "status": r.status,
         "finished_at": r.finished_at.isoformat() if r.finished_at else None,
         "bytes_stored": r.bytes_stored, "signature_ok": r.signature_ok, "parent_id": r.parent_id}
        for r in records
    ]
    if as_json:
        _emit_json(rows)
        return
    table = Table(box=None, pad_edge=False)
    for name in ("backup id", "kind", "status", "finished (UTC)", "stored", "signature", "parent"):
        table.add_column(name, no_wrap=True, min_width=32 if name in ("backup id", "parent") else None)
    from flows.artifacts import human_bytes

    for r in rows:
        finished = r["finished_at"][:19].replace("T", " ") if r["finished_at"] else "-"
        table.add_row(r["backup_id"], r["kind"], r["status"], finished, human_bytes(r["bytes_stored"]),
                      {True: "ok", False: "BAD", None: "-"}[r["signature_ok"]], r["parent_id"] or "")
    # Full ids matter more than a fitted table: piped output is not squeezed to 80 columns.
    console = out if out.is_terminal else Console(highlight=False, width=160)
    console.print(table if rows else "no backups yet: run `bvh-ops backup`")


@app.command()
def verify(
    backup_id: Annotated[str | None, typer.Argument(help="Backup id or 'latest' (default: latest)")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Verify every complete backup")] = False,
    deep: Annotated[bool, typer.Option("--deep", help="Also decrypt and check plaintext hashes (needs identity)")] = False,
    no_wal: Annotated[bool, typer.Option("--no-wal", help="Skip the WAL archive's continuity check")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Verify backups and the WAL archive's continuity; exits 0 only when everything is OK."""
    from bvh_ops.backup import open_repository
    from bvh_ops.keys import load_identities
    from bvh_ops.repository.verify import render, verify_backup

    settings = _settings()
    repo, _ = open_repository(settings)
    identities = load_identities(settings.require_identity()) if deep else None
    if all_:
        ids = [r.backup_id for r in repo.list_backups() if r.status != "incomplete"]
        if not ids:
            raise BvhOpsError(f"no backups in {repo.store.url} to verify")
    else:
        ids = [repo.resolve(backup_id or "latest")]
    results = [res for bid in ids for res in verify_backup(repo, bid, identities=identities)]
    if not no_wal:
        from bvh_ops.repository.verify import verify_wal

        results += verify_wal(repo, identities=identities)
    ok = bool(results) and all(r.ok for r in results)
    if as_json:
        _emit_json({"ok": ok, "deep": deep, "results": [r.to_json() for r in results]})
    else:
        out.print(render(results))
    raise typer.Exit(0 if ok else 8)


@app.command()
def restore(
    backup_id: Annotated[str, typer.Argument(help="Backup id or 'latest'")],
    into: Annotated[str | None, typer.Option("--into", help="DSN of the (existing, empty) database to restore into")]
    = None,
    target_dir: Annotated[Path | None, typer.Option("--target-dir", help="Physical backup: new data directory")]
    = None,
    to_time: Annotated[str | None, typer.Option("--to-time", help="Recover to this time (ISO 8601)")] = None,
    to_lsn: Annotated[str | None, typer.Option("--to-lsn", help="Recover to this LSN (e.g. 0/3000060)")] = None,
    to_name: Annotated[str | None, typer.Option("--to-name", help="Recover to this restore point")] = None,
    start: Annotated[bool, typer.Option("--start", help="Start the restored server and wait until it has recovered")]
    = False,
    port: Annotated[int | None, typer.Option("--port", help="Port for the restored server (default: a free one)")]
    = None,
    archive: Annotated[bool, typer.Option("--archive", help="Let the restored cluster archive WAL (default: off)")]
    = False,
    os_user: Annotated[str | None, typer.Option(
        "--os-user", help="Run as root: the OS user the restored server runs as (default: the owner of a file:// "
        "repository's wal/, else embedded_postgres)")] = None,
    validate_target: Annotated[bool, typer.Option("--validate-target",
                                                  help="Only say whether the target is reachable")] = False,
    table: Annotated[list[str] | None, typer.Option("--table", help="Restore only this table (repeatable)")] = None,
    no_owner: Annotated[bool, typer.Option("--no-owner", help="Skip ownership and privileges")] = False,
    jobs: Annotated[int | None, typer.Option("--jobs", "-j", min=1, help="Parallel pg_restore processes")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Restore a logical backup into a database (comparing every table's fingerprint), or a
    physical backup (with its incrementals) into a new data directory that recovers to a
    point in time (--target-dir, --to-time/--to-lsn/--to-name)."""
    settings = _settings()
    if validate_target or target_dir is not None:
        from bvh_ops.pitr import RecoveryTarget

        target = RecoveryTarget.from_options(to_time, to_lsn, to_name)
        if validate_target:
            from bvh_ops.pitr import validate_target as check

            doc = check(settings, backup_id, target)
            if as_json:
                _emit_json(doc)
            elif doc["reachable"]:
                out.print(f"reachable: {doc['target']} from {doc['backup_id']}; latest reachable point "
                          f"LSN {doc['latest_reachable']['lsn']} (~{doc['latest_reachable']['time']})"
                          + (f"; note: {doc['reason']}" if doc.get("reason") else ""))
            else:
                out.print(f"NOT reachable: {doc['target']}: {doc['reason']}"
                          + (f"; latest reachable point LSN {doc['latest_reachable']['lsn']} "
                             f"(~{doc['latest_reachable']['time']})" if doc.get("latest_reachable") else ""))
            raise typer.Exit(0 if doc["reachable"] else 8)
    if (into is None) == (target_dir is None):
        raise BvhOpsError("give exactly one of --into DSN (logical) or --target-dir DIR (physical)")
    if target_dir is not None:
        from bvh_ops.pitr import recovery_log, restore_physical

        report = restore_physical(settings, backup_id, target_dir, target=target, start=start, port=port,
                                  archive=archive, os_user=os_user)
        if as_json:
            _emit_json(report.to_json())
            return
        chain = " + ".join(report.chain)
        out.print(f"restored {chain} into {report.data_dir} ({report.verified or 'not verified'})")
        if report.started:
            out.print(f"recovered to {report.target} and promoted; running on 127.0.0.1:{report.port} "
                      f"(log {recovery_log(Path(report.data_dir))}); recovered to: {report.recovered_to}")
        else:
            who = f" as OS user {report.os_user}" if report.os_user else ""
            out.print(f"start it{who} with: pg_ctl -D {report.data_dir} start — it recovers to {report.target} "
                      "through bvh-ops wal-fetch and promotes; the recovery directory (config, key copy) removes "
                      "itself when recovery ends (recovery_end_command)")
        return
    if to_time or to_lsn or to_name:
        raise BvhOpsError("--to-time/--to-lsn/--to-name apply to physical restores (--target-dir)")
    from bvh_ops.dsn import check_dsn

    try:
        check_dsn(into)
    except ValueError as exc:
        raise ConfigError(f"--into: {exc}") from None
    from bvh_ops.restore import restore_logical

    result = restore_logical(settings, backup_id, into, tables=table or None, no_owner=no_owner,
                             jobs=jobs or settings.restore_jobs)
    if as_json:
        _emit_json(result.to_json())
    else:
        bad = [c for c in result.comparisons if not c.ok]
        out.print(f"restored {result.backup_id} into {result.target} in {result.seconds:.1f} s; "
                  f"{len(result.comparisons) - len(bad)}/{len(result.comparisons)} tables match their fingerprint")
        for c in bad:
            out.print(f"  MISMATCH {c.name}: expected {c.expected}, got {c.actual}")
    raise typer.Exit(0 if result.ok else 8)


@app.command()
def retention(dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show the plan")] = True) -> None:
    """Show (or with --no-dry-run apply) the retention plan, WAL pruning included."""
    from datetime import UTC, datetime

    from bvh_ops.backup import open_repository
    from bvh_ops.repository.retention import apply_plan

    settings = _settings()
    repo, _ = open_repository(settings)
    result = apply_plan(repo, now=datetime.now(UTC), keep_days=settings.retention_days,
                        min_redundancy=settings.min_redundancy, dry_run=dry_run)
    for d in result["decisions"]:
        out.print(f"{d['action']:8} {d['backup_id']}  {d['reason']}")
    if result["wal_kept_from"]:
        out.print(f"WAL kept from {result['wal_kept_from']} (oldest kept base); "
                  f"{result['wal_pruned']} older WAL files {'would be ' if dry_run else ''}pruned")


@app.command()
def drill(
    backup: Annotated[str, typer.Option("--backup", help="Backup id or 'latest'")] = "latest",
    mode: Annotated[str, typer.Option("--mode", help="logical | physical | both")] = "logical",
    to_time: Annotated[str | None, typer.Option("--to-time", help="Target / simulated disaster time (ISO 8601)")] = None,
    to_lsn: Annotated[str | None, typer.Option("--to-lsn", help="Physical mode: recover to this LSN")] = None,
    scratch: Annotated[str, typer.Option(help="embedded | configured (drill_scratch_dsn)")] = "embedded",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Run the DR drill flow: restore, start, check, measure RTO/RPO; exit 0 only if it passed."""
    from datetime import UTC, datetime

    if mode not in ("logical", "physical", "both"):
        raise BvhOpsError(f"--mode {mode!r}: use logical, physical or both")
    if scratch not in ("embedded", "configured"):
        raise BvhOpsError(f"--scratch {scratch!r}: use embedded or configured")
    target = None
    if to_time:
        try:
            target = datetime.fromisoformat(to_time)
        except ValueError:
            raise BvhOpsError(f"--to-time {to_time!r} is not an ISO 8601 time (e.g. 2026-11-27T02:00:00Z)") from None
        target = target if target.tzinfo else target.replace(tzinfo=UTC)
    settings = _settings()
    settings.require_repository()
    settings.require_identity()
    _require_prefect_home()
    from flows.dr_drill import DrillFailed, dr_drill

    try:
        if to_lsn:
            from bvh_ops.physical import parse_lsn

            parse_lsn(to_lsn)
            if mode == "logical":
                raise BvhOpsError("--to-lsn applies to physical drills: add --mode physical (or both)")
        report = dr_drill(backup=backup, to_time=target, mode=mode, scratch=scratch, to_lsn=to_lsn)
    except DrillFailed as exc:
        report = exc.report
    if as_json:
        _emit_json(report)
    else:
        _print_drill(report)
    raise typer.Exit(0 if report["passed"] else 8)


def _print_drill(report: dict) -> None:
    table = Table(title=f"DR drill {report['drill_id']}: {'PASSED' if report['passed'] else 'FAILED'}")
    table.add_column("check")
    table.add_column("status")
    table.add_column("detail", overflow="fold")
    for c in report["checks"]:
        color = {"passed": "green", "failed": "red"}.get(c["status"], "yellow")
        table.add_row(c["name"], f"[{color}]{c['status']}[/]", c["detail"])
    out.print(table)
    stages = ", ".join(f"{s['name']} {s['seconds']:.1f}s" for s in report["stages"])
    rto = report["rto_seconds"]
    rpo = report["rpo_seconds"]
    out.print(f"backup {report['backup_id']}; stages: {stages}")
    out.print(f"RTO {rto if rto is not None else '–'} s (objective {report['objectives']['rto_seconds']:.0f} s); "
              f"RPO {rpo if rpo is not None else '–'} s (objective {report['objectives']['rpo_seconds']:.0f} s); "
              f"trend: {report.get('trend', '-')}")


@app.command()
def serve() -> None:
    """Serve every deployment of prefect.yaml with its schedule from this machine (no work pool)."""
    _settings()
    _require_prefect_home()
    from deployments.serve import serve as run_serve

    run_serve()


@app.command("setup-notifications")
def setup_notifications() -> None:
    """Create or update the automation that notifies on failed/crashed/timed-out runs (idempotent)."""
    if not os.environ.get("PREFECT_API_URL"):
        raise BvhOpsError("PREFECT_API_URL is not set: point it at your Prefect server (…/api) first")
    from deployments.notifications import setup_notifications as setup

    result = setup(_settings())
    out.print(f"automation '{result['automation']}' {result['action']} with {result['notifications']} notification(s)")


@app.command("wal-push")
def wal_push_cmd(path: Annotated[str, typer.Argument(help="%p: the WAL file PostgreSQL wants archived")]) -> None:
    """archive_command: compress, encrypt and store one WAL file (idempotent; never overwrites)."""
    from bvh_ops.wal import wal_push

    wal_push(_settings(), path)


@app.command("wal-fetch")
def wal_fetch_cmd(
    name: Annotated[str, typer.Argument(help="%f: the WAL file name PostgreSQL asks for")],
    dest: Annotated[str, typer.Argument(help="%p: where to write it")],
) -> None:
    """restore_command: fetch, decrypt and write one WAL file (exit 1 when it is not archived,
    126 when it cannot be delivered; the same as `bvh-ops-wal fetch`)."""
    _settings()  # a configuration error is one line here, like every command's
    from bvh_ops.walcmd import fetch

    raise typer.Exit(fetch(name, dest))


@config_app.command("show")
def config_show() -> None:
    """Print the effective configuration, secrets redacted."""
    from bvh_ops.config import config_file_path

    settings = _settings()
    data = settings.redacted()
    data["_config_file"] = str(config_file_path()) if config_file_path() else None
    _emit_json(data)


@app.command()
def demo(
    scale: Annotated[float, typer.Option(help="Sample data scale (1 = ~20 MB)")] = 2.0,
    keep_running: Annotated[bool, typer.Option(help="Leave the embedded PostgreSQL running")] = False,
    stop: Annotated[bool, typer.Option("--stop", help="Only stop the demo's PostgreSQL")] = False,
) -> None:
    """Embedded PostgreSQL 18 + sample lottery data -> daily-backup flow -> deep verify -> restore -> compare."""
    from bvh_ops.demo import run_demo, stop_demo

    if stop:
        stop_demo()
        return
    _require_prefect_home()
    ok = run_demo(scale=scale, keep_running=keep_running, console=out)
    raise typer.Exit(0 if ok else 8)


def main() -> None:
    try:
        rc = app(standalone_mode=False)
        sys.exit(rc if isinstance(rc, int) else 0)
    except BvhOpsError as exc:
        err.print(f"error: {exc}", markup=False)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
