"""A maintenance report as the operator reads it (what `bvh-ops maintain` prints; the demo too)."""

from __future__ import annotations

from typing import Any


def _figures(d: dict[str, Any] | None) -> str:
    if not d:
        return "-"
    if "index_bytes" in d:
        return f"{d['index_bytes'] / 1048576:.1f} MiB{'' if d.get('valid', True) else ' (invalid)'}"
    if "dead_tuples" in d:
        return f"{d['dead_tuples']} dead, {d['modified_since_analyze']} modified"
    return ", ".join(f"{k} {v}" for k, v in d.items())


def render(report: dict[str, Any]) -> str:
    """The report as the operator reads it: what was planned and why, what happened, what to look at."""
    p = report["plan"]
    lines = [f"maintenance {report['scope']} of {report['target']}: {report['status']}"
             f"{' (dry run)' if report['dry_run'] else ''}; window {p['window']}"
             f"{'' if p['in_window'] else ' (outside it now)'}"]
    if not report["actions"]:
        lines.append("nothing to do: no table or index passes its threshold")
    for a in report["actions"]:
        lines.append(f"{a['status']:<9} {a['action']:<13} {a['object']}  {a['seconds']:.2f}s  "
                     f"{_figures(a['before'])} -> {_figures(a['after'])}")
        lines.append(f"          {a['detail']}")
    for f in report["findings"]:
        lines.append(f"finding   {f['severity']:<9} {f['kind']:<20} {f['object']}: {f['detail']}")
    lines += [f"note      {n}" for n in report["notes"]]
    for m in report.get("disk", {}).get("mounts", []):
        lines.append(f"disk      {m['path']}: {m['percent']} % used, {m['free_bytes'] // 2**20} MiB free")
    rec = report.get("recorded")
    if rec and rec.get("error"):
        lines.append(f"warning   the run was not fully recorded in the ops database: {rec['error']}")
    return "\n".join(lines)
