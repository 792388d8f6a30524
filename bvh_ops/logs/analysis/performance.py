"""Performance detectors over the platform's access lines (``request.completed``: method, path,
status, durationMs): per endpoint per UTC hour p50/p95/p99 in bounded memory, slow endpoints
(p95 above ``slow_p95_ms``) and degradation against the same hour of the previous week."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from bvh_ops.config import LogAnalysisSettings
from bvh_ops.logs.analysis.detection import Detection, Detector, Tally, detection
from bvh_ops.logs.analysis.histogram import Histogram
from bvh_ops.logs.record import Record

ACCESS_EVENTS = ("request.completed",)
WEEK = timedelta(days=7)


def _hour(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0)


class EndpointHours(Detector):
    """Request durations per (endpoint, hour); detections: endpoint hours whose p95 is slow."""

    name, category = "slow_endpoint", "performance"

    def __init__(self, cfg: LogAnalysisSettings) -> None:
        self.cfg = cfg
        self.hours: dict[tuple[str, datetime], Histogram] = {}

    def feed(self, r: Record) -> None:
        if r.event not in ACCESS_EVENTS:
            return
        ms, path = r.fields.get("durationMs"), r.fields.get("path")
        if not isinstance(ms, int | float) or isinstance(ms, bool) or not path:
            return
        endpoint = f"{r.fields.get('method') or 'GET'} {path}"
        self.hours.setdefault((endpoint, _hour(r.at)), Histogram()).add(float(ms))

    def table(self) -> list[dict[str, Any]]:
        """One row per endpoint hour, slowest p95 first."""
        rows = [{"endpoint": e, "hour": h.isoformat(), "count": hist.count, "p50": hist.percentile(50),
                 "p95": hist.percentile(95), "p99": hist.percentile(99), "max": round(hist.max, 2)}
                for (e, h), hist in self.hours.items() if hist.count]
        return sorted(rows, key=lambda row: (-(row["p95"] or 0), row["endpoint"], row["hour"]))

    def finish(self, now: datetime) -> list[Detection]:
        found: dict[str, tuple[Tally, float]] = {}
        for (endpoint, hour), hist in sorted(self.hours.items(), key=lambda kv: kv[0][1]):
            p95 = hist.percentile(95)
            if hist.count < self.cfg.min_samples or p95 is None or p95 <= self.cfg.slow_p95_ms:
                continue
            tally, worst = found.get(endpoint, (Tally(self.cfg.evidence_records), 0.0))
            tally.count += hist.count - 1
            tally.add(hour, {"hour": hour.isoformat(), "count": hist.count, "p50": hist.percentile(50),
                             "p95": p95, "p99": hist.percentile(99)})
            tally.last = max(tally.last, hour + timedelta(hours=1))
            found[endpoint] = (tally, max(worst, p95))
        return [detection(self.name, self.category, f"endpoint:{e}", t,
                          f"p95 {worst:g} ms above {self.cfg.slow_p95_ms:g} ms")
                for e, (t, worst) in sorted(found.items())]


def degradation(current: EndpointHours, baseline: EndpointHours, cfg: LogAnalysisSettings) -> list[Detection]:
    """Endpoint hours whose p95 is ``degradation_ratio`` times the same hour a week earlier (both
    hours with at least ``min_samples`` requests)."""
    found: dict[str, tuple[Tally, float]] = {}
    for (endpoint, hour), hist in sorted(current.hours.items(), key=lambda kv: kv[0][1]):
        before = baseline.hours.get((endpoint, hour - WEEK))
        if before is None or hist.count < cfg.min_samples or before.count < cfg.min_samples:
            continue
        now_p95, then_p95 = hist.percentile(95), before.percentile(95)
        if not now_p95 or not then_p95 or now_p95 < cfg.degradation_ratio * then_p95:
            continue
        tally, worst = found.get(endpoint, (Tally(cfg.evidence_records), 0.0))
        tally.count += hist.count - 1
        tally.add(hour, {"hour": hour.isoformat(), "p95": now_p95, "previous_week_p95": then_p95,
                         "count": hist.count, "previous_week_count": before.count})
        tally.last = max(tally.last, hour + timedelta(hours=1))
        found[endpoint] = (tally, max(worst, now_p95 / then_p95))
    return [detection("degradation", "performance", f"endpoint:{e}", t,
                      f"p95 up to {ratio:.1f}x the same hour last week (threshold {cfg.degradation_ratio:g}x)")
            for e, (t, ratio) in sorted(found.items())]
