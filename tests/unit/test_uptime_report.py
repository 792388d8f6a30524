"""The monthly uptime/SLA report (pure): per cycle a service's worst status, critical down,
unknown neither way, maintenance windows excluded, the longest outage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bvh_ops.errors import ConfigError
from bvh_ops.monitoring.report import markdown, oldest_raw_day, parse_month, previous_month, uptime_report

T0 = datetime(2026, 10, 1, tzinfo=UTC)
STEP = timedelta(seconds=30)


def rows(service: str, statuses: str, start: datetime = T0) -> list[tuple[datetime, str, str]]:
    """One row per character: o ok, w warning, u unknown, c critical, 30 s apart."""
    names = {"o": "ok", "w": "warning", "u": "unknown", "c": "critical"}
    return [(start + i * STEP, service, names[ch]) for i, ch in enumerate(statuses)]


WIN = [{"start": T0 + 2 * STEP, "end": T0 + 4 * STEP, "description": "upgrade"}]  # cycles 2 and 3


@pytest.mark.parametrize("statuses, windows, expect", [
    # cycles, up, down, unknown, excluded, uptime, meets, outage (cycles, minutes, start index)
    ("oooo", [], (4, 4, 0, 0, 0, 100.0, True, None)),
    ("owoo", [], (4, 4, 0, 0, 0, 100.0, True, None)),
    ("oucc", [], (4, 1, 2, 1, 0, 33.333, False, (2, 0.5, 2))),   # runs to the end: first to last critical
    ("occo", [], (4, 2, 2, 0, 0, 50.0, False, (2, 1.0, 1))),     # ends at the next cycle
    ("ococco", [], (6, 3, 3, 0, 0, 50.0, False, (2, 1.0, 3))),   # the longer of two runs
    ("ccuccc", [], (6, 0, 5, 1, 0, 0.0, False, (3, 1.0, 3))),    # unknown ends a run
    ("uuuu", [], (4, 0, 0, 4, 0, None, None, None)),             # no up/down: no uptime, no verdict
    ("occcco", WIN, (4, 2, 2, 0, 2, 50.0, False, (1, 0.5, 1))),  # the window cuts the outage
    ("ooccoo", WIN, (4, 4, 0, 0, 2, 100.0, True, None)),         # an outage inside the window is excluded
    ("cccc", [{"start": T0 - STEP, "end": T0 + 10 * STEP}], (0, 0, 0, 0, 4, None, None, None)),
])
def test_counts_uptime_and_longest_outage(statuses, windows, expect):
    doc = uptime_report(rows("api", statuses), "2026-10", windows)
    s = doc["services"]["api"]
    cycles, up, down, unknown, excluded, pct, meets, outage = expect
    assert (s["cycles"], s["up"], s["down"], s["unknown"], s["excluded"]) == (cycles, up, down, unknown, excluded)
    assert (s["uptime_percent"], s["meets_sla"]) == (pct, meets)
    if outage is None:
        assert s["longest_outage"] is None
    else:
        n, minutes, index = outage
        assert s["longest_outage"] == {"cycles": n, "minutes": minutes,
                                       "start": (T0 + index * STEP).isoformat().replace("+00:00", "Z")}
    assert doc["sla_met"] is meets  # nothing measured (every cycle excluded): not judged, not "met"


@pytest.mark.parametrize("ups, downs, sla, meets", [
    (999, 1, 99.9, True), (998, 2, 99.9, False), (99, 1, 99.0, True), (98, 2, 99.0, False)])
def test_sla_boundary(ups, downs, sla, meets):
    doc = uptime_report(rows("db", "o" * ups + "c" * downs), "2026-10", [], sla)
    assert doc["services"]["db"]["meets_sla"] is meets and doc["sla_met"] is meets


def test_only_the_month_counts_and_services_are_separate():
    data = (rows("api", "cc", T0 - 2 * STEP) + rows("api", "oo") + rows("cache", "oc")
            + rows("api", "cc", datetime(2026, 11, 1, tzinfo=UTC)))
    doc = uptime_report(data, "2026-10", [{"start": "2026-09-30T00:00:00Z", "end": "2026-10-01T00:00:00Z",
                                           "description": "before"},
                                          {"start": "2026-10-31T23:00:00", "end": "2026-11-01T01:00:00Z"}])
    assert doc["services"]["api"]["up"] == 2 and doc["services"]["api"]["down"] == 0
    assert doc["services"]["cache"]["uptime_percent"] == 50.0 and doc["sla_met"] is False
    assert [w["start"] for w in doc["maintenance_windows"]] == ["2026-10-31T23:00:00Z"]  # only overlapping ones
    assert (doc["from"], doc["until"]) == ("2026-10-01T00:00:00Z", "2026-11-01T00:00:00Z")


def test_markdown_names_the_missed_sla_and_the_outage():
    late = [{"start": T0 + 10 * STEP, "end": T0 + 12 * STEP, "description": "upgrade"}]
    text = markdown(uptime_report(rows("api", "occo"), "2026-10", late))
    assert "| api | 50.0 % | MISSED |" in text and "1.0 min from 2026-10-01T00:00:30Z" in text
    assert "upgrade" in text


@pytest.mark.parametrize("text, start, end", [
    ("2026-10", datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)),
    ("2026-12", datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)),
])
def test_parse_month(text, start, end):
    assert parse_month(text) == (start, end)


@pytest.mark.parametrize("text", ["2026-13", "2026-1", "10-2026", "", "2026-00"])
def test_parse_month_refuses_bad_months(text):
    with pytest.raises(ConfigError, match="YYYY-MM"):
        parse_month(text)


@pytest.mark.parametrize("now, month", [
    (datetime(2026, 11, 1, 4, tzinfo=UTC), "2026-10"), (datetime(2026, 1, 15, tzinfo=UTC), "2025-12")])
def test_previous_month(now, month):
    assert previous_month(now) == month


def test_oldest_raw_day_follows_retention():
    assert str(oldest_raw_day(datetime(2026, 11, 28, 10, tzinfo=UTC))) == "2026-08-30"
    assert str(oldest_raw_day(datetime(2026, 11, 28, 0, tzinfo=UTC))) == "2026-08-30"


def test_no_samples_judge_nothing():
    """A month without samples was reported "sla_met": true and exit 0 — a check that could not
    run reported as passing."""
    doc = uptime_report([], "2026-10", [])
    assert doc["services"] == {} and doc["sla_met"] is None
    assert "No samples" in markdown(doc) and "not judged" in markdown(doc)
