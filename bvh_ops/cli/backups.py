"""Backups and the catalog: keygen, backup, backups list, verify, retention."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from bvh_ops.cli.core import (
    FROM_HELP,
    app,
    backups_app,
    cli_settings,
    emit_json,
    err,
    loading_for_good,
    out,
    require_prefect_home,
    source_settings,
)
from bvh_ops.cli.progress import live_progress
from bvh_ops.errors import BvhOpsError, ConfigError


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
    settings = cli_settings()  # fail fast on bad or missing configuration, before Prefect starts
    settings.require_database_url()
    settings.require_repository()
    from bvh_ops.keys import load_recipients

    load_recipients(settings.require_recipients())
    if kind not in ("logical", "full", "incremental"):
        raise ConfigError(f"--kind {kind!r}: use logical, full or incremental")
    physical = kind in ("full", "incremental")
    with loading_for_good():
        require_prefect_home()
        if physical:
            from flows.incremental_backup import incremental_backup as run
        else:
            from flows.daily_backup import daily_backup as run
    if physical:
        with live_progress(as_json=as_json):
            doc = run(kind=kind)
        if as_json:
            emit_json(doc)
        else:
            mode = " (WAL-only increment: native incrementals need PostgreSQL 17+)" if doc.get("mode") == "wal-only" else ""
            out.print(f"{doc['kind']} backup {doc['backup_id']} committed and checked{mode}: {doc['bytes_in']} bytes in, "
                      f"{doc['bytes_stored']} stored, LSN {doc['start_lsn']} → {doc['stop_lsn']}"
                      + (f", parent {doc['parent_id']}" if doc.get("parent_id") else ""))
            if doc.get("promoted_from"):
                out.print("  no physical backup of this cluster existed: took a full backup instead of an incremental")
        return
    with live_progress(as_json=as_json):
        result = run()
    if as_json:
        emit_json(result)
    else:
        _print_backup(result)


def _print_backup(result: dict) -> None:
    from bvh_ops.units import human_bytes

    out.print(f"backup {result['backup_id']} committed and checked")
    out.print(f"  {len(result['tables'])} tables, {sum(t['rows'] for t in result['tables'].values())} rows, "
              f"{human_bytes(result['bytes_in'])} in, {human_bytes(result['bytes_stored'])} stored, "
              f"{result.get('mb_per_s')} MB/s")


@backups_app.command("list")
def backups_list(as_json: Annotated[bool, typer.Option("--json")] = False,
                 source: Annotated[str, typer.Option("--from", help=FROM_HELP)] = "primary") -> None:
    """List the backups in the repository (complete and incomplete)."""
    from bvh_ops.repository.open import open_existing_repository

    repo, _ = open_existing_repository(source_settings(source))  # listing creates nothing
    records = repo.list_backups()
    rows = [
        {"backup_id": r.backup_id, "kind": r.kind, "status": r.status,
         "finished_at": r.finished_at.isoformat() if r.finished_at else None,
         "bytes_stored": r.bytes_stored, "signature_ok": r.signature_ok, "parent_id": r.parent_id,
         "class": r.klass}
        for r in records
    ]
    if as_json:
        emit_json(rows)
        return
    table = Table(box=None, pad_edge=False)
    for name in ("backup id", "kind", "status", "finished (UTC)", "stored", "signature", "parent"):
        table.add_column(name, no_wrap=True, min_width=32 if name in ("backup id", "parent") else None)
    from bvh_ops.units import human_bytes

    for r in rows:
        finished = r["finished_at"][:19].replace("T", " ") if r["finished_at"] else "-"
        kind = r["kind"] if r["class"] == "regular" else f"{r['kind']} ({r['class']})"
        table.add_row(r["backup_id"], kind, r["status"], finished, human_bytes(r["bytes_stored"]),
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
    source: Annotated[str, typer.Option("--from", help=FROM_HELP)] = "primary",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Verify backups and the WAL archive's continuity; exits 0 only when everything is OK."""
    from bvh_ops.keys import load_identities
    from bvh_ops.repository.open import open_existing_repository
    from bvh_ops.repository.repo import BACKUPS
    from bvh_ops.repository.verify import render, verify_backup

    settings = source_settings(source)
    repo, _ = open_existing_repository(settings)  # a verify creates nothing
    identities = load_identities(settings.require_identity()) if deep else None
    if all_:
        ids = [r.backup_id for r in repo.list_backups() if r.status != "incomplete"]
        if not ids:
            raise BvhOpsError(f"no backups in {repo.store.url} to verify")
    else:
        ids = [repo.resolve(backup_id or "latest")]
        # A mistyped id is not a damaged backup: nothing at all under its name (else the verify
        # reports what is missing, and alerting hears of corruption).
        if next(iter(repo.store.list(f"{BACKUPS}/{ids[0]}/")), None) is None:
            from bvh_ops.errors import NotFound

            raise NotFound(f"no backup {ids[0]} in {repo.store.url}: see `bvh-ops backups list`")
    shut: dict = {}
    if identities is not None:  # the wrong key is not damage: one line, exit 7, nothing told to alerting
        from bvh_ops.errors import CryptoError
        from bvh_ops.repository.verify import unopened

        shut = unopened(repo, ids, identities)  # every one (--all): an older one may be sealed to another key
        if shut and (not all_ or len(shut) == len(ids)):
            raise next(iter(shut.values())) if len(shut) == 1 else CryptoError(
                f"the identity given is not one any of the {len(shut)} backups was sealed to: set BVH_OPS_IDENTITY "
                "to the right key (a file may hold several, one per line)")
    with live_progress(as_json=as_json or not deep):  # --all: those the key does not open, shallow only
        results = [res for bid in ids
                   for res in verify_backup(repo, bid, identities=None if bid in shut else identities)]
    if not no_wal:
        from bvh_ops.wal.archive import verify_wal

        results += verify_wal(repo, identities=identities)
    ok = bool(results) and all(r.ok for r in results)
    if source == "primary":  # the replica's own check is `replica verify` (findings of source "replica")
        # a shallow pass of a backup the key did not open must not clear a deep finding of it
        _report_to_alerting(settings, [r for r in results if r.backup_id not in shut])
    if as_json:
        emit_json({"ok": ok and not shut, "deep": deep, "results": [r.to_json() for r in results],
                   **({"not_decrypted": sorted(shut)} if shut else {})})
    else:
        out.print(render(results))
    if shut:
        err.print(f"not decrypted (the identity given is not one they were sealed to; checked shallow only): "
                  f"{', '.join(sorted(shut)[:5])}{' …' if len(shut) > 5 else ''}: give BVH_OPS_IDENTITY a file "
                  "holding their keys too (one per line) to verify them deep", markup=False)
    raise typer.Exit(8 if not ok else 7 if shut else 0)


def _report_to_alerting(settings, results) -> None:
    """A failed verify is the runbook's critical "data corruption detected" (see
    bvh_ops.alerting.verify.report_verify). Best effort: the verify's own exit code is
    the primary signal."""
    from bvh_ops.alerting.verify import report_verify as report_to_alerting

    problem = report_to_alerting(settings, results)
    if problem:
        err.print(f"warning: could not report the verify to alerting: {problem}", markup=False)
