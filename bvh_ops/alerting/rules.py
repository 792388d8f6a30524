"""Alert rules over checks (pure): which checks a rule watches, when a sample is bad, how many
samples fire and resolve it, and the fingerprint that makes one alert per (rule, service, check).

Vocabulary from Prometheus/Alertmanager: severity, labels, fingerprint, inhibition, silences.
Difference: a rule's ``fire_after``/``resolve_after`` count consecutive samples (probe cycles),
not a duration, so no flapping: N bad samples in a row fire, M good ones in a row resolve.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from bvh_ops.monitoring.results import Check, Status


class Severity(enum.StrEnum):
    CRITICAL = "critical"   # delivered at once on every channel
    WARNING = "warning"     # batched: one message per channel per hour
    INFO = "info"           # the daily digest


@dataclass(frozen=True)
class Matcher:
    """Which checks a rule watches (globs over the check's name and service) and which statuses
    count as bad; any other status of a watched check is a good sample."""

    check: str = "*"
    service: str = "*"
    statuses: frozenset[Status] = frozenset({Status.CRITICAL})

    def watches(self, check: Check) -> bool:
        return fnmatchcase(check.name, self.check) and fnmatchcase(check.service, self.service)

    def is_bad(self, check: Check) -> bool:
        return check.status in self.statuses


@dataclass(frozen=True)
class Rule:
    name: str                      # "system down": the alert's title
    severity: Severity
    matcher: Matcher
    fire_after: int = 1            # N consecutive bad samples fire the alert
    resolve_after: int = 1         # M consecutive good samples resolve it
    labels: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    # The alert takes its name from the check's detail (findings: the finding's title), so one
    # rule covers every finding of a severity while notifications still say what was found.
    name_from_detail: bool = False

    def __post_init__(self) -> None:
        if self.fire_after < 1 or self.resolve_after < 1:
            raise ValueError(f"rule '{self.name}': fire_after and resolve_after must be at least 1")


def fingerprint(rule_name: str, service: str, check_name: str) -> str:
    """Stable across runs and hosts (sha256, not ``hash()``): the notification log keys on it."""
    raw = "\x1f".join((rule_name, service, check_name)).encode()
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class Inhibition:
    """While an alert of ``source_severity`` on check ``source_check`` fires, alerts of
    ``target_severity`` whose service is ``target_service`` are muted (Alertmanager's
    inhibit_rules): they still change state, but are not notified."""

    source_check: str
    source_severity: Severity
    target_service: str
    target_severity: Severity


_BAD = frozenset({Status.CRITICAL})
_WARN = frozenset({Status.WARNING})

# The runbook's (section 4) lists, as far as today's probes can see them. Security breaches,
# payment errors and data corruption need sources other issues add (hooks, flow outcomes).
DEFAULT_RULES: tuple[Rule, ...] = (
    Rule("system down", Severity.CRITICAL, Matcher(service="api", statuses=_BAD), fire_after=2, resolve_after=2),
    Rule("database connection failures", Severity.CRITICAL,
         Matcher(check="database.reachable", statuses=_BAD), fire_after=2, resolve_after=2),
    # The platform's payment window (its /api/metrics "payments"), probed as an endpoint of service
    # "payments" with e.g. [BODY].payments.errorRate < 1 (README: Alerting).
    Rule("payment processing errors", Severity.CRITICAL, Matcher(service="payments", statuses=_BAD), fire_after=2,
         resolve_after=2),
    # Findings other procedures report (alerting.findings): named by their own title.
    Rule("critical finding", Severity.CRITICAL, Matcher(check="finding:*", statuses=_BAD), name_from_detail=True),
    Rule("warning finding", Severity.WARNING, Matcher(check="finding:*", statuses=_WARN), name_from_detail=True),
    Rule("info finding", Severity.INFO, Matcher(check="notice:*", statuses=_WARN), name_from_detail=True),
    Rule("backup missing or stale", Severity.CRITICAL, Matcher(check="backups.*", statuses=_BAD)),
    # Delivery's own health (alerting.delivery): sent on the other channels, never the failing one.
    Rule("notification channel failing", Severity.CRITICAL, Matcher(check="alerting.channel:*", statuses=_BAD)),
    Rule("high CPU", Severity.WARNING, Matcher(check="host.cpu", statuses=_WARN), fire_after=3, resolve_after=3),
    Rule("high memory", Severity.WARNING, Matcher(check="host.memory", statuses=_WARN), fire_after=3,
         resolve_after=3),
    Rule("low disk", Severity.WARNING, Matcher(check="host.disk:*", statuses=_WARN), fire_after=2, resolve_after=2),
    # A passing endpoint slower than response_time_warning_ms is a warning check (monitoring.http).
    Rule("slow responses", Severity.WARNING, Matcher(service="api", statuses=_WARN), fire_after=3, resolve_after=3),
    # The platform's login window (its /api/metrics "logins"), probed as service "logins" with e.g.
    # [BODY].logins.failedPerMinute < 30: a condition that fails is a spike.
    Rule("failed-login spike", Severity.WARNING, Matcher(service="logins", statuses=frozenset({Status.WARNING,
                                                                                               Status.CRITICAL})),
         fire_after=2, resolve_after=3),
    Rule("cache degradation", Severity.WARNING, Matcher(check="cache.*", statuses=_WARN), fire_after=3,
         resolve_after=3),
    Rule("WAL archiving failing", Severity.CRITICAL, Matcher(check="database.wal_archiver", statuses=_BAD),
         fire_after=2),
    Rule("database degraded", Severity.WARNING, Matcher(service="database", statuses=_WARN), fire_after=3,
         resolve_after=3),
    # A probe that could not run hides whatever it watches: never silent, never "ok".
    Rule("check could not run", Severity.WARNING, Matcher(statuses=frozenset({Status.UNKNOWN})), fire_after=3,
         resolve_after=2),
    # Scheduled work (monitoring.schedules): a run that did not succeed by its time + grace, a failed run.
    Rule("scheduled run missed", Severity.CRITICAL, Matcher(check="deadman:*", statuses=_BAD)),
    Rule("flow run failed", Severity.CRITICAL, Matcher(check="run:*", statuses=_BAD)),
)

DEFAULT_INHIBITIONS: tuple[Inhibition, ...] = (
    Inhibition("database.reachable", Severity.CRITICAL, "database", Severity.WARNING),
)
