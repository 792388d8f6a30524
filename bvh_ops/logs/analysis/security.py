"""Security detectors over log records: brute force, credential stuffing, known-bad addresses,
admin actions outside business hours, API access violations (403 spikes), new-country logins."""

from __future__ import annotations

import ipaddress
from datetime import datetime, timedelta
from functools import lru_cache

from bvh_ops.config import LogAnalysisSettings
from bvh_ops.logs.analysis.detection import Detection, Detector, Tally, detection, evidence_of
from bvh_ops.logs.analysis.windows import Windows
from bvh_ops.logs.record import Record

FAILED_LOGIN = "auth.login_failed"
LOGIN = "auth.login"
DENIED = "access.denied"


def account_of(r: Record) -> str | None:
    """The account a record concerns: its userId, else the e-mail address it named."""
    uid = r.fields.get("userId")
    if uid is not None:
        return str(uid)
    email = r.fields.get("email")
    return str(email) if email else None


class _Threshold(Detector):
    """A subject is found once a window holds ``threshold``; from then on each event adds to it."""

    threshold = 0

    def __init__(self, cfg: LogAnalysisSettings, span: timedelta, *, distinct: bool = False) -> None:
        self.cfg = cfg
        self.windows = Windows(span, cap=500 if distinct else 2000)
        self.distinct = distinct
        self.found: dict[str, Tally] = {}
        self.peak: dict[str, int] = {}

    def _event(self, subject: str, r: Record, key: str | None = None) -> None:
        item = (r.at, evidence_of(r))
        n, items = self.windows.add(subject, r.at, key if self.distinct else None, item)
        tally = self.found.get(subject)
        if tally is not None:
            tally.add(r.at, item[1])
        elif n >= self.threshold:
            tally = self.found[subject] = Tally(self.cfg.evidence_records)
            for at, ev in items:
                tally.add(at, ev)
        if tally is not None:
            self.peak[subject] = max(self.peak.get(subject, 0), n)


class BruteForce(_Threshold):
    """At least N failed logins from one IP, or against one account, within M minutes."""

    name, category = "brute_force", "security"

    def __init__(self, cfg: LogAnalysisSettings) -> None:
        super().__init__(cfg, timedelta(minutes=cfg.brute_force_minutes))
        self.threshold = cfg.brute_force_failures

    def feed(self, r: Record) -> None:
        if r.event != FAILED_LOGIN:
            return
        if ip := r.fields.get("ip"):
            self._event(f"ip:{ip}", r)
        if account := account_of(r):
            self._event(f"account:{account}", r)

    def finish(self, now: datetime) -> list[Detection]:
        m = self.cfg.brute_force_minutes
        return [detection(self.name, self.category, s, t, f"{self.peak[s]} failed logins within {m:g} min "
                          f"(threshold {self.threshold})") for s, t in sorted(self.found.items())]


class CredentialStuffing(_Threshold):
    """One IP failing to log in to at least K distinct accounts within M minutes."""

    name, category = "credential_stuffing", "security"

    def __init__(self, cfg: LogAnalysisSettings) -> None:
        super().__init__(cfg, timedelta(minutes=cfg.stuffing_minutes), distinct=True)
        self.threshold = cfg.stuffing_accounts

    def feed(self, r: Record) -> None:
        if r.event == FAILED_LOGIN and (ip := r.fields.get("ip")):
            self._event(f"ip:{ip}", r, str(r.fields.get("email") or account_of(r)))

    def finish(self, now: datetime) -> list[Detection]:
        m = self.cfg.stuffing_minutes
        return [detection(self.name, self.category, s, t, f"failed logins to {self.peak[s]} distinct accounts "
                          f"within {m:g} min (threshold {self.threshold})") for s, t in sorted(self.found.items())]


