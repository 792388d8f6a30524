"""Markdown and table artifacts shown in the Prefect UI (pure rendering + one publish call)."""

from __future__ import annotations

from typing import Any

from bvh_ops.units import human_bytes


def _sizes(result: dict[str, Any]) -> list[str]:
    return [f"| Repository | `{result['repository']}` |",
            f"| Bytes in / stored | {human_bytes(result['bytes_in'])} / {human_bytes(result['bytes_stored'])} |",
            f"| Throughput | {result.get('mb_per_s')} MB/s over {result['seconds']} s |"]


def checks_table(checks: list[dict[str, str]], title: str = "## Checks") -> list[str]:
    return ["", title, "", "| check | status | detail |", "|---|---|---|",
            *[f"| {c['name']} | {c['status']} | {c['detail']} |" for c in checks]]


def backup_markdown(result: dict[str, Any], checks: list[dict[str, str]], retention: list[dict[str, str]],
                    removed: list[str], physical: dict[str, Any] | None = None) -> str:
    ok = all(c["status"] == "passed" for c in checks)
    lines = [
        f"# Daily backup {result['backup_id']}",
        "",
        f"**Result:** {'committed and checked' if ok else 'CHECKS FAILED'}",
        "",
        "| | |",
        "|---|---|",
        f"| Database | `{result['database']}` (PostgreSQL {result['server_version']}) |",
        f"| Started / finished | {result['started_at']} / {result['finished_at']} |",
        *_sizes(result),
        f"| Tables | {len(result['tables'])} |",
        *checks_table(checks),
    ]
    if physical:
        lines += ["", f"## Physical full backup {physical['backup_id']} (new chain)", "",
                  f"LSN {physical.get('start_lsn')} → {physical.get('stop_lsn')}; "
                  f"{human_bytes(physical['bytes_in'])} in, {human_bytes(physical['bytes_stored'])} stored.",
                  *checks_table(physical.get("checks", []), "### Checks")]
    obsolete = [d for d in retention if d["action"] == "DELETE"]
    untrusted = [d for d in retention if d["action"] == "UNTRUSTED"]
    held = [d for d in retention if d["action"] == "HELD"]
    lines += ["", "## Retention (GFS)", "",
              f"{len(retention) - len(obsolete) - len(untrusted) - len(held)} backups kept, {len(obsolete)} deleted"
              + (f": {', '.join(d['backup_id'] for d in obsolete)}" if obsolete else "") + ".",
              *_held(held), *_untrusted(untrusted)]
    if removed:
        lines.append(f"Incomplete backups removed: {', '.join(removed)}.")
    return "\n".join(lines)


def file_sets_markdown(file_sets: dict[str, Any]) -> str:
    """The daily backup's file-set section: one line per set, its problems listed."""
    lines = ["", "", "## File sets", "", f"**{file_sets['status']}**", "",
             "| set | status | snapshot | entries (unchanged) | read / stored | detail |", "|---|---|---|---|---|---|"]
    for o in file_sets["sets"]:
        if "snapshot_id" in o:
            bad = [c for c in o.get("checks", []) if c["status"] != "passed"]
            detail = "; ".join(f"{c['name']}: {c['detail']}" for c in bad) or "complete, verified"
            lines.append(f"| {o['set']} | {o['status']} | `{o['snapshot_id']}` | {o['files']} ({o['files_unchanged']}) "
                         f"| {human_bytes(o['bytes_in'])} / {human_bytes(o['bytes_stored'])} "
                         f"| {detail.replace('|', '/')[:300]} |")
        else:
            lines.append(f"| {o['set']} | {o['status']} | — | — | — | {o.get('error', '').replace('|', '/')[:300]} |")
    ret = file_sets.get("retention")
    if ret is not None:
        if "error" in ret:
            lines += ["", f"**Snapshot retention did not run:** {ret['error']}"]
        else:
            done = ", ".join(f"{n} {v.lower()}" for v, n in ret["counts"].items() if n) or "no snapshots"
            gc = f"; gc freed {human_bytes(ret['gc']['bytes_freed'])}" if ret.get("gc") else ""
            lines += ["", f"Snapshot retention (GFS{', dry run' if ret['dry_run'] else ''}): {done}{gc}"]
    return "\n".join(lines)


def table_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    sizes = result.get("table_bytes", {})
    return [
        {"table": name, "rows": t["rows"], "bytes": sizes.get(name, 0), "fingerprint": t["fingerprint"]}
        for name, t in sorted(result["tables"].items())
    ]


def drill_markdown(report: dict[str, Any]) -> str:
    obj = report["objectives"]

    def fmt(v: float | None) -> str:
        return "–" if v is None else f"{v:.1f} s"

    lines = [
        f"# DR drill {report['drill_id']}: {'PASSED' if report['passed'] else 'FAILED'}",
        "",
        f"Backup `{report['backup_id']}` · mode {report['mode']} · target {report['target']} · "
        f"scratch: {report['scratch']}",
        "",
        "| objective | measured | target |",
        "|---|---|---|",
        f"| RTO (start → restored, accepting connections, checks passed) | {fmt(report['rto_seconds'])} | "
        f"{obj['rto_seconds']:.0f} s |",
        f"| RPO (target − newest restored commit) | {fmt(report['rpo_seconds'])} | {obj['rpo_seconds']:.0f} s |",
        "",
        f"Trend of earlier drills: {report.get('trend', 'no earlier drills')}",
        "",
        "## Stages",
        "",
        "| stage | seconds |",
        "|---|---|",
    ]
    lines += [f"| {s['name']} | {s['seconds']:.2f} |" for s in report["stages"]]
    lines += ["", "## Checks", "", "| check | status | detail |", "|---|---|---|"]
    lines += [f"| {c['name']} | **{c['status']}** | {c['detail']} |" for c in report["checks"]]
    return "\n".join(lines)


