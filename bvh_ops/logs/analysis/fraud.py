"""Fraud and AML indicators in the platform's log: deposits structured just under the reporting
threshold, many accounts sharing an IP, ticket-purchase velocity outliers."""

from __future__ import annotations

import statistics
from datetime import date, datetime

from bvh_ops.config import LogAnalysisSettings
from bvh_ops.logs.analysis.detection import Detection, Detector, Tally, detection, evidence_of
from bvh_ops.logs.analysis.security import LOGIN, account_of
from bvh_ops.logs.record import Record

DEPOSIT = "wallet.deposit"
PURCHASE = "ticket.purchase"


class Structuring(Detector):
    """At least K deposits per account per UTC day within X % below the reporting threshold."""

    name, category = "structuring", "fraud"

    def __init__(self, cfg: LogAnalysisSettings) -> None:
        self.cfg = cfg
        self.low = cfg.reporting_threshold * (1 - cfg.structuring_margin_percent / 100)
        self.days: dict[tuple[str, date], Tally] = {}

    def feed(self, r: Record) -> None:
        amount = r.fields.get("amount")
        if r.event != DEPOSIT or not isinstance(amount, int | float) or not (account := account_of(r)):
            return
        if self.low <= amount < self.cfg.reporting_threshold:
            self.days.setdefault((account, r.at.date()), Tally(self.cfg.evidence_records)).add(r.at, evidence_of(r))

    def finish(self, now: datetime) -> list[Detection]:
        found: dict[str, Tally] = {}
        for (account, _day), t in sorted(self.days.items(), key=lambda kv: (kv[0][0], kv[0][1])):
            if t.count < self.cfg.structuring_count:
                continue
            if account in found:  # several days: one finding, counts and span merged
                f = found[account]
                f.count += t.count
                f.last = max(f.last, t.last)
                f.evidence = (f.evidence + t.evidence)[:self.cfg.evidence_records]
            else:
                found[account] = t
        return [detection(self.name, self.category, f"account:{a}", t,
                          f"{t.count} deposits in [{self.low:g}, {self.cfg.reporting_threshold:g}) within a day "
                          f"(threshold {self.cfg.structuring_count})") for a, t in sorted(found.items())]


class SharedIp(Detector):
    """At least K distinct accounts logging in from one IP within a UTC day."""

    name, category = "shared_ip", "fraud"

    def __init__(self, cfg: LogAnalysisSettings) -> None:
        self.cfg = cfg
        self.days: dict[tuple[str, date], tuple[set[str], Tally]] = {}

    def feed(self, r: Record) -> None:
        ip, account = r.fields.get("ip"), account_of(r)
        if r.event != LOGIN or not ip or not account:
            return
        accounts, tally = self.days.setdefault((ip, r.at.date()), (set(), Tally(self.cfg.evidence_records)))
        if account not in accounts:  # evidence: one login per account
            accounts.add(account)
            tally.add(r.at, evidence_of(r))
        else:
            tally.add(r.at)

    def finish(self, now: datetime) -> list[Detection]:
        found: dict[str, tuple[Tally, int]] = {}
        for (ip, _day), (accounts, t) in sorted(self.days.items(), key=lambda kv: kv[0]):
            if len(accounts) >= self.cfg.shared_ip_accounts and len(accounts) > found.get(ip, (None, 0))[1]:
                found[ip] = (t, len(accounts))
        return [detection(self.name, self.category, f"ip:{ip}", t,
                          f"{n} accounts logged in from it within a day (threshold {self.cfg.shared_ip_accounts})")
                for ip, (t, n) in sorted(found.items())]


class PurchaseVelocity(Detector):
    """An account's ticket purchases in an hour far above the population's that hour: more than
    max(velocity_min_purchases, median + velocity_mad_factor x MAD)."""

    name, category = "purchase_velocity", "fraud"

    def __init__(self, cfg: LogAnalysisSettings) -> None:
        self.cfg = cfg
        self.hours: dict[datetime, dict[str, Tally]] = {}

    def feed(self, r: Record) -> None:
        if r.event != PURCHASE or not (account := account_of(r)):
            return
        hour = r.at.replace(minute=0, second=0, microsecond=0)
        self.hours.setdefault(hour, {}).setdefault(account, Tally(self.cfg.evidence_records)).add(r.at, evidence_of(r))

    def finish(self, now: datetime) -> list[Detection]:
        found: dict[str, tuple[Tally, float]] = {}
        for _hour, accounts in sorted(self.hours.items()):
            counts = [t.count for t in accounts.values()]
            median = statistics.median(counts)
            mad = statistics.median(abs(c - median) for c in counts)
            limit = max(self.cfg.velocity_min_purchases, median + self.cfg.velocity_mad_factor * max(mad, 1.0))
            for account, t in accounts.items():
                if t.count > limit and (account not in found or t.count > found[account][0].count):
                    found[account] = (t, limit)
        return [detection(self.name, self.category, f"account:{a}", t,
                          f"{t.count} purchases in an hour above {limit:g} (population median and MAD)")
                for a, (t, limit) in sorted(found.items())]
