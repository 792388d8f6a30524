"""``bvh-ops audit verify|show|checkpoint|export|verify-export``: the tamper-evident audit trail
(README: Audit trail). verify exits 0 when the chain and its digests are intact, 8 when not,
one line per problem, the first bad entry named first."""

from __future__ import annotations

import contextlib
import json
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from bvh_ops.cli.core import app, cli_settings, emit_json, out
from bvh_ops.errors import ConfigError

audit_app = typer.Typer(no_args_is_help=True, help="The tamper-evident audit trail: verify, show, checkpoint, "
                                                   "export.")
app.add_typer(audit_app, name="audit")


@contextlib.contextmanager
def _ops_conn(settings):
    """The ops database (started for the call where it is the embedded one), migrated."""
    from bvh_ops.opsdb.database import ops_database
    from bvh_ops.opsdb.migrations import migrate
    from bvh_ops.pg.conn import connect

    with ops_database(settings) as dsn, connect(dsn, autocommit=True) as conn:
        migrate(conn)
        yield conn


def _when(text: str | None) -> datetime | None:
    if text is None:
        return None
    if re.fullmatch(r"(?:\d+[smhdw])+", text.strip().lower()):
        from bvh_ops.logs.search import parse_time

        return parse_time("--since", text, datetime.now(UTC))  # any length back (alerts' --for stops at 90 days)
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"--since '{text}': use an ISO time (2026-11-01 or 2026-11-01T12:00Z) or a duration "
                          "back such as 7d") from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