def physical_markdown(result: dict[str, Any], checks: list[dict[str, str]], retention: dict[str, Any],
                      removed: list[str]) -> str:
    ok = all(c["status"] == "passed" for c in checks)
    mode = result.get("mode")
    lines = [
        f"# {result['kind'].capitalize()} backup {result['backup_id']}",
        "",
        f"**Result:** {'committed and checked' if ok else 'CHECKS FAILED'}",
        "",
        "| | |",
        "|---|---|",
        f"| Cluster | PostgreSQL {result['server_version']} |",
        f"| Mode | {'WAL-only increment (native incrementals need PostgreSQL 17+)' if mode == 'wal-only' else mode} |",
        f"| Parent | {result.get('parent_id') or '– (starts a chain)'} |",
        f"| LSN | {result.get('start_lsn')} → {result.get('stop_lsn')} (timeline {result.get('timeline')}) |",
        *_sizes(result),
        *checks_table(checks),
    ]
    decisions = retention.get("decisions", [])
    obsolete = [d for d in decisions if d["action"] == "DELETE"]
    untrusted = [d for d in decisions if d["action"] == "UNTRUSTED"]
    held = [d for d in decisions if d["action"] == "HELD"]
    lines += ["", "## Retention (GFS)", "", *_untrusted(untrusted), *_held(held),
              f"{len(decisions) - len(obsolete) - len(untrusted) - len(held)} backups kept, {len(obsolete)} deleted"
              + (f": {', '.join(d['backup_id'] for d in obsolete)}" if obsolete else "") + "; "
              f"WAL kept from {retention.get('wal_kept_from') or '–'}, {retention.get('wal_pruned', 0)} WAL files pruned."]
    if removed:
        lines.append(f"Incomplete backups removed: {', '.join(removed)}.")
    return "\n".join(lines)


def _held(decisions: list[dict[str, Any]]) -> list[str]:
    """Backups due for deletion whose objects are still locked: left in place, shown."""
    return ["Held by an object lock (due, not deleted): "
            + ", ".join(f"{d['backup_id']} until {d['held_until']}" for d in decisions) + "."] if decisions else []


def _untrusted(decisions: list[dict[str, Any]]) -> list[str]:
    """Backups whose manifest signature is not trusted: never counted, never deleted, shown."""
    if not decisions:
        return []
    return [f"**{len(decisions)} backups with an untrusted manifest signature** (not counted, not deleted; "
            f"investigate with `bvh-ops verify`): {', '.join(d['backup_id'] for d in decisions)}."]


def maintenance_markdown(report: dict[str, Any]) -> str:
    """One maintenance run: the plan and why, what was done (before -> after), what was skipped
    and why, the findings to review."""
    p = report["plan"]
    lines = [f"# Maintenance {report['scope']}: {report['status']}", "",
             f"Target `{report['target']}`, window {p['window']} ({'inside' if p['in_window'] else 'outside'}), "
             f"run `{report['run_id']}`{' (dry run)' if report['dry_run'] else ''}.", ""]
    lines += [f"> {n}" for n in report["notes"]]

    def figures(d: dict[str, Any] | None) -> str:
        if not d:
            return "-"
        if "index_bytes" in d:
            return f"{human_bytes(d['index_bytes'])}{'' if d.get('valid', True) else ' invalid'}"
        if "dead_tuples" in d:
            return f"{d['dead_tuples']} dead / {d['modified_since_analyze']} modified"
        return ", ".join(f"{k} {v}" for k, v in d.items())

    lines += ["", "## Plan", "", "| action | object | why |", "|---|---|---|",
              *[f"| {a['action']} | `{a['object']}` | {a['reason']} |" for a in p["actions"]]]
    if not p["actions"]:
        lines.append("| - | - | nothing passes its threshold |")
    done = [a for a in report["actions"] if a["status"] != "skipped"]
    skipped = [a for a in report["actions"] if a["status"] == "skipped"]
    lines += ["", "## Done", "", "| status | action | object | seconds | before | after | detail |",
              "|---|---|---|---|---|---|---|",
              *[f"| {a['status']} | {a['action']} | `{a['object']}` | {a['seconds']:.2f} | {figures(a['before'])} | "
                f"{figures(a['after'])} | {a['detail']} |" for a in done]]
    lines += ["", "## Skipped", "", "| action | object | why |", "|---|---|---|",
              *[f"| {a['action']} | `{a['object']}` | {a['detail']} |" for a in skipped]]
    lines += ["", "## Findings (reported, never acted on)", "", "| severity | kind | object | detail |",
              "|---|---|---|---|",
              *[f"| {f['severity']} | {f['kind']} | `{f['object']}` | {f['detail']} |" for f in report["findings"]]]
    if report.get("disk", {}).get("mounts"):
        lines += ["", "## Disk", "", "| mount | used | free |", "|---|---|---|",
                  *[f"| `{m['path']}` | {m['percent']} % | {human_bytes(m['free_bytes'])} |"
                    for m in report["disk"]["mounts"]],
                  "", f"Leftovers freed: {human_bytes(report['disk']['freed_bytes'])}."]
    return "\n".join(lines)
