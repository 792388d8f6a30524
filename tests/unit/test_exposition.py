"""Prometheus exposition of a cycle: parses with prometheus_client's own parser, carries every
check, escapes awkward label values, never puts a detail in a label, and keeps no global state."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bvh_ops.monitoring.cycle import CycleResult
from bvh_ops.monitoring.exposition import render
from bvh_ops.monitoring.results import Check, Status, overall

SECRET_DETAIL = "detail text that must never become a label"
CHECKS = [
    Check("api-health", "api", Status.OK, 12.5, "ms", SECRET_DETAIL),
    Check("database.reachable", "database", Status.CRITICAL, None, "ms", SECRET_DETAIL),
    Check("host.load", "host", Status.WARNING, 1.7, "per core", SECRET_DETAIL),
    Check('odd "name"\nwith \\ newline', "custom", Status.UNKNOWN, None, "", SECRET_DETAIL),
]


def cycle(checks=CHECKS) -> CycleResult:
    return CycleResult(overall(checks), datetime(2025, 7, 15, 17, 30, tzinfo=UTC), list(checks), 0.42, 0.03, [])


def samples(text: str) -> dict[str, list]:
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        out.setdefault(family.name, []).extend(family.samples)
    return out


def test_every_check_parses_back_with_its_status_and_value():
    text = render(cycle())
    parsed = samples(text)
    status = {(s.labels["name"], s.labels["service"]): s.value for s in parsed["bvh_ops_check_status"]}
    assert status == {(c.name, c.service): float(c.status.rank) for c in CHECKS}
    value = {s.labels["name"]: (s.labels["unit"], s.value) for s in parsed["bvh_ops_check_value"]}
    assert value == {"api-health": ("ms", 12.5), "host.load": ("per core", 1.7)}  # no value, no sample
    assert parsed["bvh_ops_system_status"][0].value == 3.0
    assert parsed["bvh_ops_cycle_seconds"][0].value == pytest.approx(0.42)
    assert parsed["bvh_ops_cycle_cpu_seconds"][0].value == pytest.approx(0.03)


@pytest.mark.parametrize("status, rank", [(Status.OK, 0), (Status.WARNING, 1), (Status.UNKNOWN, 2),
                                          (Status.CRITICAL, 3)])
def test_status_numbers_are_severity_order(status, rank):
    parsed = samples(render(cycle([Check("c", "api", status)])))
    assert parsed["bvh_ops_check_status"][0].value == rank
    assert parsed["bvh_ops_system_status"][0].value == rank


def test_awkward_label_values_are_escaped_and_details_are_not_labels():
    text = render(cycle())
    assert r'name="odd \"name\"\nwith \\ newline"' in text
    assert all(line.startswith(("#", "bvh_ops_")) for line in text.splitlines())  # no raw newline leaked
    assert SECRET_DETAIL not in text


def test_renders_are_independent():
    first = render(cycle())
    assert render(cycle([Check("only", "api", Status.OK)])).count("bvh_ops_check_status{") == 1
    assert render(cycle()) == first
