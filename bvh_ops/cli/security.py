"""``bvh-ops security scan|audit|baseline accept``: the security scan (database and host checks,
README: Security scan and audit), the audit (the scan plus drift against the signed baseline)
and accepting a reviewed state as the new baseline (an audited action). scan and audit exit 1
when a critical or high finding is not waived."""

from __future__ import annotations

from typing import Annotated

import typer

from bvh_ops.cli.core import app, cli_settings, emit_json, out

security_app = typer.Typer(no_args_is_help=True, help="Security scan, audit (drift against the signed baseline), "
                                                      "baseline accept.")
baseline_app = typer.Typer(no_args_is_help=True, help="The signed security baseline.")
app.add_typer(security_app, name="security")
security_app.add_typer(baseline_app, name="baseline")

_MARK = {"critical": "CRIT", "high": "HIGH", "medium": "MED ", "low": "LOW ", "info": "INFO"}


def _print_report(doc: dict) -> None:
    for f in doc["findings"]:
        waived = f"  [waived: {f['waived']}]" if "waived" in f else ""
        cis = f" (CIS {f['cis']})" if f["cis"] else ""
        out.print(f"{_MARK[f['severity']]} {f['id']}{cis} {f['title']}: {f['evidence']}{waived}", markup=False)
        out.print(f"     fix: {f['remediation']}", markup=False)
    for n in doc["not_checked"]:
        out.print(f"NOT CHECKED {n['id']}: {n['reason']}", markup=False)
    c = doc["counts"]
    out.print(f"{doc['status']}: {doc['checked']} checks run, {len(doc['not_checked'])} not checked; "
              + ", ".join(f"{c[s]} {s}" for s in c), markup=False)


def _exit(doc: dict) -> None:
    raise typer.Exit(1 if doc["status"] == "failed" else 0)


@security_app.command("scan")
def scan_cmd(as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON")] = False) -> None:
    """Check the database (database_url) and this host: authentication, roles, privileges,
    TLS, logging, extensions, replication, file permissions, listening ports, certificates.
    Exit 1 when a critical or high finding is not waived."""
    from bvh_ops.security.run import scan

    doc = scan(cli_settings())
    if as_json:
        emit_json(doc)
    else:
        _print_report(doc)
    _exit(doc)


@security_app.command("audit")
def audit_cmd(as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON")] = False) -> None:
    """The scan plus drift: every difference between the live state and the accepted, signed
    baseline (added/removed/changed with before/after). A tampered baseline is refused (exit 8)."""
    from bvh_ops.security.run import audit

    doc = audit(cli_settings())
    if as_json:
        emit_json(doc)
        _exit(doc)
    _print_report(doc)
    if doc["drift"] is None:
        out.print("drift: no accepted baseline (bvh-ops security baseline accept)", markup=False)
    else:
        out.print(f"drift against {doc['baseline']['key']} ({doc['baseline']['taken_at']}): "
                  f"{len(doc['drift'])} change(s)", markup=False)
        for d in doc["drift"]:
            out.print(f"  {d['change']:<8} {d['section']} {d['object']}: {d['before']!r} -> {d['after']!r}",
                      markup=False)
    _exit(doc)


@baseline_app.command("accept")
def accept_cmd(as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON")] = False) -> None:
    """Record the live state (reviewed: run `security audit` first) as the accepted baseline,
    signed with the host key, stored in the repository; recorded in the audit trail."""
    from bvh_ops.security.run import accept_baseline

    doc = accept_baseline(cli_settings())
    if as_json:
        emit_json(doc)
        return
    out.print(f"accepted {doc['key']} (sha256 {doc['sha256'][:16]}…, host key {doc['signed_by']}, "
              f"by {doc['accepted_by']}){'' if doc['audited'] else '; AUDIT TRAIL NOT WRITTEN'}", markup=False)
    for name, why in doc["unreadable"].items():
        out.print(f"  not captured: {name}: {why}", markup=False)
