"""Incidents and alerts as Markdown (Prefect artifacts) and as lines (the CLI)."""

from __future__ import annotations

from bvh_ops.alerting.engine import Incident


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "ongoing"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


def incident_markdown(incident: Incident) -> str:
    ended = f"{incident.ended_at:%Y-%m-%d %H:%M:%S} UTC" if incident.ended_at else "still open"
    lines = [f"# Incident: {incident.name} on {incident.service}", "",
             "| | |", "|---|---|",
             f"| check | `{incident.check}` |",
             f"| started | {incident.started_at:%Y-%m-%d %H:%M:%S} UTC |",
             f"| ended | {ended} |",
             f"| duration | {duration(incident.duration_seconds)} |",
             f"| what fired | {_cell(incident.fired_detail)} |",
             f"| what resolved it | {_cell(incident.resolved_detail or '')} |"]
    return "\n".join(lines)


def _cell(text: str) -> str:
    return (text or "–").replace("|", "\\|").replace("\n", " ")[:300]
