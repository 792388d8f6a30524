"""The security scan's pure parts, table-driven: waivers (object match, expiry), status and
alert severities, the drift diff, file-mode verdicts, TLS certificate verdicts, hba helpers,
and the README listing every check id."""

from __future__ import annotations

import stat
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from bvh_ops.config import SecuritySettings
from bvh_ops.security.baseline import canonical, drift
from bvh_ops.security.checks.db import hba_text, open_to_all, remote_allowed
from bvh_ops.security.checks.host import cert_findings, mode_finding
from bvh_ops.security.model import (
    CATALOG,
    Finding,
    NotChecked,
    Outcome,
    Waiver,
    alert_key,
    alert_severity,
    apply_waivers,
    report,
    status,
)

TODAY = date(2026, 3, 1)


def F(check_id: str, obj: str = "x", severity: str = "") -> Finding:  # noqa: N802 - a table helper
    return Finding(check_id, obj, f"evidence {obj}", severity)


@pytest.mark.parametrize("waiver, waived", [
    (Waiver("PG-ROLE-001", "dba", "break-glass account", TODAY), True),           # valid through expires
    (Waiver("PG-ROLE-001", "*", "all of them", TODAY + timedelta(days=9)), True),
    (Waiver("PG-ROLE-001", "dba", "expired yesterday", TODAY - timedelta(days=1)), False),
    (Waiver("PG-ROLE-001", "other", "another role", TODAY), False),
    (Waiver("PG-ROLE-003", "dba", "another check", TODAY), False),
])
def test_waivers(waiver, waived):
    (f,) = apply_waivers([F("PG-ROLE-001", "dba")], [waiver], TODAY)
    assert (f.waived == waiver.reason) if waived else f.waived is None
    assert f.severity == "critical"  # a waiver never changes what was found


@pytest.mark.parametrize("found, expected", [
    ([], "passed"),
    ([F("PG-LOG-003")], "passed"),
    ([F("PG-LOG-001")], "warning"),
    ([F("PG-LOG-001"), F("PG-AUTH-006")], "failed"),
    ([F("PG-TLS-001", severity="low")], "passed"),
])
def test_status(found, expected):
    assert status(found) == expected


def test_waived_high_does_not_fail_but_is_shown():
    doc = report(Outcome([F("PG-ROLE-001", "dba"), F("PG-LOG-001")], 5, [NotChecked("HOST-NET-001", "why")]),
                 [Waiver("PG-ROLE-001", "dba", "reviewed", TODAY)], TODAY)
    assert doc["status"] == "warning"
    assert [f["id"] for f in doc["findings"]] == ["PG-LOG-001", "PG-ROLE-001"]  # waived last, still there
    assert doc["findings"][1]["waived"] == "reviewed" and "waived" not in doc["findings"][0]
    assert doc["counts"] == {"critical": 0, "high": 0, "medium": 1, "low": 0, "info": 0}
    assert doc["not_checked"] == [{"id": "HOST-NET-001", "reason": "why"}] and doc["checked"] == 5


@pytest.mark.parametrize("severity, waived, expected", [
    ("critical", False, "critical"), ("high", False, "critical"), ("medium", False, "warning"),
    ("low", False, "info"), ("info", False, "info"), ("critical", True, "info"),
])
def test_alert_severity(severity, waived, expected):
    assert alert_severity(severity, waived) == expected


def test_alert_key_is_stable_and_safe():
    assert alert_key("PG-PRIV-003", "function pay_out(integer, text)") == "PG-PRIV-003:function_pay_out_integer_text"
    long = alert_key("HOST-FS-001", "/srv/" + "a" * 400)
    assert len(long) <= 200 and long == alert_key("HOST-FS-001", "/srv/" + "a" * 400)


def test_unknown_id_or_severity_is_refused():
    with pytest.raises(ValueError):
        Finding("PG-NOPE-001", "x", "y")
    with pytest.raises(ValueError):
        Finding("PG-LOG-001", "x", "y", "urgent")


