"""``bvh-ops files snapshot|list|ls|diff|restore|recover|verify|gc|forget``: file-set snapshots (#18)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from bvh_ops.cli.core import app, cli_settings, emit_json, out

files_app = typer.Typer(no_args_is_help=True, help="File-set snapshots: configuration, secrets, assets, system "
                        "settings.")
app.add_typer(files_app, name="files")

JSON = Annotated[bool, typer.Option("--json", help="Print the result as JSON")]


def _repo(settings, *, identities: bool = False):
    from bvh_ops.keys import load_identities
    from bvh_ops.repository.open import open_existing_repository

    repo, _host_key = open_existing_repository(settings)  # these commands read a repository: none is made
    idents = load_identities(settings.require_identity()) if identities else []
    return repo.store, repo.trusted_keys, idents


@files_app.command("snapshot")
def snapshot_cmd(set_name: Annotated[str | None, typer.Argument(metavar="[SET]", help="A [\\[file_sets]] name "
                                                                 "(default: every set)")] = None,
                 as_json: JSON = False) -> None:
    """Snapshot a file set (or every configured set). Exit 1 when a snapshot is partial."""
    from bvh_ops.errors import ConfigError
    from bvh_ops.files.snapshot import take_snapshot

    settings = cli_settings()
    names = [set_name] if set_name else [fs.name for fs in settings.file_sets]
    if not names:
        raise ConfigError("no [[file_sets]] configured: add one to bvh-ops.toml (see README, File-set backups)")
    results = [take_snapshot(settings, n) for n in names]
    if as_json:
        emit_json(results[0].to_json() if set_name else [r.to_json() for r in results])
    else:
        for r in results:
            out.print(f"{r.snapshot_id}: {r.files} entries ({r.files_unchanged} unchanged, not read), {r.bytes_in} "
                      f"bytes read, {r.bytes_stored} bytes stored ({r.chunks_new} new chunks in {r.packs_new} new "
                      f"packs or of their own, {r.chunks_reused} reused) in {r.seconds:.1f} s"
                      + (" PARTIAL" if r.partial else ""), markup=False)
            for p in r.problems:
                out.print(f"  problem: {p}", markup=False)
            for p in r.skipped:
                out.print(f"  skipped: {p}", markup=False)
    raise typer.Exit(1 if any(r.partial for r in results) else 0)


@files_app.command("list")
def list_cmd(set_name: Annotated[str | None, typer.Argument(metavar="[SET]")] = None, as_json: JSON = False) -> None:
    """The snapshots (of SET), oldest first."""
    from bvh_ops.files.catalog import list_snapshots

    store, trusted, _ = _repo(cli_settings())
    rows = list_snapshots(store, trusted, set_name)
    if as_json:
        emit_json([{"snapshot_id": s.snapshot_id, "status": "complete" if s.index else s.detail,
                    "signature_ok": s.signature_ok, **(s.index.to_dict() if s.index else {})} for s in rows])
        return
    for s in rows:
        if s.index is None:
            out.print(f"{s.snapshot_id}  {s.detail}", markup=False)
        else:
            i = s.index
            out.print(f"{s.snapshot_id}  {i.set} ({i.klass})  {i.finished_at}  {i.files} entries  "
                      f"{i.bytes_in} bytes  +{i.bytes_stored} stored" + ("  PARTIAL" if i.partial else "")
                      + ("" if s.signature_ok else f"  UNTRUSTED: {s.detail}"), markup=False)


@files_app.command("ls")
def ls_cmd(snapshot: Annotated[str, typer.Argument(help="Snapshot id or 'latest'")],
           path: Annotated[str | None, typer.Argument(help="Only this path and below")] = None,
           as_json: JSON = False) -> None:
    """The entries of a snapshot (needs the identity: names are encrypted)."""
    from bvh_ops.files.catalog import iter_entries, trusted_index
    from bvh_ops.files.restore import select

    store, trusted, idents = _repo(cli_settings(), identities=True)
    index = trusted_index(store, trusted, snapshot, purpose="list")
    entries = select(list(iter_entries(store, index.snapshot_id, idents)), [path] if path else [])
    if path and not entries:  # printed nothing, exit 0: as if the path were an empty directory
        from bvh_ops.errors import NotFound

        raise NotFound(f"{path}: not in snapshot {index.snapshot_id} (see `bvh-ops files ls {index.snapshot_id}`)")
    if as_json:
        emit_json([{k: v for k, v in e.to_json().items() if k != "chunks"} for e in entries])
        return
    for e in entries:
        mtime = datetime.fromtimestamp(e.mtime_ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M")
        link = f" -> {e.target!r}" if e.type == "symlink" else ""
        out.print(f"{e.type[0]} {e.mode:04o} {e.uid}:{e.gid} {e.size:>10} {mtime} {e.path!r}{link}", markup=False)


@files_app.command("diff")
def diff_cmd(a: Annotated[str, typer.Argument(metavar="SNAPSHOT_A")],
             b: Annotated[str, typer.Argument(metavar="SNAPSHOT_B")], as_json: JSON = False) -> None:
    """Added, removed and changed paths from A to B; unified diffs of text files (not for secrets)."""
    from bvh_ops.files.diff import diff_snapshots

    store, trusted, idents = _repo(cli_settings(), identities=True)
    d = diff_snapshots(store, trusted, idents, a, b)
    if as_json:
        emit_json(d.to_json())
        return
    for p in d.added:
        out.print(f"+ {p}", markup=False)
    for p in d.removed:
        out.print(f"- {p}", markup=False)
    for c in d.changed:
        out.print(f"M {c.path} ({', '.join(c.what)})", markup=False)
        if c.diff:
            out.print(c.diff.rstrip("\n"), markup=False)


@files_app.command("restore")
def restore_cmd(snapshot: Annotated[str, typer.Argument(help="Snapshot id or 'latest'")],
                paths: Annotated[list[str] | None, typer.Argument(help="Only these paths (default: all)")] = None,
                target_dir: Annotated[Path | None, typer.Option("--target-dir", help="Restore under DIR; a file "
                                                                "there is kept as NAME.bvh-replaced-<time>")] = None,
                in_place: Annotated[bool, typer.Option("--in-place", help="Restore to the original paths; what is "
                                                       "overwritten is kept as NAME.bvh-replaced-<time>")] = False,
                as_json: JSON = False) -> None:
    """Restore a snapshot (or PATHs of it): modes, mtimes, owners when root, symlinks as links."""
    from bvh_ops.errors import ConfigError
    from bvh_ops.files.restore import restore_snapshot

    if (target_dir is None) == (not in_place):
        raise ConfigError("give exactly one of --target-dir DIR or --in-place")
    store, trusted, idents = _repo(cli_settings(), identities=True)
    kept: list[str] = []
    try:
        r = restore_snapshot(store, trusted, idents, snapshot, paths or [], target_dir, in_place=in_place,
                             replaced=kept)
    except BaseException:
        from bvh_ops.cli.core import err

        for p in kept:  # a restore that stopped half-way: where what it replaced so far went
            err.print(f"kept the replaced file as {p}", markup=False)
        raise
    if as_json:
        emit_json(r.to_json())
    else:
        out.print(f"restored {r.snapshot_id} to {r.target}: {r.files} files, {r.dirs} dirs, {r.symlinks} symlinks, "
                  f"{r.bytes} bytes in {r.seconds:.1f} s", markup=False)
        for p in r.replaced:
            out.print(f"  kept the replaced file as {p}", markup=False)


@files_app.command("verify")
def verify_cmd(deep: Annotated[bool, typer.Option("--deep", help="Decrypt every chunk and check its keyed hash "
                                                  "(needs the identity)")] = False,
               set_name: Annotated[str | None, typer.Option("--set")] = None, as_json: JSON = False) -> None:
    """Every snapshot's index, entries and referenced chunks. Exit 1 when anything is not OK."""
    from bvh_ops.files.gc import Status, verify_snapshots

    store, trusted, idents = _repo(cli_settings(), identities=deep)
    results = verify_snapshots(store, trusted, identities=idents or None, set_name=set_name)
    bad = [r for r in results if r.status is not Status.OK]
    if as_json:
        emit_json({"checked": len(results), "bad": [r.to_json() for r in bad]})
    else:
        for r in bad:
            out.print(f"{r.status}  {r.object}  {r.detail}", markup=False)
        out.print(f"{len(results)} checked, {len(bad)} not OK", markup=False)
    raise typer.Exit(1 if bad else 0)


