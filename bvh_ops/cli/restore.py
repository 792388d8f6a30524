"""restore: logical into a database, physical into a data directory (point in time), target validation."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bvh_ops.cli.core import (
    FROM_HELP,
    app,
    emit_json,
    out,
    source_settings,
)
from bvh_ops.errors import ConfigError


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
    port: Annotated[int | None, typer.Option("--port", min=1, max=65535, help="Port for the restored server (default: a free one)")]
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
    source: Annotated[str, typer.Option("--from", help=FROM_HELP)] = "primary",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Restore a logical backup into a database (comparing every table's fingerprint), or a
    physical backup (with its incrementals) into a new data directory that recovers to a
    point in time (--target-dir, --to-time/--to-lsn/--to-name). --from replica: from the replica
    repository alone (the primary region gone)."""
    settings = source_settings(source)
    if validate_target:
        _validate(settings, backup_id, to_time, to_lsn, to_name, as_json)
    if (into is None) == (target_dir is None):
        raise ConfigError("give exactly one of --into DSN (logical) or --target-dir DIR (physical)")
    if target_dir is not None:
        _physical(settings, backup_id, target_dir, to_time, to_lsn, to_name, start=start, port=port,
                  archive=archive, os_user=os_user, as_json=as_json)
        return
    if to_time or to_lsn or to_name:
        raise ConfigError("--to-time/--to-lsn/--to-name apply to physical restores (--target-dir)")
    _logical(settings, backup_id, into, table, no_owner, jobs, as_json)


def _validate(settings, backup_id: str, to_time, to_lsn, to_name, as_json: bool) -> None:
    """--validate-target: is the target reachable with what the repository holds? Exit 0, 8, or 1
    when it cannot be judged (a restore point name)."""
    from bvh_ops.physical.restore import validate_target as check
    from bvh_ops.physical.target import RecoveryTarget

    doc = check(settings, backup_id, RecoveryTarget.from_options(to_time, to_lsn, to_name))
    if as_json:
        emit_json(doc)
    elif doc["reachable"]:
        out.print(f"reachable: {doc['target']} from {doc['backup_id']}; latest reachable point "
                  f"LSN {doc['latest_reachable']['lsn']} (~{doc['latest_reachable']['time']})"
                  + (f"; note: {doc['reason']}" if doc.get("reason") else ""))
    elif doc["reachable"] is None:
        out.print(f"NOT JUDGED: {doc['target']}: {doc['reason']}")
    else:
        out.print(f"NOT reachable: {doc['target']}: {doc['reason']}"
                  + (f"; latest reachable point LSN {doc['latest_reachable']['lsn']} "
                     f"(~{doc['latest_reachable']['time']})" if doc.get("latest_reachable") else ""))
    raise typer.Exit({True: 0, None: 1}.get(doc["reachable"], 8))


def _reachable_or_say(settings, backup_id: str, target) -> None:
    """A target past the archived WAL: PostgreSQL's recovery ends short of it and the server
    refuses to start — the restore said "restored …, start it with pg_ctl", exit 0. An LSN is
    judged exactly (refused before anything is written); a time only by when the last archived
    segment was written, so it is said, not refused."""
    if target.kind not in ("lsn", "time"):
        return
    from bvh_ops.cli.core import err
    from bvh_ops.errors import IntegrityError
    from bvh_ops.physical.restore import validate_target

    doc = validate_target(settings, backup_id, target)
    if doc["reachable"]:
        return
    latest = doc.get("latest_reachable") or {}
    if target.kind == "lsn":
        raise IntegrityError(f"--to-lsn {target.value}: not reachable: {doc['reason']}"
                             + (f" (latest reachable LSN {latest['lsn']})" if latest else "")
                             + "; nothing was written")
    err.print(f"warning: {target.describe()}: {doc['reason']}: recovery may end short of it and the server then "
              "refuses to start (`--validate-target` says more)", markup=False)


def _physical(settings, backup_id: str, target_dir: Path, to_time, to_lsn, to_name, *, start: bool,
              port: int | None, archive: bool, os_user: str | None, as_json: bool) -> None:
    """--target-dir: a physical chain into a new data directory, recovering to the target."""
    from bvh_ops.audit.record import record
    from bvh_ops.physical.restore import recovery_log, restore_physical
    from bvh_ops.physical.target import RecoveryTarget

    target = RecoveryTarget.from_options(to_time, to_lsn, to_name)
    _reachable_or_say(settings, backup_id, target)
    if port is None and not start:  # --port's default, "a free one": else it kept the source's port
        from bvh_ops.pg.cluster import free_port

        port = free_port()
    report = restore_physical(settings, backup_id, target_dir, target=target, start=start, port=port,
                              archive=archive, os_user=os_user)
    record(settings, None, "restore.physical", report.backup_id, {"chain": report.chain, "data_dir": report.data_dir,
                                                                  "target": report.target, "started": report.started})
    if as_json:
        emit_json(report.to_json())
        return
    chain = " + ".join(report.chain)
    out.print(f"restored {chain} into {report.data_dir} ({report.verified or 'not verified'})")
    if report.started:
        out.print(f"recovered to {report.target} and promoted; running on 127.0.0.1:{report.port} "
                  f"(log {recovery_log(Path(report.data_dir))}); recovered to: {report.recovered_to}")
    else:
        who = f" as OS user {report.os_user}" if report.os_user else ""
        out.print(f"start it{who} with: {report.pg_ctl or 'pg_ctl'} -D {report.data_dir} start (it listens on "
                  f"127.0.0.1:{report.port}) — it recovers to {report.target} "
                  "through bvh-ops wal-fetch and promotes; the recovery directory (config, key copy) removes "
                  "itself when recovery ends (recovery_end_command)")


def _logical(settings, backup_id: str, into: str, table, no_owner: bool, jobs, as_json: bool) -> None:
    """--into: a logical backup into an existing database, every table's fingerprint compared."""
    from bvh_ops.audit.record import record
    from bvh_ops.dsn import check_dsn
    from bvh_ops.logical.restore import restore_logical

    try:
        check_dsn(into)
    except ValueError as exc:
        raise ConfigError(f"--into: {exc}") from None
    from bvh_ops.cli.progress import live_progress

    with live_progress(as_json=as_json):
        result = restore_logical(settings, backup_id, into, tables=table or None, no_owner=no_owner,
                                 jobs=jobs or settings.restore_jobs)
    record(settings, None, "restore.logical", result.backup_id, {"target": result.target, "ok": result.ok,
                                                                 "tables": len(result.comparisons)})
    if as_json:
        emit_json(result.to_json())
    else:
        bad = [c for c in result.comparisons if not c.ok]
        out.print(f"restored {result.backup_id} into {result.target} in {result.seconds:.1f} s; "
                  f"{len(result.comparisons) - len(bad)}/{len(result.comparisons)} tables match their fingerprint")
        for c in bad:
            if c.not_verified:
                out.print(f"  NOT VERIFIED {c.name}: {c.not_verified}", markup=False)
            else:
                out.print(f"  MISMATCH {c.name}: expected {c.expected}, got {c.actual}", markup=False)
        if result.sequences_advanced:
            out.print(f"  moved forward to the backup's value: {', '.join(result.sequences_advanced)}", markup=False)
        if result.left_out:
            out.print(f"  not restored with the table (re-create from the schema where needed): "
                      f"{'; '.join(result.left_out)}", markup=False)
    raise typer.Exit(0 if result.ok else 8)
