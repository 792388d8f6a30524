"""The security scan's vocabulary, pure: the catalog of checks (id, CIS item, severity, title,
remediation — the one place README's table is checked against), findings, checks that could
not run, waivers and the report's status. No I/O here.

CIS items refer to the CIS PostgreSQL 16 Benchmark v1.0.0 section numbers (pgdsat uses the
same); other editions number a few items differently.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date

SEVERITIES = ("critical", "high", "medium", "low", "info")
FAILING = ("critical", "high")


@dataclass(frozen=True)
class Check:
    id: str            # stable: PG-AUTH-001, HOST-PERM-002
    cis: str | None    # CIS PostgreSQL Benchmark item, where one maps
    severity: str      # the default; a check may raise or lower it per object (documented there)
    title: str
    remediation: str


CATALOG: dict[str, Check] = {c.id: c for c in (
    # -- authentication ----------------------------------------------------------------------
    Check("PG-AUTH-001", "5.2", "critical", "pg_hba.conf rule with trust authentication",
          "replace trust with scram-sha-256 (or peer for local) on that line and reload"),
    Check("PG-AUTH-002", "5.2", "high", "pg_hba.conf rule with clear-text password authentication",
          "use scram-sha-256 on that line and reload"),
    Check("PG-AUTH-003", "5.2", "medium", "pg_hba.conf rule with md5 authentication",
          "re-set the role passwords under password_encryption = scram-sha-256, then use scram-sha-256 on that line"),
    Check("PG-AUTH-004", "5.2", "high", "pg_hba.conf rule open to every address",
          "narrow the address to the application's networks (or reject) on that line"),
    Check("PG-AUTH-005", "5.2", "high", "pg_hba.conf has a line PostgreSQL cannot load",
          "fix the line (pg_hba_file_rules.error says how) before the next reload drops it"),
    Check("PG-AUTH-006", "5.2", "high", "password_encryption is not scram-sha-256",
          "ALTER SYSTEM SET password_encryption = 'scram-sha-256'; SELECT pg_reload_conf()"),
    Check("PG-AUTH-007", "5.2", "high", "role still holds an md5 password hash",
          "set the role's password again under scram-sha-256 (\\password ROLE in psql)"),
    # -- roles -------------------------------------------------------------------------------
    Check("PG-ROLE-001", "4.2", "critical", "superuser not in the allow-list",
          "ALTER ROLE … NOSUPERUSER, or add the role to [security] superusers after review"),
    Check("PG-ROLE-002", "4.2", "medium", "login role without a password",
          "give the role a password, or NOLOGIN if it only owns objects"),
    Check("PG-ROLE-003", "4.5", "high", "role bypasses row-level security",
          "ALTER ROLE … NOBYPASSRLS"),
    Check("PG-ROLE-004", "4.2", "medium", "role with CREATEROLE not in the allow-list",
          "ALTER ROLE … NOCREATEROLE, or add it to [security] createrole_roles"),
    Check("PG-ROLE-005", None, "low", "login password without an expiry",
          "ALTER ROLE … VALID UNTIL '…' (policy: [security] require_password_expiry)"),
    # -- privileges --------------------------------------------------------------------------
    Check("PG-PRIV-001", "4.4", "high", "PUBLIC may CREATE in a schema",
          "REVOKE CREATE ON SCHEMA … FROM PUBLIC"),
    Check("PG-PRIV-002", "4.4", "medium", "table readable by PUBLIC",
          "REVOKE SELECT ON … FROM PUBLIC; grant to the roles that need it"),
    Check("PG-PRIV-003", "4.3", "high", "SECURITY DEFINER function without a fixed search_path",
          "ALTER FUNCTION … SET search_path = pg_catalog, <schema>"),
    Check("PG-PRIV-004", "4.4", "medium", "default privileges grant to PUBLIC",
          "ALTER DEFAULT PRIVILEGES … REVOKE … FROM PUBLIC"),
    # -- transport ---------------------------------------------------------------------------
    Check("PG-TLS-001", "6.8", "high", "ssl is off",
          "ssl = on with ssl_cert_file/ssl_key_file, and hostssl lines for remote clients "
          "(low when the server listens on and admits loopback only)"),
    Check("PG-TLS-002", "6.9", "medium", "ssl_min_protocol_version below TLSv1.2",
          "ALTER SYSTEM SET ssl_min_protocol_version = 'TLSv1.2'"),
    # -- logging -----------------------------------------------------------------------------
    Check("PG-LOG-001", "3.1.20", "medium", "log_connections is off",
          "ALTER SYSTEM SET log_connections = on"),
    Check("PG-LOG-002", "3.1.21", "medium", "log_disconnections is off",
          "ALTER SYSTEM SET log_disconnections = on"),
    Check("PG-LOG-003", "3.1.23", "low", "log_line_prefix lacks time, user, database or client",
          "ALTER SYSTEM SET log_line_prefix = '%m [%p] %q%u@%d %r '"),
    Check("PG-LOG-004", "3.2", "medium", "pgAudit is not loaded",
          "install pgaudit, add it to shared_preload_libraries, set pgaudit.log for the audit categories"),
    # -- extensions and languages ------------------------------------------------------------
    Check("PG-EXT-001", "8.x", "medium", "extension not in the allow-list",
          "DROP EXTENSION …, or add it to [security] extensions after review"),
    Check("PG-EXT-002", "4.x", "high", "untrusted procedural language installed",
          "DROP LANGUAGE … (or EXTENSION …) unless a reviewed function needs it"),
    # -- data --------------------------------------------------------------------------------
    Check("PG-DATA-001", "4.x", "high", "application role can read a sensitive column it does not need",
          "REVOKE SELECT ON <table> FROM <role> (or from PUBLIC / the group it inherits it through) and GRANT "
          "SELECT (<the columns it needs>) instead; or list the role under [security] sensitive_readers"),
    Check("PG-DATA-002", None, "low", "configured sensitive column or application role not found",
          "fix [security] sensitive_columns / app_roles (a renamed column is no longer checked)"),
    # -- replication -------------------------------------------------------------------------
    Check("PG-REPL-001", "7.1", "medium", "replication role not in the allow-list",
          "ALTER ROLE … NOREPLICATION, or add it to [security] replication_roles"),
    Check("PG-REPL-002", "7.x", "medium", "inactive replication slot (holds WAL, may be forgotten)",
          "SELECT pg_drop_replication_slot('…') if its consumer is gone"),
    # -- host --------------------------------------------------------------------------------
    Check("HOST-PERM-001", None, "high", "bvh-ops configuration readable by group or others",
          "chmod 600 (or 640 with a dedicated group) the config file"),
    Check("HOST-PERM-002", None, "critical", "identity (private decryption) key readable by group or others",
          "chmod 600 the identity key, and consider it exposed: rotate it"),
    Check("HOST-PERM-003", None, "high", "host signing key readable by group or others",
          "chmod 600 state_dir/host_ed25519.key"),
    Check("HOST-PERM-004", None, "medium", "state directory open to group or others",
          "chmod 700 the state directory"),
    Check("HOST-PERM-005", "2.x", "high", "PostgreSQL data directory open beyond its group",
          "chmod 700 (or 750) the data directory"),
    Check("HOST-FS-001", None, "medium", "world-writable file under a configured path",
          "chmod o-w the file (or o+t the directory)"),
    Check("HOST-NET-001", None, "medium", "listening port not in expected_ports",
          "stop the service or firewall it, or add the port to [security] expected_ports"),
    Check("HOST-TLS-001", None, "medium", "TLS certificate expired or expiring soon",
          "renew the certificate (high when expired or within 7 days)"),
    Check("HOST-TLS-002", None, "medium", "TLS certificate key too small",
          "reissue with RSA >= min_rsa_bits or an EC P-256+ key"),
    Check("HOST-TLS-003", None, "high", "TLS certificate does not name the host",
          "reissue the certificate with the host name in subjectAltName"),
)}


@dataclass(frozen=True)
class Finding:
    id: str
    object: str        # what it is about: role name, "pg_hba.conf line 3", schema, function, path
    evidence: str      # what was seen (never a hash, password or key)
    severity: str = ""  # "" = the catalog's
    waived: str | None = None  # the waiver's reason (still shown)

    def __post_init__(self) -> None:
        if self.id not in CATALOG:
            raise ValueError(f"unknown check id {self.id}")
        if not self.severity:
            object.__setattr__(self, "severity", CATALOG[self.id].severity)
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity {self.severity!r}: one of {', '.join(SEVERITIES)}")

    def to_json(self) -> dict:
        c = CATALOG[self.id]
        doc = {"id": self.id, "cis": c.cis, "severity": self.severity, "title": c.title, "object": self.object,
               "evidence": self.evidence, "remediation": c.remediation}
        if self.waived is not None:
            doc["waived"] = self.waived
        return doc


@dataclass(frozen=True)
class NotChecked:
    id: str
    reason: str

    def to_json(self) -> dict:
        return {"id": self.id, "reason": self.reason}


@dataclass
class Outcome:
    """What a group of checks found: findings, how many checks ran, which could not."""

    findings: list[Finding] = field(default_factory=list)
    checked: int = 0
    not_checked: list[NotChecked] = field(default_factory=list)

    def extend(self, other: Outcome) -> None:
        self.findings += other.findings
        self.checked += other.checked
        self.not_checked += other.not_checked


@dataclass(frozen=True)
class Waiver:
    id: str
    object: str
    reason: str
    expires: date


def apply_waivers(findings: Iterable[Finding], waivers: Sequence[Waiver], today: date) -> list[Finding]:
    """Each finding with the reason of the first waiver that covers it (same id; its object or
    "*"; not expired: valid through ``expires``). An expired waiver covers nothing."""
    out = []
    for f in findings:
        reason = next((w.reason for w in waivers if w.id == f.id and w.object in ("*", f.object)
                       and today <= w.expires), None)
        out.append(Finding(f.id, f.object, f.evidence, f.severity, reason) if reason else f)
    return out


def counts(findings: Iterable[Finding]) -> dict[str, int]:
    """Unwaived findings per severity (every severity present, 0 where none)."""
    c = Counter(f.severity for f in findings if f.waived is None)
    return {s: c.get(s, 0) for s in SEVERITIES}


def status(findings: Iterable[Finding]) -> str:
    """failed: an unwaived critical/high finding; warning: an unwaived medium one; else passed."""
    c = counts(findings)
    if c["critical"] or c["high"]:
        return "failed"
    return "warning" if c["medium"] else "passed"


def alert_severity(severity: str, waived: bool) -> str:
    """Alerting's severity: critical/high -> critical, medium -> warning, low/info -> info;
    a waived finding is info (shown in the daily summary, never paged)."""
    if waived:
        return "info"
    return {"critical": "critical", "high": "critical", "medium": "warning"}.get(severity, "info")


def alert_key(check_id: str, obj: str) -> str:
    """A stable key for alerting (letters, digits and _.:@/- only, at most 200 characters)."""
    import hashlib
    import re

    clean = re.sub(r"[^A-Za-z0-9_.:@/-]+", "_", obj).strip("_")
    key = f"{check_id}:{clean}"
    if len(key) > 200:
        key = key[:180] + "." + hashlib.sha256(obj.encode()).hexdigest()[:16]
    return key


def report(outcome: Outcome, waivers: Sequence[Waiver], today: date) -> dict:
    """The scan's document: {status, findings, checked, not_checked, counts}, findings sorted by
    severity then id then object."""
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    found = sorted(apply_waivers(outcome.findings, waivers, today),
                   key=lambda f: (f.waived is not None, rank[f.severity], f.id, f.object))
    return {"status": status(found), "findings": [f.to_json() for f in found], "checked": outcome.checked,
            "not_checked": [n.to_json() for n in outcome.not_checked], "counts": counts(found)}
