"""Gatus-style endpoint conditions: parsed at load (mistakes named), evaluated against one observation."""

from __future__ import annotations

import json

import pytest

from bvh_ops.conditions import ConditionError, Observation, parse_condition, parse_duration_ms

BODY = json.dumps({
    "status": "healthy", "version": "2.4.1", "uptime": 99.95, "ok": True, "none": None,
    "checks": {"database": {"status": "up", "latency": 12}, "cache": {"status": "down"}},
    "draws": [{"id": 7}, {"id": 8}], "empty": [],
}).encode()
OBS = Observation(connected=True, status=200, response_time_ms=250.0, body=BODY, cert_expiration_ms=30 * 86_400_000)


@pytest.mark.parametrize("text, ok, shown", [
    ("[STATUS] == 200", True, "[STATUS] (200) == 200"),
    ("[STATUS] != 200", False, "[STATUS] (200) != 200"),
    ("[STATUS] < 300", True, None),
    ("[STATUS] >= 500", False, None),
    ("[STATUS] == any(200, 204)", True, "[STATUS] (200) == any(200, 204)"),
    ("[STATUS] != any(500, 503)", True, None),
    ("[RESPONSE_TIME] < 1000", True, "[RESPONSE_TIME] (250) < 1000"),
    ("[RESPONSE_TIME] <= 250", True, None),
    ("[RESPONSE_TIME] > 250", False, None),
    ("[RESPONSE_TIME] < 1s", True, None),
    ("[RESPONSE_TIME] < 200ms", False, None),
    ("[BODY].status == healthy", True, "[BODY].status (healthy) == healthy"),
    ("[BODY].status == unhealthy", False, "[BODY].status (healthy) == unhealthy"),
    ("[BODY].checks.database.status == up", True, "[BODY].checks.database.status (up) == up"),
    ("[BODY].checks.cache.status == up", False, "[BODY].checks.cache.status (down) == up"),
    ("[BODY].checks.database.latency < 50", True, None),
    ("[BODY].checks.queue.status == up", False, "[BODY].checks.queue.status (missing) == up"),
    ("[BODY].draws[1].id == 8", True, None),
    ("[BODY].draws[-1].id == 8", True, None),
    ("[BODY].draws[5].id == 8", False, None),
    ("[BODY].uptime >= 99.9", True, None),
    ("[BODY].uptime == 99.95", True, None),
    ("[BODY].ok == true", True, "[BODY].ok (true) == true"),
    ("[BODY].none == null", True, None),
    ("[BODY].version == pat(2.*)", True, "[BODY].version (2.4.1) == pat(2.*)"),
    ("[BODY].version != pat(3.*)", True, None),
    ("[BODY].status == any(healthy, degraded)", True, None),
    ("len([BODY].draws) == 2", True, "len([BODY].draws) (2) == 2"),
    ("len([BODY].empty) > 0", False, None),
    ("len([BODY].status) == 7", True, None),
    ("has([BODY].checks) == true", True, None),
    ("has([BODY].errors) == false", True, "has([BODY].errors) (false) == false"),
    ("[CERTIFICATE_EXPIRATION] > 48h", True, None),
    ("[CERTIFICATE_EXPIRATION] > 31d", False, None),
    ("[CERTIFICATE_EXPIRATION] > 1h30m", True, None),
    ("[CONNECTED] == true", True, None),
    ("[BODY] == pat(*healthy*)", True, None),
])
def test_evaluate(text, ok, shown):
    outcome = parse_condition(text).evaluate(OBS)
    assert outcome.ok is ok, outcome.text
    if shown:
        assert outcome.text == shown


@pytest.mark.parametrize("body", [b"<html>oops</html>", b"", b'{"status": '])
def test_body_that_is_not_json_fails_body_path_conditions(body):
    obs = Observation(True, 200, 5.0, body)
    outcome = parse_condition("[BODY].status == healthy").evaluate(obs)
    assert not outcome.ok and "(missing)" in outcome.text


def test_no_response_fails_everything_but_connected():
    down = Observation(connected=False)
    assert not parse_condition("[STATUS] == 200").evaluate(down).ok
    assert not parse_condition("[RESPONSE_TIME] < 1000").evaluate(down).ok
    assert not parse_condition("[BODY].status != healthy").evaluate(down).ok  # missing, not "different"
    assert parse_condition("[CONNECTED] == false").evaluate(down).ok


def test_certificate_condition_without_tls_session_fails():
    plain = Observation(True, 200, 5.0, b"")
    assert not parse_condition("[CERTIFICATE_EXPIRATION] > 48h").evaluate(plain).ok


@pytest.mark.parametrize("text, message", [
    ("[STATUS] = 200", "expected '<placeholder> <operator> <value>'"),
    ("[STATUS] 200", "expected"),
    ("", "expected"),
    ("[STATUS] ==", "nothing to compare"),
    ("[STATU] == 200", "not a placeholder"),
    ("status == 200", "not a placeholder"),
    ("[STATUS] == ok", "[STATUS] is a number"),
    ("[RESPONSE_TIME] < fast", "milliseconds"),
    ("[RESPONSE_TIME] < 10x", "milliseconds"),
    ("[CERTIFICATE_EXPIRATION] > soon", "duration"),
    ("[BODY].count > many", "needs a number"),
    ("[STATUS] < any(200, 300)", "== and != only"),
    ("[BODY].v > pat(1*)", "== and != only"),
    ("[BODY].v == regex(a.*)", "unknown function regex()"),
    ("count([BODY].v) == 1", "unknown function count()"),
    ("len([STATUS]) == 1", "applies to [BODY] only"),
    ("has([BODY].x) == yes", "true or false"),
    ("[STATUS].code == 200", "takes no path"),
    ("[BODY]..x == 1", "bad [BODY] path"),
    ("[STATUS] === 200", "not an operator"),
    ("[STATUS] =< 200", "not an operator"),
    ("[STATUS] <> 200", "not an operator"),
    ("[BODY].x[a] == 1", "bad [BODY] path"),
    ("[BODY].status == any(a,,b)", "comma-separated"),
])
def test_malformed_conditions_say_why(text, message):
    with pytest.raises(ConditionError, match=None) as info:
        parse_condition(text)
    assert message in str(info.value)


@pytest.mark.parametrize("text, ms", [
    ("500ms", 500.0), ("30s", 30_000.0), ("5m", 300_000.0), ("48h", 172_800_000.0), ("7d", 604_800_000.0),
    ("1h30m", 5_400_000.0), ("1.5s", 1500.0), ("", None), ("h", None), ("10", None), ("10 s", None), ("5w", None),
])
def test_durations(text, ms):
    assert parse_duration_ms(text) == ms