@files_app.command("gc")
def gc_cmd(dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what would be deleted")] = False,
           as_json: JSON = False) -> None:
    """Delete content no snapshot references (never while a snapshot is in progress)."""
    from bvh_ops.files.gc import collect_garbage

    store, trusted, _ = _repo(cli_settings())
    res = collect_garbage(store, trusted, datetime.now(UTC), dry_run=dry_run)
    if as_json:
        emit_json(res)
    else:
        out.print(f"{res['deleted']} unreferenced objects {'would be ' if dry_run else ''}deleted "
                  f"({res['bytes_freed']} bytes); {res['referenced']} referenced by {res['snapshots']} snapshots",
                  markup=False)


@files_app.command("forget")
def forget_cmd(snapshot: Annotated[str | None, typer.Argument(help="A snapshot id (omit with --gfs)")] = None,
               gfs: Annotated[bool, typer.Option("--gfs", help="Forget by the GFS retention policy (keep_daily, "
                                                 "keep_weekly, keep_monthly, keep_yearly, min_redundancy) per set")] = False,
               set_name: Annotated[str | None, typer.Option("--set", help="--gfs: only this set")] = None,
               apply: Annotated[bool, typer.Option("--apply", help="--gfs: forget what the plan marks DELETE "
                                                   "(default: show the plan)")] = False,
               as_json: JSON = False) -> None:
    """Delete a snapshot's index and entries (its content goes at the next `files gc`), or with
    --gfs plan (and with --apply carry out) GFS retention per set."""
    from bvh_ops.errors import BvhOpsError, ConfigError, NotFound
    from bvh_ops.files.catalog import delete_snapshot

    settings = cli_settings()
    store, trusted, _ = _repo(settings)
    if gfs:
        if snapshot:
            raise ConfigError("give a SNAPSHOT or --gfs, not both")
        _forget_gfs(settings, store, trusted, set_name, apply, as_json)
        return
    if not snapshot:
        raise BvhOpsError("name the SNAPSHOT to forget, or use --gfs to forget by the retention policy")
    if not delete_snapshot(store, snapshot):
        raise NotFound(f"file-set snapshot {snapshot} not found: see `bvh-ops files list`")
    out.print(f"forgot {snapshot}; run `bvh-ops files gc` to free its content", markup=False)