def test_drift_added_removed_changed_and_unreadable_sections():
    before = {"roles": {"app": {"login": True}, "old": {"login": True}}, "settings": {"ssl": "off"},
              "hba": {"line 1": "host all all 127.0.0.1/32 scram-sha-256"}, "unreadable": {}}
    after = {"roles": {"app": {"login": True}, "new": {"login": True}}, "settings": {"ssl": "on"},
             "unreadable": {"hba": "no privilege"}}
    assert drift(before, after) == [
        {"section": "hba", "object": "*", "change": "changed", "before": before["hba"], "after": None},
        {"section": "roles", "object": "new", "change": "added", "before": None, "after": {"login": True}},
        {"section": "roles", "object": "old", "change": "removed", "before": {"login": True}, "after": None},
        {"section": "settings", "object": "ssl", "change": "changed", "before": "off", "after": "on"},
    ]
    assert drift(before, before) == []


def test_canonical_json_is_order_independent():
    assert canonical({"b": 1, "a": [1, "é"]}) == canonical({"a": [1, "é"], "b": 1}) == '{"a":[1,"é"],"b":1}'.encode()


@pytest.mark.parametrize("check_id, mode, severity", [
    ("HOST-PERM-002", 0o600, None), ("HOST-PERM-002", 0o640, "critical"), ("HOST-PERM-002", 0o644, "critical"),
    ("HOST-PERM-001", 0o600, None), ("HOST-PERM-001", 0o640, "medium"), ("HOST-PERM-001", 0o644, "high"),
    ("HOST-PERM-003", 0o600, None), ("HOST-PERM-003", 0o604, "high"),
    ("HOST-PERM-004", 0o700, None), ("HOST-PERM-004", 0o750, "medium"), ("HOST-PERM-004", 0o777, "high"),
    ("HOST-PERM-005", 0o700, None), ("HOST-PERM-005", 0o750, None), ("HOST-PERM-005", 0o755, "high"),
])
def test_mode_verdicts(check_id, mode, severity):
    f = mode_finding(check_id, Path("/p"), stat.S_IFREG | mode)
    assert (f.severity if f else None) == severity


def _cert(days: int, host: str = "api.example.test", bits: int = 2048):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime(2026, 3, 1, tzinfo=UTC)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host), x509.DNSName(f"*.{host}")]),
                           critical=False)
            .sign(key, hashes.SHA256())), now


@pytest.mark.parametrize("days, host, bits, expected", [
    (90, "api.example.test", 2048, set()),
    (90, "x.api.example.test", 2048, set()),                      # wildcard, one label
    (90, "a.b.api.example.test", 2048, {("HOST-TLS-003", "high")}),
    (20, "api.example.test", 2048, {("HOST-TLS-001", "medium")}),
    (3, "api.example.test", 2048, {("HOST-TLS-001", "high")}),
    (-1, "api.example.test", 2048, {("HOST-TLS-001", "high")}),
    (90, "api.example.test", 1024, {("HOST-TLS-002", "medium")}),
    (90, "other.test", 2048, {("HOST-TLS-003", "high")}),
])
def test_certificate_verdicts(days, host, bits, expected):
    cert, now = _cert(days, bits=bits)
    found = cert_findings(cert, f"{host}:443", host, now, SecuritySettings())
    assert {(f.id, f.severity) for f in found} == expected


def _rule(**kw):
    rule = {"line": 3, "type": "host", "database": ["all"], "user": ["all"], "address": "0.0.0.0",
            "netmask": "0.0.0.0", "method": "md5", "error": None}
    rule.update(kw)
    return rule


@pytest.mark.parametrize("rule, everyone, remote", [
    (_rule(), True, True),
    (_rule(address="::", netmask="::"), True, True),
    (_rule(address="all", netmask=None), True, True),
    (_rule(address="127.0.0.1", netmask="255.255.255.255"), False, False),
    (_rule(address="::1", netmask="ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), False, False),
    (_rule(address="10.0.0.0", netmask="255.0.0.0"), False, True),
    (_rule(method="reject"), False, False),
    (_rule(type="local", address=None, netmask=None), False, False),
])
def test_hba_exposure(rule, everyone, remote):
    assert open_to_all(rule) is everyone
    assert remote_allowed(rule) is remote


def test_hba_text_reads_like_the_file():
    assert hba_text(_rule()) == "host all all 0.0.0.0/0 md5"


def test_readme_lists_every_check_id():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    missing = [i for i in CATALOG if f"`{i}`" not in readme]
    assert not missing, f"README's security table lacks {missing}"
