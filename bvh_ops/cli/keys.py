"""``bvh-ops keys rotate|rotate-host``: re-seal every data key to a new recipient set without
re-encrypting (format 3; format-2 objects are rewritten), and rotate the host signing key."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bvh_ops.cli.core import app, cli_settings, emit_json, out

keys_app = typer.Typer(no_args_is_help=True, help="Key rotation: recipients (data keys) and the host signing key.")
app.add_typer(keys_app, name="keys")

JSON = Annotated[bool, typer.Option("--json", help="Print the result as JSON")]


@keys_app.command("rotate")
def rotate_cmd(
    add: Annotated[list[Path], typer.Option("--add", help="A new recipient.pub to seal every data key to")] = [],  # noqa: B006
    remove: Annotated[list[str], typer.Option("--remove", help="A key id or recipient.pub to drop (remove it from "
                                              "`recipients` first or in the same change)")] = [],  # noqa: B006
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would change; change nothing")] = False,
    replica: Annotated[bool, typer.Option("--replica", help="Rotate the replica repository (replica_repository) "
                                          "instead of the primary")] = False,
    as_json: JSON = False,
) -> None:
    """Re-seal every backup's, WAL file's, log archive's and file set's data key to the configured
    recipients + --add - --remove. Format-3 objects are untouched (new manifest version / index
    entry); format-2 objects are re-encrypted. Needs the identity that opens today's keys. Exit 1
    when anything failed or was left sealed to a removed key; a re-run finishes the job."""
    from bvh_ops.rotation.run import rotate

    settings = cli_settings()
    report = rotate(settings.for_replica() if replica else settings, add=add, remove=remove, dry_run=dry_run)
    if as_json:
        emit_json(report.to_json())
    else:
        out.print(report.render(), markup=False)
    raise typer.Exit(0 if report.ok else 1)


@keys_app.command("rotate-host")
def rotate_host_cmd(as_json: JSON = False) -> None:
    """A new Ed25519 host signing key; the old one signs a transition record to it (stored in the
    repository) so manifests it signed stay verifiable. The old key file is kept, renamed
    host_ed25519.key.retired-<id>: give the new public key to every host that lists the old one
    in `trusted_host_keys`, then destroy the retired file. The record goes to the replica too
    when replica_repository is set (first, before the key changes)."""
    from bvh_ops.audit.record import record
    from bvh_ops.rotation.host import rotate_host_key
    from bvh_ops.storage import open_store

    settings = cli_settings()
    stores = [open_store(settings)]
    if settings.replica_repository:
        stores.append(open_store(settings.for_replica()))  # its restores read its own records
    for store in stores:
        store.check()
    result = rotate_host_key(settings.state_dir, stores)
    record(settings, None, "keys.rotate-host", result["new_key_id"],
           {k: result[k] for k in ("old_key_id", "new_key_id", "record", "at")})
    if as_json:
        emit_json(result)
    else:
        out.print(f"host key {result['old_key_id']} -> {result['new_key_id']}\n"
                  f"  transition record: {result['record']}\n"
                  f"  new public key (for trusted_host_keys elsewhere): {result['new_public_key']}\n"
                  f"  retired key kept at {result['retired_key_file']}: destroy it once every host trusts the new key",
                  markup=False)
