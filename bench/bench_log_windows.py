"""Log analysis's sliding windows (bvh_ops/logs/analysis/windows.py): the CPU one subject's long
burst costs the detectors — a brute-force attack (one IP, a failed login every second: "N events
within M minutes") and credential stuffing (the same, counting distinct accounts).

``--against REV`` also loads ``windows.py`` as it was at a git revision and runs the same streams
through it, side by side (e.g. ``--against 4074072^``: the window counted afresh per start).
Not a test: ``python bench/bench_log_windows.py [--events 5000 20000] [--against REV]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.results import save_result  # noqa: E402

T0 = datetime(2026, 11, 28, tzinfo=UTC)


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(f"windows_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Windows


def _run(windows_cls, n: int, distinct: bool) -> float:
    w = windows_cls(timedelta(minutes=10))
    start = time.process_time()
    for i in range(n):
        w.add("ip:203.0.113.9", T0 + timedelta(seconds=i), key=f"user{i % 50}" if distinct else None, item=i)
    return time.process_time() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, nargs="+", default=[5000, 20000])
    ap.add_argument("--against", help="a git revision whose windows.py runs beside today's")
    args = ap.parse_args()
    impls = {"now": ROOT / "bvh_ops/logs/analysis/windows.py"}
    with tempfile.TemporaryDirectory() as tmp:
        if args.against:
            old = Path(tmp) / "windows_then.py"
            old.write_text(subprocess.run(["git", "show", f"{args.against}:bvh_ops/logs/analysis/windows.py"],
                                          cwd=ROOT, check=True, capture_output=True, text=True).stdout)
            impls[args.against] = old
        rows = []
        for n in args.events:
            for distinct in (False, True):
                row = {"events": n, "count": "distinct accounts" if distinct else "events"}
                for name, path in impls.items():
                    row[name] = round(_run(_load(path), n, distinct), 2)
                rows.append(row)
                print("  ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    save_result("log_windows", {"rows": rows})


if __name__ == "__main__":
    main()
