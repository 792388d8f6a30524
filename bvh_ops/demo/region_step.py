"""The demo's second-region step (#17): the repository replicated to a second one (a directory
beside it stands in for the other region's bucket; production points ``replica_repository`` at
an S3 bucket in another region), then the failover drill built from that copy alone — a standby
restored from the replica's base backup and WAL, caught up, promoted, checked like any drill —
with its RTO and RPO against the runbook's objectives (15 min / 1 h, 5 min).

Two parts, each reported on its own (``parts.run_part``): a part that fails prints FAILED and
fails the step; the drill is not run on a replica that could not be brought in step."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rich.console import Console

from bvh_ops.config import Settings
from bvh_ops.demo.parts import run_part, say


@dataclass
class RegionDemo:
    """What the step did (returned for the test; the demo prints it)."""

    replication: dict[str, Any] = field(default_factory=dict)
    drill: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


def run_region_step(settings: Settings, console: Console) -> tuple[bool, str, RegionDemo]:
    """(ok, the summary row, what happened). ``settings.replica_repository`` names the replica."""
    from bvh_ops.units import human_bytes

    res = RegionDemo()
    fail = res.failures
    if not settings.replica_repository:
        fail.append("replica_repository is not set")
        return False, "FAILED: replica_repository is not set", res

    def replicate() -> None:
        from flows.replicate import replicate as replicate_flow

        doc = replicate_flow()
        res.replication = doc
        c, lag = doc["copied"], doc["lag_after"]
        say(console, f"{c['units']} unit(s), {c['objects']} object(s), {human_bytes(c['bytes'])} copied to "
                     f"{doc['replica']}, each read back and hashed against the primary's signed record; "
                     f"lag now {lag['objects']} object(s)")

    def drill() -> None:
        from flows.dr_drill import DrillFailed
        from flows.failover_drill import failover_drill

        try:
            report = failover_drill(source="replica")
        except DrillFailed as exc:
            report = exc.report
        res.drill = report
        for s in report["stages"]:
            say(console, f"{s['name']:<10} {s['seconds']:6.1f} s")
        bad = [c for c in report["checks"] if c["status"] != "passed"]
        say(console, f"{len(report['checks']) - len(bad)}/{len(report['checks'])} checks passed")
        for c in bad:
            say(console, f"{c['name']}: {c['status']}: {c['detail']}", indent=6)
        if not report["passed"]:
            raise RuntimeError(f"failover drill {report['drill_id']} failed")

    run_part(console, fail, "replicate", "replicating the repository to the second region (the replicate flow: "
                                         "every committed backup, WAL segment and record, verified on arrival)",
             replicate)
    if not fail:
        run_part(console, fail, "failover", "running the failover-drill flow from the replica alone: standby "
                                            "restored from its base backup + WAL, caught up, promoted, checked; "
                                            "RTO/RPO", drill)
    if fail:
        return False, "FAILED: " + "; ".join(fail), res
    d, obj = res.drill, res.drill["objectives"]
    row = (f"{res.replication['copied']['objects']} object(s) replicated; failover drill PASSED from the replica: "
           f"RTO {d['rto_seconds']:.1f} s (objective {obj['rto_seconds']:.0f} s), "
           f"RPO {d['rpo_seconds']:.1f} s (objective {obj['rpo_seconds']:.0f} s)")
    return True, row, res
