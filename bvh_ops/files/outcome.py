"""What a file set's daily snapshot comes to (pure: no I/O): its checks, its status, and what it
tells alerting. The daily backup snapshots each configured set after the database; a set that
fails or is partial never undoes the database backup, it is reported:

- ok: committed, complete, and its objects verified;
- partial: committed but some files or commands could not be read — a WARNING finding
  (the snapshot is usable; what is missing is listed);
- failed: no snapshot committed, or its objects did not verify — a CRITICAL finding (that set
  has no new backup today).

Findings go out as the complete set of this run (source ``file-sets``, key ``snapshot:<set>``):
a set that is fine again clears its finding.
"""

from __future__ import annotations

from typing import Any

from bvh_ops.alerting.findings import Finding
from bvh_ops.alerting.rules import Severity

SOURCE = "file-sets"
DETAIL_MAX = 1000


def set_checks(result: dict[str, Any], verify: list[dict[str, str]]) -> list[dict[str, str]]:
    """The checks of one committed snapshot: complete (not partial) and its objects verified
    (``verify``: the shallow verify of that snapshot's objects). Never 'passed' for a check
    that saw nothing."""
    problems = result.get("problems") or []
    out = [{"name": "complete", "status": "warning" if result.get("partial") else "passed",
            "detail": (f"partial: {len(problems)} problem(s): " + "; ".join(problems))[:DETAIL_MAX]
            if result.get("partial") else f"{result.get('files', 0)} entries"}]
    bad = [c for c in verify if c["status"] != "OK"]
    if not verify:
        out.append({"name": "verify", "status": "failed", "detail": "the snapshot was not found to verify"})
    else:
        out.append({"name": "verify", "status": "failed" if bad else "passed",
                    "detail": ("; ".join(f"{c['object']}: {c['status']} {c['detail']}".strip() for c in bad)[:DETAIL_MAX]
                               if bad else f"{len(verify)} objects OK")})
    return out


def set_status(outcome: dict[str, Any]) -> str:
    """ok | partial | failed, from an outcome {set, error?, checks}."""
    if outcome.get("error") or any(c["status"] == "failed" for c in outcome.get("checks", [])):
        return "failed"
    if any(c["status"] == "warning" for c in outcome.get("checks", [])):
        return "partial"
    return "ok"


def set_findings(outcomes: list[dict[str, Any]]) -> list[Finding]:
    out = []
    for o in outcomes:
        status = set_status(o)
        if status == "ok":
            continue
        bad = [c for c in o.get("checks", []) if c["status"] != "passed"]
        detail = o.get("error") or "; ".join(f"{c['name']}: {c['detail']}" for c in bad)
        if status == "failed":
            out.append(Finding(f"snapshot:{o['set']}", Severity.CRITICAL,
                               f"file set {o['set']}: daily snapshot failed", detail[:DETAIL_MAX]))
        else:
            out.append(Finding(f"snapshot:{o['set']}", Severity.WARNING,
                               f"file set {o['set']}: daily snapshot is partial", detail[:DETAIL_MAX]))
    return out


def summary_line(outcomes: list[dict[str, Any]]) -> str:
    """One line for the flow's result and log: 'file sets: 2 ok, 1 partial (etc), 0 failed'."""
    by: dict[str, list[str]] = {"ok": [], "partial": [], "failed": []}
    for o in outcomes:
        by[set_status(o)].append(o["set"])
    parts = [f"{len(v)} {k}" + (f" ({', '.join(v)})" if v and k != "ok" else "") for k, v in by.items()]
    return "file sets: " + ", ".join(parts)
