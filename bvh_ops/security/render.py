"""Markdown for the security artifacts (pure): the findings table, the drift and the trend of
counts over the last runs."""

from __future__ import annotations

from typing import Any


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")[:300]


def findings_markdown(doc: dict[str, Any], title: str) -> str:
    c = doc["counts"]
    lines = [f"# {title}: {doc['status']}", "",
             f"{doc['checked']} checks run, {len(doc['not_checked'])} not checked; "
             + ", ".join(f"{c[s]} {s}" for s in c), "",
             "| severity | id | CIS | title | evidence | remediation | waived |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {f['severity']} | {f['id']} | {_cell(f['cis'])} | {_cell(f['title'])} | {_cell(f['evidence'])} | "
              f"{_cell(f['remediation'])} | {_cell(f.get('waived'))} |" for f in doc["findings"]]
    if doc["not_checked"]:
        lines += ["", "## Not checked", "", "| id | reason |", "|---|---|"]
        lines += [f"| {n['id']} | {_cell(n['reason'])} |" for n in doc["not_checked"]]
    return "\n".join(lines)


def drift_markdown(doc: dict[str, Any]) -> str:
    if doc.get("drift") is None:
        return "# Drift\n\nNo accepted baseline: review the scan, then `bvh-ops security baseline accept`."
    base = doc["baseline"]
    lines = [f"# Drift against {base['key']}", "", f"Baseline taken {base['taken_at']} (sha256 {base['sha256'][:16]}…); "
             f"{len(doc['drift'])} change(s).", ""]
    if doc["drift"]:
        lines += ["| section | object | change | before | after |", "|---|---|---|---|---|"]
        lines += [f"| {d['section']} | {_cell(d['object'])} | {d['change']} | {_cell(d['before'])} | "
                  f"{_cell(d['after'])} |" for d in doc["drift"]]
    return "\n".join(lines)


def trend_markdown(runs: list[dict[str, Any]]) -> str:
    lines = ["# Security findings over the last runs", "",
             "| started | kind | status | critical | high | medium | low | info | not checked | drift |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['started_at'][:16]} | {r['kind']} | {r['status']} | {r.get('critical', 0)} | {r.get('high', 0)} | "
              f"{r.get('medium', 0)} | {r.get('low', 0)} | {r.get('info', 0)} | {r['not_checked']} | "
              f"{'' if r['drift'] is None else r['drift']} |" for r in runs]
    return "\n".join(lines)
