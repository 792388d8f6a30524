"""The host probe (psutil): CPU and memory use, disk use per configured path, load average per
core. CPU is measured over ``CPU_SAMPLE_SECONDS`` (a wait, not CPU: it overlaps the other probes)."""

from __future__ import annotations

import os
from pathlib import Path

import psutil

from bvh_ops.monitoring.results import Check, Status
from bvh_ops.monitoring.thresholds import Limits, above

SERVICE = "host"
CPU_SAMPLE_SECONDS = 0.5


def probe_host(disk_paths: list[Path], limits: Limits) -> list[Check]:
    cpu = psutil.cpu_percent(interval=CPU_SAMPLE_SECONDS)
    mem = psutil.virtual_memory()
    checks = [
        Check("host.cpu", SERVICE, above(cpu, limits.cpu_warning_percent, limits.cpu_critical_percent),
              round(cpu, 1), "%", f"CPU {cpu:.0f} % over {CPU_SAMPLE_SECONDS:g} s ({psutil.cpu_count()} cores)"),
        Check("host.memory", SERVICE, above(mem.percent, limits.memory_warning_percent, limits.memory_critical_percent),
              round(mem.percent, 1), "%", f"{mem.available // 2**20} MiB available of {mem.total // 2**20} MiB"),
    ]
    checks.extend(_disk(path, limits) for path in disk_paths)
    checks.append(_load(limits))
    return checks


def _disk(path: Path, limits: Limits) -> Check:
    name = f"host.disk:{path}"
    try:
        usage = psutil.disk_usage(str(path))
    except OSError as exc:
        return Check(name, SERVICE, Status.UNKNOWN, None, "%", f"cannot read {path}: {exc.strerror or exc}")
    status = above(usage.percent, limits.disk_warning_percent, limits.disk_critical_percent)
    return Check(name, SERVICE, status, round(usage.percent, 1), "%",
                 f"{usage.free // 2**30} GiB free of {usage.total // 2**30} GiB")


def _load(limits: Limits) -> Check:
    try:
        load1, _, _ = os.getloadavg()
    except OSError:
        return Check("host.load", SERVICE, Status.UNKNOWN, None, "per core", "no load average on this system")
    cores = psutil.cpu_count() or 1
    per_core = load1 / cores
    return Check("host.load", SERVICE, above(per_core, limits.load_per_core_warning, limits.load_per_core_critical),
                 round(per_core, 2), "per core", f"load {load1:.2f} (1 min) on {cores} cores")
