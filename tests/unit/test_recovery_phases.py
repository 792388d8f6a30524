"""A restore's recovery split into phases from the server's own log (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

from bvh_ops.physical.restore import recovery_phases

LOG = """\
2026-11-28 17:30:23.292 UTC [4283] LOG:  starting PostgreSQL 15.20 (Debian 15.20-0+deb12u1) on x86_64-pc-linux-gnu
wal-fetch: WAL file 00000002.history is not in the archive
2026-11-28 17:30:23.538 UTC [4286] LOG:  starting point-in-time recovery to 2026-11-28 17:30:15.347+00
2026-11-28 17:30:23.755 UTC [4286] LOG:  restored log file "00000001000000000000000A" from archive
2026-11-28 17:30:23.790 UTC [4286] LOG:  redo starts at 0/A000028
2026-11-28 17:30:24.070 UTC [4286] LOG:  restored log file "00000001000000000000000B" from archive
wal-fetch: WAL file 00000001000000000000000C is not in the archive
2026-11-28 17:30:24.540 UTC [4286] LOG:  consistent recovery state reached at 0/A000100
2026-11-28 17:30:24.541 UTC [4286] LOG:  redo done at 0/B000108 system usage: CPU: user: 0.10 s, system: 0.02 s, elapsed: 0.75 s
2026-11-28 17:30:24.666 UTC [4286] LOG:  restored log file "00000001000000000000000B" from archive
2026-11-28 17:30:24.758 UTC [4286] LOG:  selected new timeline ID: 2
2026-11-28 17:30:25.383 UTC [4283] LOG:  database system is ready to accept connections
"""


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_phases_add_up_from_our_start_to_when_we_noticed():
    started, noticed = at("2026-11-28 17:30:23.000"), at("2026-11-28 17:30:25.500")
    got = recovery_phases(LOG, started, noticed)
    assert got == {"to_redo": 0.79, "redo": 0.751, "redo_cpu": 0.12, "promote": 0.842, "noticed": 0.117,
                   "segments_restored": 3, "fetch_misses": 2}
    assert abs(sum(got[k] for k in ("to_redo", "redo", "promote", "noticed")) - (noticed - started)) < 0.01


def test_a_log_without_the_phases_gives_none_not_a_guess():
    got = recovery_phases("2026-11-28 17:30:23.292 UTC [1] FATAL:  could not open file\n", 0.0, 1.0)
    assert got["to_redo"] is None and got["redo"] is None and got["promote"] is None and got["segments_restored"] == 0
