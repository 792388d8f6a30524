"""Hourly audit digest (#13): sign the audit chain's head with the host key and write the digest
to the ops database and the repository, so a later edit, deletion or truncation of the chain is
caught by `bvh-ops audit verify`. A broken chain is never signed: the run fails, naming the
first bad entry."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from bvh_ops.config import load_settings
from tasks.audit_tasks import audit_checkpoint
from tasks.common import retrying


@flow(name="audit-digest", flow_run_name="audit-digest", retries=0, log_prints=False)
def audit_digest() -> dict[str, Any] | None:
    """Sign the chain's head now (nothing new since the last digest: that digest is returned)."""
    settings = load_settings()
    digest = retrying(audit_checkpoint, settings)(settings)
    if digest is None:
        get_run_logger().info("the audit trail is empty: nothing to sign")
    else:
        get_run_logger().info("audit digest at seq %s (%s)", digest["seq"], "new" if digest["new"] else "unchanged")
    return digest


if __name__ == "__main__":
    audit_digest()