def _forget_gfs(settings, store, trusted, set_name, apply: bool, as_json: bool) -> None:
    from bvh_ops.expire import policy_of
    from bvh_ops.files.retention import forget_by_policy

    if set_name is not None:
        settings.file_set(set_name)  # one clear line for an unknown set
    decisions = forget_by_policy(store, trusted, policy_of(settings), now=datetime.now(UTC), set_name=set_name,
                                 dry_run=not apply, settings=settings)
    if as_json:
        emit_json({"dry_run": not apply, "decisions": [d.to_json() for d in decisions]})
        return
    for d in decisions:
        out.print(f"{d.verdict:9} {d.id}  {d.reason}", markup=False)
    gone = sum(d.verdict == "DELETE" for d in decisions)
    out.print(f"{sum(d.verdict == 'KEEP' for d in decisions)} kept, {gone} "
              f"{'forgotten' if apply else 'to forget (dry run: add --apply)'}"
              f"{'; run `bvh-ops files gc` to free their content' if apply and gone else ''}", markup=False)


@files_app.command("recover")
def recover_cmd(set_name: Annotated[str, typer.Argument(metavar="SET", help="A [\\[file_sets]] name")],
                snapshot: Annotated[str, typer.Option("--snapshot", help="A snapshot id, 'latest' or 'previous' "
                                                      "(the one before the newest: roll back)")] = "latest",
                as_json: JSON = False) -> None:
    """Application recovery: restore SET's snapshot in place, run its restart_commands, probe the
    endpoints until healthy; each step and the RTO against the 30-minute objective. Exit 1 on failure."""
    from bvh_ops.files.recover import recover_application

    report = recover_application(cli_settings(), set_name, snapshot).to_json()
    if as_json:
        emit_json(report)
    else:
        for s in report["steps"]:
            out.print(f"{s['status']:6}  {s['seconds']:8.1f} s  {s['name']}: {s['detail']}", markup=False)
        for p in report["replaced"]:
            out.print(f"  kept the replaced file as {p}", markup=False)
        rto = report["rto"]
        out.print(f"{report['status']}: {report['snapshot_id'] or '-'} of {report['set']} in {rto['seconds']:.1f} s; "
                  f"RTO objective {rto['objective_seconds']:.0f} s: {rto['result']}", markup=False)
    raise typer.Exit(0 if report["status"] == "recovered" else 1)