class AccessViolations(_Threshold):
    """At least N refused (403) requests from one IP within M minutes."""

    name, category = "access_violations", "security"

    def __init__(self, cfg: LogAnalysisSettings) -> None:
        super().__init__(cfg, timedelta(minutes=cfg.forbidden_minutes))
        self.threshold = cfg.forbidden_spike

    def feed(self, r: Record) -> None:
        if (r.event == DENIED or r.fields.get("status") == 403) and r.event != "request.completed" \
                and (ip := r.fields.get("ip")):
            self._event(f"ip:{ip}", r)

    def finish(self, now: datetime) -> list[Detection]:
        m = self.cfg.forbidden_minutes
        return [detection(self.name, self.category, s, t, f"{self.peak[s]} refused (403) requests within {m:g} min "
                          f"(threshold {self.threshold})") for s, t in sorted(self.found.items())]


@lru_cache(maxsize=64)
def _networks(items: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(i, strict=False) for i in items)


class KnownBadIps(Detector):
    """Any record from an address in ``known_bad_ips``."""

    name, category = "known_bad_ip", "security"

    def __init__(self, cfg: LogAnalysisSettings) -> None:
        self.cfg = cfg
        self.networks = _networks(tuple(cfg.known_bad_ips))
        self.found: dict[str, Tally] = {}
        self.verdict: dict[str, bool] = {}  # per address seen: bounded by distinct addresses

    def feed(self, r: Record) -> None:
        ip = r.fields.get("ip")
        if not ip or not self.networks:
            return
        bad = self.verdict.get(ip)
        if bad is None:
            try:
                addr = ipaddress.ip_address(str(ip))
                bad = any(addr in n for n in self.networks)
            except ValueError:
                bad = False
            self.verdict[ip] = bad
        if bad:
            self.found.setdefault(f"ip:{ip}", Tally(self.cfg.evidence_records)).add(r.at, evidence_of(r))

    def finish(self, now: datetime) -> list[Detection]:
        return [detection(self.name, self.category, s, t, f"{t.count} records from a known-bad address")
                for s, t in sorted(self.found.items())]


class AdminOffHours(Detector):
    """Admin actions (events ``admin.*``: the platform's log, or admin_actions rows) outside
    business hours (UTC hours and ISO weekdays from config)."""

    name, category = "admin_off_hours", "security"

    def __init__(self, cfg: LogAnalysisSettings) -> None:
        self.cfg = cfg
        self.found: dict[str, Tally] = {}

    def feed(self, r: Record) -> None:
        if not r.event.startswith("admin."):
            return
        start, end = self.cfg.business_hours
        if r.at.isoweekday() in self.cfg.business_days and start <= r.at.hour < end:
            return
        who = r.fields.get("admin") or r.fields.get("actor") or r.fields.get("ip") or "unknown"
        self.found.setdefault(f"admin:{who}", Tally(self.cfg.evidence_records)).add(r.at, evidence_of(r))

    def finish(self, now: datetime) -> list[Detection]:
        start, end = self.cfg.business_hours
        return [detection(self.name, self.category, s, t, f"{t.count} admin actions outside business hours "
                          f"({start:02d}:00-{end:02d}:00 UTC, days {self.cfg.business_days})")
                for s, t in sorted(self.found.items())]


class NewCountry(Detector):
    """A successful login from a country the account has not logged in from before (in this
    run). Needs a ``country`` field on login records; without one it is skipped, saying so."""

    name, category = "new_country", "security"

    def __init__(self, cfg: LogAnalysisSettings) -> None:
        self.cfg = cfg
        self.countries: dict[str, set[str]] = {}
        self.found: dict[str, Tally] = {}
        self.logins = 0

    def feed(self, r: Record) -> None:
        if r.event != LOGIN:
            return
        self.logins += 1
        country, account = r.fields.get("country"), account_of(r)
        if not country or not account:
            return
        seen = self.countries.setdefault(account, set())
        if seen and country not in seen:
            self.found.setdefault(f"account:{account}", Tally(self.cfg.evidence_records)).add(r.at, evidence_of(r))
        seen.add(country)

    def finish(self, now: datetime) -> list[Detection]:
        if not self.countries:
            self.skipped = (f"none of {self.logins} login records carries a country field" if self.logins
                            else "no login records")
        return [detection(self.name, self.category, s, t, f"{t.count} logins from a new country")
                for s, t in sorted(self.found.items())]
