"""Text and markdown of retention plans and monthly archives (no I/O)."""

from __future__ import annotations

from typing import Any


def human(n: int | None) -> str:
    if n is None:
        return "–"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


def explain_line(d: dict[str, Any]) -> str:
    """`bvh-ops retention --explain ID`: every reason, in one line."""
    cls = "" if d.get("class", "regular") == "regular" else f" ({d['class']})"
    if d["action"] == "KEEP":
        return f"{d['backup_id']}{cls} is KEPT: " + "; ".join(d["reasons"])
    if d["action"] == "HELD":
        return f"{d['backup_id']}{cls} is due for deletion but HELD: " + "; ".join(d["reasons"])
    if d["action"] == "UNTRUSTED":
        return f"{d['backup_id']}{cls} is UNTRUSTED: " + "; ".join(d["reasons"])
    return f"{d['backup_id']}{cls} is DELETED by retention: " + "; ".join(d["reasons"])


def retention_lines(doc: dict[str, Any]) -> list[str]:
    """One line per backup (verdict, id, reasons), then the WAL and the totals."""
    dry = doc.get("dry_run", True)
    lines = [f"policy: {doc.get('policy', '')}"]
    for d in doc["decisions"]:
        cls = "" if d.get("class", "regular") == "regular" else f" [{d['class']}]"
        lines.append(f"{d['action']:9} {d['backup_id']}{cls}  {'; '.join(d['reasons'])}")
    if doc.get("wal_kept_from"):
        lines.append(f"WAL kept from {doc['wal_kept_from']} (oldest base of the recent window) and "
                     f"{len(doc.get('wal_ranges', []))} older backups' own ranges; {doc['wal_pruned']} WAL files "
                     f"{'would be ' if dry else ''}pruned")
    if doc.get("wal_held"):
        lines.append(f"{len(doc['wal_held'])} WAL files due for pruning are HELD by an object lock")
    counts = {a: sum(d["action"] == a for d in doc["decisions"]) for a in ("KEEP", "DELETE", "HELD", "UNTRUSTED")}
    lines.append(f"{counts['KEEP']} kept, {counts['DELETE']} {'to delete (dry run: nothing deleted)' if dry else 'deleted'}"
                 f", {counts['HELD']} held, {counts['UNTRUSTED']} untrusted")
    return lines


def retention_markdown(doc: dict[str, Any], title: str = "Retention (GFS)") -> str:
    """The retention artifact: kept / deleted / held with reasons."""
    rows = ["| verdict | backup | class | finished (UTC) | reasons |", "|---|---|---|---|---|"]
    for d in doc["decisions"]:
        rows.append(f"| {d['action']} | `{d['backup_id']}` | {d.get('class', 'regular')} | "
                    f"{(d.get('finished_at') or '')[:19].replace('T', ' ')} | {'; '.join(d['reasons'])} |")
    counts = {a: sum(d["action"] == a for d in doc["decisions"]) for a in ("KEEP", "DELETE", "HELD", "UNTRUSTED")}
    return "\n".join([
        f"# {title}", "",
        f"Policy: {doc.get('policy', '')}.", "",
        f"**{counts['KEEP']} kept, {counts['DELETE']} deleted, {counts['HELD']} held by an object lock, "
        f"{counts['UNTRUSTED']} untrusted.** WAL kept from {doc.get('wal_kept_from') or '–'}; "
        f"{doc.get('wal_pruned', 0)} WAL files pruned, {len(doc.get('wal_held', []))} held.", "",
        *rows])


def archive_lines(report: dict[str, Any]) -> list[str]:
    """`bvh-ops archive monthly`: one line per backup, the lock, the drill, the verdict."""
    lines = [f"{b['kind']:8} {b['backup_id']}  {human(b.get('bytes_stored'))} stored; deep verify "
             f"{b.get('verify', 'not run')}; locked until {b.get('retain_until') or '–'}" for b in report["backups"]]
    lines.append(f"lock: {report.get('lock', {}).get('detail', '–')}")
    if report.get("physical_skipped"):
        lines.append(f"no physical full: {report['physical_skipped']}")
    d = report.get("drill")
    if d:
        lines.append(f"drill {d.get('drill_id')}: {'passed' if d.get('passed') else 'FAILED'}; "
                     f"RTO {d.get('rto_seconds')} s, RPO {d.get('rpo_seconds')} s")
    lines.append(f"replication: {report.get('replication', 'not reached')}")
    verdict = "archived, verified, drilled" if report["passed"] else f"FAILED: {report.get('error', '')}"
    lines.append(f"monthly archive {report['month']}: {verdict}")
    return lines


def archive_markdown(report: dict[str, Any]) -> str:
    """The monthly archive artifact: ids, sizes, locks, verify, drill, RTO/RPO."""
    lines = [f"# Monthly archive {report['month']}", "",
             f"**Result:** {'archived, verified and drilled' if report['passed'] else 'FAILED'}", "",
             "| backup | kind | stored | locked until | lock mode | deep verify |", "|---|---|---|---|---|---|"]
    for b in report["backups"]:
        lines.append(f"| `{b['backup_id']}` | {b['kind']} | {human(b.get('bytes_stored'))} | "
                     f"{b.get('retain_until') or '–'} | {b.get('lock_mode') or '–'} | {b.get('verify', '–')} |")
    lock = report.get("lock", {})
    lines += ["", f"Object lock: {lock.get('detail', '–')}"]
    if report.get("wal"):
        w = report["wal"]
        lines.append(f"WAL for the physical full's consistency: {w['first']} … {w['last']} "
                     f"({w['segments']} segments, {w.get('locked', 0)} locked).")
    if report.get("physical_skipped"):
        lines.append(f"No physical full: {report['physical_skipped']}.")
    drill = report.get("drill")
    lines += ["", "## Drill of the logical archive", ""]
    if drill:
        lines += [f"Drill `{drill.get('drill_id')}`: **{'passed' if drill.get('passed') else 'FAILED'}**; "
                  f"RTO {drill.get('rto_seconds')} s (objective {drill.get('objectives', {}).get('rto_seconds')} s), "
                  f"RPO {drill.get('rpo_seconds')} s (objective {drill.get('objectives', {}).get('rpo_seconds')} s).",
                  "", "| check | status | detail |", "|---|---|---|",
                  *[f"| {c['name']} | {c['status']} | {c['detail']} |" for c in drill.get("checks", [])]]
    else:
        lines.append("not run: " + report.get("drill_skipped", "an earlier step failed"))
    lines += ["", "## Replication", "", report.get("replication", "not configured")]
    return "\n".join(lines)
