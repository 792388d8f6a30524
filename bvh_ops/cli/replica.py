"""``bvh-ops replicate`` and ``bvh-ops replica status|verify``: the second repository kept in step
(README: Two regions). replicate exits 0 when every committed unit is on the replica and
verified, 8 when a unit failed verification; status exits 0 when the replica could be read
(in step or lagging: the figures say which), 3 when it could not (the lag is then an estimate)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from bvh_ops.cli.core import app, cli_settings, emit_json, out
from bvh_ops.errors import StorageError

replica_app = typer.Typer(no_args_is_help=True, help="The replica repository: status (lag), verify.")
app.add_typer(replica_app, name="replica")


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _lag_line(lag: dict) -> str:
    if not lag["objects"]:
        return "in step (lag 0 objects, 0 s)"
    wal = (f"; WAL: {lag['wal_objects']} object(s), oldest {lag['wal_seconds']:.0f} s old"
           if lag["wal_objects"] else "; WAL: in step")
    return (f"lag {lag['objects']} object(s), {_mb(lag['bytes'])}, oldest committed {lag['seconds']:.0f} s ago "
            f"({lag['oldest']}){wal}")


def _print_report(doc: dict) -> None:
    c = doc["copied"]
    how = f", {c['server_side']} server-side" if c["server_side"] else ""
    rate = f" ({doc['mb_per_s']} MB/s)" if doc["mb_per_s"] and c["bytes"] else ""
    out.print(f"replicated {doc['primary']} -> {doc['replica']}: {c['units']} unit(s), {c['objects']} object(s), "
              f"{_mb(c['bytes'])} in {doc['seconds']:.1f} s{rate}{how}"
              + ("; every copy read back and its sha256 checked" if c["objects"] else ""))
    if doc["verified"]:
        found = doc["corrupt_recopied"]
        out.print(f"verify pass: every replica object hashed; {len(found)} corrupt, re-copied"
                  + (": " + ", ".join(found) if found else ""))
    for f in doc["failures"]:
        out.print(f"  FAILED {f['unit']}: {f['error']}")
    for d in doc["deferred"]:
        out.print(f"  deferred {d}: its file-set content did not all copy")
    out.print("now " + _lag_line(doc["lag_after"]))


def _run(verify: bool, as_json: bool) -> None:
    from bvh_ops.replica.run import replicate as run

    settings = cli_settings()
    # An operator's replicate from a file:// primary that is not there: a mistyped path, said —
    # not an empty primary "now in step". (The scheduled flow on a new install, before the first
    # backup, has nothing to copy yet and says nothing.)
    from bvh_ops.repository.open import open_existing_repository

    open_existing_repository(settings)
    report = run(settings, datetime.now(UTC), verify=verify)
    doc = report.to_json()
    if doc["copied"]["objects"] or doc["corrupt_recopied"]:
        from bvh_ops.replica.run import audit_replication

        audit_replication(settings, doc)
    if as_json:
        emit_json(doc)
    else:
        _print_report(doc)
    raise typer.Exit(0 if report.ok else 8)


@app.command()
def replicate(
    verify: Annotated[bool, typer.Option("--verify", help="First hash every replica object; re-copy corrupt ones")]
    = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Copy every committed backup, WAL file, log archive, audit digest and file-set snapshot the
    replica lacks (or holds stale) from the primary, in commit order, verifying each copy there.
    Never deletes on the replica."""
    _run(verify, as_json)


@replica_app.command("verify")
def verify(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Hash every replica object against the primary's record; re-copy the corrupt ones, then
    catch up (same as `replicate --verify`)."""
    _run(True, as_json)


@replica_app.command("status")
def status(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """How far the replica lags: objects, bytes, seconds (the age of the oldest committed change
    not on it), WAL apart."""
    from bvh_ops.replica.run import status as lag_status

    doc = lag_status(cli_settings(), datetime.now(UTC))
    if as_json:
        emit_json(doc)
    elif doc["reachable"]:
        out.print(f"replica {doc['replica']}: {_lag_line(doc['lag'])}")
    else:
        since = f"last in step {doc['caught_up_at']}" if doc["caught_up_at"] else "never known in step"
        out.print(f"replica {doc['replica']} UNREACHABLE ({doc['error']}); {since}; estimated "
                  + _lag_line(doc["lag"]) + "; `bvh-ops replicate` catches up once it answers")
    if not doc["reachable"]:
        raise typer.Exit(StorageError.exit_code)