@audit_app.command("verify")
def verify_cmd(from_seq: Annotated[int, typer.Option("--from", min=1, help="Start at this seq (its prev_hash "
                                                     "taken as stored)")] = 1,
               as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON")] = False) -> None:
    """Recompute the chain and check every signed digest (ops database and repository copies).
    Exit 0 intact, 8 tampered: each problem on its own line, the first bad entry first."""
    from bvh_ops.audit.digest import verify_trail

    settings = cli_settings()
    with _ops_conn(settings) as conn:
        head = conn.execute("SELECT coalesce(max(seq), 0) FROM ops.audit_chain").fetchone()[0]
        if from_seq > max(head, 1):  # "intact: 0 entries" said nothing was checked as if all was
            raise ConfigError(f"--from {from_seq}: the audit trail ends at seq {head}: nothing to verify from there")
        report = verify_trail(settings, conn, from_seq=from_seq)
    if as_json:
        emit_json(report.to_json())
    elif report.ok:
        unsigned = report.head_seq - (report.newest_digest or 0)
        out.print(f"audit trail intact: {report.entries} entries (seq {report.first_seq or 0}..{report.head_seq}), "
                  f"head {report.head_hash[:16]}, {report.digests} signed digests"
                  + (f"; {unsigned} entries after the newest digest not signed yet" if unsigned > 0 else ""),
                  markup=False)
    else:
        first = report.first_bad
        out.print(f"AUDIT TRAIL TAMPERED: {len(report.findings) + report.more} problem(s)"
                  + (f", first bad entry seq {first}" if first is not None else ""), markup=False)
        ordered = sorted(report.findings, key=lambda f: (f.seq is None, f.seq or 0))
        for f in ordered:
            out.print(f"  {f.line()}", markup=False)
        if report.more:
            out.print(f"  … and {report.more} more", markup=False)
    raise typer.Exit(0 if report.ok else 8)


@audit_app.command("show")
def show_cmd(since: Annotated[str | None, typer.Option("--since", help="ISO time or a duration back (7d)")] = None,
             action: Annotated[str | None, typer.Option("--action", help="Action prefix, e.g. backup. or "
                                                        "gdpr.")] = None,
             limit: Annotated[int, typer.Option("--limit", min=1, max=10**9, help="At most this many (the newest)")] = 50,
             as_json: Annotated[bool, typer.Option("--json", help="Print the entries as JSON")] = False) -> None:
    """List entries (the newest --limit matching), oldest first."""
    from bvh_ops.audit.store import search

    with _ops_conn(cli_settings()) as conn:
        rows = search(conn, since=_when(since), action=action, limit=limit, newest=True)
    if as_json:
        emit_json([e.to_json() for e in rows])
        return
    if not rows:
        out.print("no audit entries match", markup=False)
        return
    for e in rows:
        data = json.dumps(e.data, sort_keys=True, ensure_ascii=False)
        out.print(f"{e.seq:>8}  {e.at.astimezone(UTC):%Y-%m-%d %H:%M:%S}  {e.actor}  {e.action}  {e.subject}  {data}",
                  markup=False)


@audit_app.command("checkpoint")
def checkpoint_cmd(as_json: Annotated[bool, typer.Option("--json", help="Print the digest as JSON")] = False) -> None:
    """Sign the chain's head now (the hourly audit-digest flow does this too) and write the
    digest to the ops database and the repository."""
    from bvh_ops.audit.digest import checkpoint

    settings = cli_settings()
    with _ops_conn(settings) as conn:
        digest, new = checkpoint(settings, conn, datetime.now(UTC))
    if as_json:
        emit_json({**digest.body(), "object_key": digest.object_key, "new": new})
    elif new:
        out.print(f"signed digest at seq {digest.seq} (head {digest.head_hash[:16]}) -> {digest.object_key}",
                  markup=False)
    else:
        out.print(f"nothing appended since the digest at seq {digest.seq}", markup=False)


@audit_app.command("export")
def export_cmd(period: Annotated[str, typer.Option("--period", help="YYYY-MM (UTC)")],
               fmt: Annotated[str, typer.Option("--format", help="jsonl or csv")] = "jsonl",
               action: Annotated[str | None, typer.Option("--action", help="Only actions with this prefix, "
                                                          "e.g. gdpr. or wallet.")] = None,
               out_file: Annotated[Path | None, typer.Option("--out", help="File (default stdout; csv needs "
                                                             "one: the proof goes beside it)")] = None,
               as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON")] = False) -> None:
    """The period's entries with their chain proof (the hash before the first, the head at the
    end, the covering signed digest); check it with `bvh-ops audit verify-export FILE`."""
    from bvh_ops.audit.digest import compare_copies, db_digests, repo_digests
    from bvh_ops.audit.export import export_period
    from bvh_ops.audit.record import record
    from bvh_ops.storage import open_store

    if fmt not in ("jsonl", "csv"):
        raise ConfigError(f"--format '{fmt}': use jsonl or csv")
    if fmt == "csv" and out_file is None:
        raise ConfigError("--format csv needs --out FILE (the chain proof is written to FILE.proof.jsonl)")
    settings = cli_settings()
    with _ops_conn(settings) as conn:
        in_repo, unreadable = repo_digests(open_store(settings))
        digests, _ = compare_copies(db_digests(conn), in_repo, unreadable)
        proof_path = out_file.with_name(out_file.name + ".proof.jsonl") if fmt == "csv" else None
        # Written beside their names and renamed once whole: a failed export (no signed digest
        # covers the period, the database gone) leaves no file that looks like an export.
        parts = [(p, p.with_name(f".{p.name}.partial")) for p in (out_file, proof_path) if p is not None]
        try:
            with contextlib.ExitStack() as stack:
                fh = stack.enter_context(parts[0][1].open("w", newline="")) if out_file else sys.stdout
                proof = stack.enter_context(parts[1][1].open("w")) if proof_path else None
                with conn.transaction():
                    summary = export_period(conn, period, digests, fh, fmt=fmt, action_prefix=action,
                                            proof_out=proof)
            for final, partial in parts:
                partial.replace(final)
        finally:
            for _, partial in parts:
                partial.unlink(missing_ok=True)
        record(settings, None, "audit.export", period, {"format": fmt, "action_prefix": action or "",
                                                        "entries": summary.entries}, conn=conn)
        # Signed at once, as after a backup: the export's own entry is then covered, and the next
        # export of the same period (another format) finds a digest (it failed: "run checkpoint").
        from bvh_ops.audit.digest import checkpoint
        from bvh_ops.errors import BvhOpsError

        try:
            checkpoint(settings, conn, datetime.now(UTC))
        except BvhOpsError as exc:
            from bvh_ops.cli.core import err

            err.print(f"warning: audit digest not signed after the export: {exc}", markup=False)
    summary.paths = [str(p) for p in (out_file, proof_path) if p]
    if as_json:
        emit_json(summary.to_json())
    elif out_file:
        out.print(f"exported {summary.entries} entries of {period} (seq {summary.first_seq}..{summary.last_seq}, "
                  f"{summary.omitted} others as hashes, proof to the digest at seq {summary.digest_seq}) to "
                  f"{', '.join(summary.paths)}", markup=False)


@audit_app.command("verify-export")
def verify_export_cmd(path: Annotated[Path, typer.Argument(help="An export written by `audit export`")],
                      key: Annotated[list[str] | None, typer.Option("--key", help="Trusted host public key "
                                                                    "(base64); repeatable")] = None,
                      as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON")] = False) -> None:
    """Check an export standalone (no ops database): the excerpt recomputes to the signed head.
    Exit 0 when it does, 8 when not."""
    from bvh_ops.audit.export import verify_export
    from bvh_ops.keys import host_key_id

    if not path.is_file():
        raise ConfigError(f"{path}: no such file" if not path.exists() else f"{path}: not a file: give the export")
    import base64
    import binascii

    for k in key or []:
        try:
            if len(base64.b64decode(k, validate=True)) != 32:
                raise ValueError
        except (binascii.Error, ValueError):
            raise ConfigError(f"--key {k[:20]!r}: not a host public key: give the Ed25519 public key, 32 bytes "
                              "in base64 (an entry of trusted_host_keys)") from None
    trusted = {host_key_id(k): k for k in key or []}
    check = verify_export(path, trusted or None)
    if as_json:
        emit_json(check.to_json())
    elif check.ok:
        note = "" if trusted else " — no --key given: compare this key id with the platform's published one"
        out.print(f"export intact: {check.entries} entries of {check.period} (+{check.omitted} as hashes) chain to "
                  f"the digest at seq {check.digest_seq} signed by host key {check.key_id}{note}", markup=False)
    else:
        out.print(f"EXPORT DOES NOT VERIFY: {len(check.problems)} problem(s)", markup=False)
        for p in check.problems:
            out.print(f"  {p}", markup=False)
    raise typer.Exit(0 if check.ok else 8)
