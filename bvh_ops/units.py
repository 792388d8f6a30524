"""Sizes for people: the CLI's tables, the demo's lines and the flows' artifacts say them alike.

Here, not in ``flows.artifacts``: importing anything from the ``flows`` package loads Prefect
(its engine is adjusted on import), and `bvh-ops backups list` has no flow to run (0.75 s of its
start went to that import)."""

from __future__ import annotations


def human_bytes(n: float) -> str:
    """Decimal units, as the artifacts and the CLI show them: '512 B', '1.5 MB', '2.3 GB'."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"
